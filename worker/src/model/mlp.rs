//! The multi-layer perceptron: hidden layers with an activation and dropout, then a
//! linear head with one score per horizon.

use candle_core::{Device, Tensor, Var};
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Activation, Mode, Ranker, glorot, zeros};

#[derive(Debug)]
pub struct Mlp {
    layers: Vec<(Var, Var)>,
    activation: Activation,
    dropout: f32,
}

impl Mlp {
    pub fn new(
        features: usize,
        hidden: &[usize],
        horizons: usize,
        activation: Activation,
        dropout: f32,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let sizes: Vec<usize> =
            std::iter::once(features).chain(hidden.iter().copied()).chain(std::iter::once(horizons)).collect();
        let layers = sizes
            .windows(2)
            .map(|pair| Ok((glorot(pair[1], pair[0], rng, device)?, zeros((pair[1], 1), device)?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, activation, dropout })
    }
}

impl Ranker for Mlp {
    fn forward(&self, features: &Tensor, mut mode: Mode<'_>) -> candle_core::Result<Tensor> {
        let mut x = features.clone();
        let last = self.layers.len() - 1;
        for (index, (weight, bias)) in self.layers.iter().enumerate() {
            x = weight.as_tensor().matmul(&x)?.broadcast_add(bias.as_tensor())?;
            if index == last {
                break;
            }
            x = match self.activation {
                Activation::Relu => super::fused::relu(&x)?,
                Activation::Gelu => x.gelu()?,
                Activation::Silu => x.silu()?,
            };
            if let Mode::Train(rng) = &mut mode
                && self.dropout > 0.0
            {
                // Inverted dropout with a mask keyed by the job's generator: reproducible.
                let mask = super::fused::dropout_mask(x.elem_count(), 1.0 - self.dropout, rng.next_u64());
                x = x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)?;
            }
        }
        Ok(x)
    }

    fn variables(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, (w, b))| [(format!("mlp.{i}.weight"), w.clone()), (format!("mlp.{i}.bias"), b.clone())])
            .collect()
    }
}
