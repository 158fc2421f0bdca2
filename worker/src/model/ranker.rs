//! The interface every model implements ([`Ranker`]), how a forward pass runs
//! ([`Mode`], [`Tape`]), and the seeded initialisers the Candle models share.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

/// Whether a forward pass trains (dropout on, with its random masks) or evaluates.
#[derive(Debug)]
pub enum Mode<'a> {
    Train(&'a mut ChaCha8Rng),
    Eval,
}

/// A training step's forward pass whose backward the model computes itself: the scores,
/// a leaf the loss is differentiated to, and the way from their gradient to every
/// variable's. Through Candle's autograd, every activation's gradient is first a fresh
/// zeroed tensor and then a sum into it (two passes over memory per activation, each
/// larger than the cache at 4,000 stocks: a quarter of a 4,000-stock MLP job's time,
/// `perf`); a model that knows its graph skips both. The arithmetic is the same ops in
/// the same order, so the gradients are bit for bit autograd's.
pub struct Tape<'a> {
    scores: Var,
    backward: Backward<'a>,
}

/// From the scores' gradient to every variable's.
type Backward<'a> = Box<dyn FnOnce(&Tensor) -> candle_core::Result<GradStore> + 'a>;

impl std::fmt::Debug for Tape<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape").field("scores", &self.scores.shape()).finish_non_exhaustive()
    }
}

impl<'a> Tape<'a> {
    pub fn new(
        scores: Tensor,
        backward: impl FnOnce(&Tensor) -> candle_core::Result<GradStore> + 'a,
    ) -> candle_core::Result<Self> {
        Ok(Self { scores: Var::from_tensor(&scores)?, backward: Box::new(backward) })
    }

    /// The scores `[horizons, stocks]`, as a variable of their own.
    pub fn scores(&self) -> &Tensor {
        self.scores.as_tensor()
    }

    /// Every variable's gradient, from `grads` of a loss of [`Tape::scores`].
    pub fn backward(self, grads: &GradStore) -> candle_core::Result<GradStore> {
        let d_scores = grads
            .get(self.scores.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("the loss does not depend on the scores".into()))?;
        (self.backward)(d_scores)
    }
}

/// A cross-sectional ranking model: a day's features `[features, stocks]` in, one score
/// per horizon and stock `[horizons, stocks]` out.
///
/// Stocks are the last (contiguous) dimension on purpose: the reductions of a day (bias
/// gradients, softmax over stocks, the loss) then run along the last dimension, which
/// Candle's CPU kernels do about 100x faster than along the first (0.004 ms against
/// 0.38 ms for a 1000 x 128 sum, `examples/step_profile.rs`).
pub trait Ranker: Send + Sync {
    /// `features` is `[lookback · F, stocks]`: the last `lookback()` days, oldest first.
    fn forward(&self, features: &Tensor, mode: Mode<'_>) -> candle_core::Result<Tensor>;
    /// [`Ranker::forward`] of the columns `columns` (u32 stock ids) of `window
    /// [lookback · F, all stocks]`, or of every column with `None`. A model whose first
    /// layer shrinks the input gathers the day's stocks after it (PatchTST: ten times
    /// fewer values to copy than the raw window).
    fn forward_columns(
        &self,
        window: &Tensor,
        columns: Option<&Tensor>,
        mode: Mode<'_>,
    ) -> candle_core::Result<Tensor> {
        match columns {
            Some(columns) => self.forward(&window.index_select(columns, 1)?, mode),
            None => self.forward(window, mode),
        }
    }
    /// [`Ranker::forward`] in training with the model's own backward ([`Tape`]), or
    /// `None` where autograd does it (the default; off the CPU).
    fn forward_taped(&self, _features: &Tensor, _mode: Mode<'_>) -> candle_core::Result<Option<Tape<'_>>> {
        Ok(None)
    }
    /// Trading days of history each prediction reads (1: the day itself).
    fn lookback(&self) -> usize {
        1
    }
    /// The matrix `W` of a model whose first step is the product `W · features` (a bias
    /// and the rest follow), `[rows, lookback · F]`; `None` for the others. A change to a
    /// few input rows then reaches that product as a low-rank update, which
    /// [`Ranker::forward_from_product`] carries on (permutation importance).
    fn input_weight(&self) -> Option<Tensor> {
        None
    }
    /// [`Ranker::forward`] in evaluation mode, continued from `input_weight() · features`.
    fn forward_from_product(&self, _product: &Tensor) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg("this model does not start with a product of its input".into()))
    }
    /// Every trainable variable, with a stable name (the safetensors key).
    fn variables(&self) -> Vec<(String, Var)>;
    /// What a model fitted without Candle variables keeps besides them (a `gbdt`'s
    /// ensemble as JSON), saved with its artifact; `None` for the others.
    fn state(&self) -> Option<String> {
        None
    }
    /// Restores [`Ranker::state`] on a model just built.
    fn set_state(&self, _state: &str) -> candle_core::Result<()> {
        Err(candle_core::Error::Msg("this model keeps no state besides its variables".into()))
    }
}

/// A `[rows, columns]` weight with Glorot-uniform values from `rng`.
pub(crate) fn glorot(rows: usize, columns: usize, rng: &mut ChaCha8Rng, device: &Device) -> candle_core::Result<Var> {
    let limit = (6.0 / (rows + columns) as f32).sqrt();
    let uniform = Uniform::new_inclusive(-limit, limit).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let values: Vec<f32> = (0..rows * columns).map(|_| uniform.sample(rng)).collect();
    Var::from_tensor(&Tensor::from_vec(values, (rows, columns), device)?)
}

pub(crate) fn zeros(shape: impl Into<candle_core::Shape>, device: &Device) -> candle_core::Result<Var> {
    Var::zeros(shape, candle_core::DType::F32, device)
}
