//! The multi-layer perceptron: hidden layers with an activation and dropout, then a
//! linear head with one score per horizon.

use candle_core::{Device, Tensor, Var};
use rand::RngExt;
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
                // Inverted dropout with a mask from the job's generator: reproducible.
                // Random words in bulk are several times faster than one float each.
                let keep = 1.0 - self.dropout;
                let threshold = (f64::from(keep) * f64::from(u32::MAX)) as u32;
                let mut words = vec![0u32; x.elem_count()];
                rng.fill(&mut words[..]);
                let mask: Vec<f32> = words.iter().map(|w| if *w < threshold { 1.0 / keep } else { 0.0 }).collect();
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
