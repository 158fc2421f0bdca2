//! The multi-layer perceptron: hidden layers with an activation and dropout, then a
//! linear head with one score per horizon.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::fused::{Dropout, hidden_layer, hidden_layer_backward, matmul};
use super::ranker::{Mode, Ranker, Tape, glorot, zeros};
use wf_shared::model::Activation;

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
            let dropout = self.dropout(&mut mode);
            let x = hidden_layer(&z, bias.as_tensor(), self.activation, dropout)?;
            z = matmul(self.layers[index + 1].0.as_tensor(), &x)?;
        }
        z.broadcast_add(head_bias.as_tensor())
    }

    /// The dropout of the next hidden layer: a key drawn from the job's generator in
    /// training, none in evaluation.
    fn dropout(&self, mode: &mut Mode<'_>) -> Option<Dropout> {
        match mode {
            Mode::Train(rng) if self.dropout > 0.0 => Some(Dropout::new(1.0 - self.dropout, rng.next_u64())),
            _ => None,
        }
    }
}

impl Ranker for Mlp {
    fn forward(&self, features: &Tensor, mode: Mode<'_>) -> candle_core::Result<Tensor> {
        self.layers_after_product(matmul(self.layers[0].0.as_tensor(), features)?, mode)
    }

    /// The forward pass on detached tensors, keeping each hidden layer's input, output
    /// and dropout; the backward is autograd's for this graph, op for op: the head's
    /// bias sums the scores' gradient over stocks, each product `W · x` gives `dW = dz ·
    /// xᵀ` and `dx = Wᵀ · dz`, each hidden layer its fused backward.
    fn forward_taped(&self, features: &Tensor, mut mode: Mode<'_>) -> candle_core::Result<Option<Tape<'_>>> {
        let Some(((_, head_bias), _)) = self.layers.split_last() else { return Ok(None) };
        if !features.device().is_cpu() {
            return Ok(None);
        }
        let features = features.detach();
        let weight = |index: usize| self.layers[index].0.as_tensor().detach();
        let mut z = weight(0).matmul(&features)?;
        let mut hidden = Vec::with_capacity(self.layers.len() - 1);
        for (_, bias) in &self.layers[..self.layers.len() - 1] {
            let dropout = self.dropout(&mut mode);
            let x = hidden_layer(&z, &bias.as_tensor().detach(), self.activation, dropout)?;
            let next = weight(hidden.len() + 1).matmul(&x)?;
            hidden.push((z, x, dropout));
            z = next;
        }
        let scores = z.broadcast_add(&head_bias.as_tensor().detach())?;
        let backward = move |d_scores: &Tensor| {
            let mut grads = GradStore::default();
            grads.insert(head_bias.as_tensor(), d_scores.sum_keepdim(1)?);
            let mut dz = d_scores.clone();
            for (index, (z, x, dropout)) in hidden.into_iter().enumerate().rev() {
                let (next_weight, bias) = (self.layers[index + 1].0.as_tensor(), self.layers[index].1.as_tensor());
                grads.insert(next_weight, dz.matmul(&x.t()?)?);
                let dx = next_weight.detach().t()?.matmul(&dz)?;
                let (d_input, d_bias) = hidden_layer_backward(&z, &bias.detach(), &dx, self.activation, dropout)?;
                grads.insert(bias, d_bias);
                dz = d_input;
            }
            grads.insert(self.layers[0].0.as_tensor(), dz.matmul(&features.t()?)?);
            Ok(grads)
        };
        Ok(Some(Tape::new(scores, backward)?))
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use rand::{Rng as _, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::Mlp;
    use crate::model::{Activation, Mode, Ranker};

    fn random(shape: (usize, usize), rng: &mut ChaCha8Rng) -> Tensor {
        let values: Vec<f32> =
            (0..shape.0 * shape.1).map(|_| Distribution::<f32>::sample(&StandardNormal, rng)).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap_or_else(|e| panic!("tensor: {e}"))
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).unwrap_or_else(|e| panic!("values: {e}"));
        values.into_iter().map(f32::to_bits).collect()
    }

    /// The MLP's own backward gives autograd's scores and gradients bit for bit, for
    /// each activation, with and without dropout, one and two hidden layers; the
    /// dropout keys are drawn from the generator in the same order.
    #[test]
    fn the_taped_backward_is_autograds_bit_for_bit() {
        let device = Device::Cpu;
        for (hidden, activation, dropout) in [
            (vec![16, 8], Activation::Relu, 0.2),
            (vec![16, 8], Activation::Gelu, 0.0),
            (vec![12], Activation::Silu, 0.3),
            (vec![40, 24], Activation::Relu, 0.1),
        ] {
            let mut data = ChaCha8Rng::seed_from_u64(3);
            let model = Mlp::new(7, &hidden, 3, activation, dropout, &mut data, &device)
                .unwrap_or_else(|e| panic!("model: {e}"));
            let (x, target) = (random((7, 300), &mut data), random((3, 300), &mut data));
            // A loss whose gradient differs per score: a product and a square.
            let loss = |scores: &Tensor| (scores.mul(&target)?.sum_all()? + scores.sqr()?.mean_all()?)?.backward();
            let (mut first, mut second) = (ChaCha8Rng::seed_from_u64(9), ChaCha8Rng::seed_from_u64(9));
            let scores = model.forward(&x, Mode::Train(&mut first)).unwrap_or_else(|e| panic!("forward: {e}"));
            let expected = loss(&scores).unwrap_or_else(|e| panic!("autograd: {e}"));
            let tape = model
                .forward_taped(&x, Mode::Train(&mut second))
                .unwrap_or_else(|e| panic!("taped: {e}"))
                .unwrap_or_else(|| panic!("the MLP has its own backward on the CPU"));
            assert_eq!(bits(tape.scores()), bits(&scores), "{hidden:?} {activation:?}: scores differ");
            let grads = loss(tape.scores()).and_then(|g| tape.backward(&g)).unwrap_or_else(|e| panic!("tape: {e}"));
            for (name, variable) in model.variables() {
                let (ours, theirs) = (grads.get(variable.as_tensor()), expected.get(variable.as_tensor()));
                let (Some(ours), Some(theirs)) = (ours, theirs) else { panic!("{name}: a gradient is missing") };
                assert_eq!(ours.dims(), theirs.dims(), "{name}");
                assert_eq!(bits(ours), bits(theirs), "{hidden:?} {activation:?} {dropout}: {name}'s gradient differs");
                assert!(bits(ours).iter().any(|b| b << 1 != 0), "{name}: the gradient is all zeros");
            }
            assert_eq!(first.next_u64(), second.next_u64(), "the generators were drawn differently");
        }
    }
}
