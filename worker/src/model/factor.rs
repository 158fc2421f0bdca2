//! The factor baseline: every stock scored by one feature times a sign, the same score
//! for every horizon; nothing to train. A missing value was imputed as 0 (the day's median,
//! features being robust z-scores) when the day's inputs were gathered.

use candle_core::{Tensor, Var};

use super::ranker::{Mode, Ranker};

#[derive(Debug)]
pub struct Factor {
    /// The feature's row in a day's `[features, stocks]` input.
    column: usize,
    sign: f64,
    horizons: usize,
}

impl Factor {
    pub fn new(column: usize, sign: i32, horizons: usize) -> Self {
        Self { column, sign: f64::from(sign.signum()), horizons }
    }
}

impl Ranker for Factor {
    fn forward(&self, features: &Tensor, _mode: Mode<'_>) -> candle_core::Result<Tensor> {
        let stocks = features.dim(1)?;
        let scores = features.narrow(0, self.column, 1)?.affine(self.sign, 0.0)?;
        scores.broadcast_as((self.horizons, stocks))?.contiguous()
    }

    fn variables(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
}
