//! The linear baseline: `scores = W · features + b` (`W` is `[horizons, features]`).

use candle_core::{Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::ranker::{Mode, Ranker, glorot, zeros};

#[derive(Debug)]
pub struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    pub fn new(features: usize, horizons: usize, rng: &mut ChaCha8Rng, device: &Device) -> candle_core::Result<Self> {
        Ok(Self { weight: glorot(horizons, features, rng, device)?, bias: zeros((horizons, 1), device)? })
    }
}

impl Ranker for Linear {
    fn forward(&self, features: &Tensor, _mode: Mode<'_>) -> candle_core::Result<Tensor> {
        super::fused::matmul(self.weight.as_tensor(), features)?.broadcast_add(self.bias.as_tensor())
    }

    fn input_weight(&self) -> Option<Tensor> {
        Some(self.weight.as_tensor().clone())
    }

    fn forward_from_product(&self, product: &Tensor) -> candle_core::Result<Tensor> {
        product.broadcast_add(self.bias.as_tensor())
    }

    fn variables(&self) -> Vec<(String, Var)> {
        vec![("linear.weight".into(), self.weight.clone()), ("linear.bias".into(), self.bias.clone())]
    }
}
