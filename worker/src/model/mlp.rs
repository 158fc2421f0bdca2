//! The multi-layer perceptron: hidden layers with an activation and dropout, then a
//! linear head with one score per horizon.

use candle_core::{Device, Tensor, Var};
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::fused::{Dropout, hidden_layer, matmul};
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

impl Mlp {
    /// The layers from the first one's product `W₀ · features` on: its bias and
    /// activation, then each next layer.
    fn layers_after_product(&self, product: Tensor, mut mode: Mode<'_>) -> candle_core::Result<Tensor> {
        let Some(((_, head_bias), hidden)) = self.layers.split_last() else {
            return Ok(product);
        };
        let mut z = product;
        for (index, (_, bias)) in hidden.iter().enumerate() {
            // Inverted dropout with a mask keyed by the job's generator: reproducible.
            let dropout = match &mut mode {
                Mode::Train(rng) if self.dropout > 0.0 => Some(Dropout::new(1.0 - self.dropout, rng.next_u64())),
                _ => None,
            };
            let x = hidden_layer(&z, bias.as_tensor(), self.activation, dropout)?;
            z = matmul(self.layers[index + 1].0.as_tensor(), &x)?;
        }
        z.broadcast_add(head_bias.as_tensor())
    }
}

impl Ranker for Mlp {
    fn forward(&self, features: &Tensor, mode: Mode<'_>) -> candle_core::Result<Tensor> {
        self.layers_after_product(matmul(self.layers[0].0.as_tensor(), features)?, mode)
    }

    fn input_weight(&self) -> Option<Tensor> {
        Some(self.layers[0].0.as_tensor().clone())
    }

    fn forward_from_product(&self, product: &Tensor) -> candle_core::Result<Tensor> {
        self.layers_after_product(product.clone(), Mode::Eval)
    }

    fn variables(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, (w, b))| [(format!("mlp.{i}.weight"), w.clone()), (format!("mlp.{i}.bias"), b.clone())])
            .collect()
    }
}
