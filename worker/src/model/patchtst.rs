//! PatchTST (APEX-style): each stock's last `lookback` days of features are cut into
//! patches of `patch` days, embedded linearly, run through a transformer encoder
//! (pre-norm, multi-head self-attention over patches, GELU feed-forward), mean-pooled,
//! and mapped to one score per horizon.
//!
//! Layer norm, attention, GELU and the bias additions are our own fused kernels with
//! backward passes ([`super::fused`]): Candle's fused LayerNorm and softmax have no
//! backward pass and would silently train nothing (FINDINGS.md), and composing them from
//! primitive ops was most of a training step. A test checks that every variable gets a
//! gradient. No dropout inside the encoder.

use candle_core::{Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::fused;
use super::ranker::{Mode, Ranker, glorot, zeros};

/// Shape of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchTstShape {
    pub features: usize,
    pub lookback: usize,
    pub patch: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub feed_forward: usize,
    pub horizons: usize,
}

#[derive(Debug)]
struct Dense {
    weight: Var,
    bias: Var,
}

impl Dense {
    fn new(inputs: usize, outputs: usize, rng: &mut ChaCha8Rng, device: &Device) -> candle_core::Result<Self> {
        Ok(Self { weight: glorot(inputs, outputs, rng, device)?, bias: zeros(outputs, device)? })
    }

    /// `x [rows, inputs] → [rows, outputs]`: the encoder keeps every (stock, patch) as one
    /// row, so each layer is one matrix product (a batch of `stocks` small products was
    /// many times slower) and no reshape adds an autograd node.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        fused::add_bias(&fused::matmul(x, self.weight.as_tensor())?, self.bias.as_tensor())
    }
}

#[derive(Debug)]
struct Norm {
    scale: Var,
    shift: Var,
}

impl Norm {
    fn new(width: usize, device: &Device) -> candle_core::Result<Self> {
        Ok(Self { scale: Var::ones(width, candle_core::DType::F32, device)?, shift: zeros(width, device)? })
    }

    /// Layer normalisation over the last dimension.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        fused::layer_norm(x, self.scale.as_tensor(), self.shift.as_tensor())
    }
}

#[derive(Debug)]
struct EncoderLayer {
    attention_norm: Norm,
    qkv: Dense,
    output: Dense,
    feed_forward_norm: Norm,
    expand: Dense,
    contract: Dense,
}

#[derive(Debug)]
pub struct PatchTst {
    shape: PatchTstShape,
    embed: Dense,
    position: Var,
    layers: Vec<EncoderLayer>,
    final_norm: Norm,
    head: Dense,
}

impl PatchTst {
    pub fn new(shape: PatchTstShape, rng: &mut ChaCha8Rng, device: &Device) -> candle_core::Result<Self> {
        let d = shape.d_model;
        let layers = (0..shape.layers)
            .map(|_| {
                Ok(EncoderLayer {
                    attention_norm: Norm::new(d, device)?,
                    qkv: Dense::new(d, 3 * d, rng, device)?,
                    output: Dense::new(d, d, rng, device)?,
                    feed_forward_norm: Norm::new(d, device)?,
                    expand: Dense::new(d, shape.feed_forward, rng, device)?,
                    contract: Dense::new(shape.feed_forward, d, rng, device)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embed: Dense::new(shape.patch * shape.features, d, rng, device)?,
            position: glorot(shape.lookback / shape.patch, d, rng, device)?,
            layers,
            final_norm: Norm::new(d, device)?,
            head: Dense::new(d, shape.horizons, rng, device)?,
            shape,
        })
    }

    fn attention(&self, layer: &EncoderLayer, x: &Tensor) -> candle_core::Result<Tensor> {
        let qkv = layer.qkv.forward(&layer.attention_norm.forward(x)?)?;
        let patches = self.shape.lookback / self.shape.patch;
        layer.output.forward(&fused::attention(&qkv, patches, self.shape.heads)?)
    }
}

impl Ranker for PatchTst {
    fn forward(&self, features: &Tensor, mode: Mode<'_>) -> candle_core::Result<Tensor> {
        self.forward_columns(features, None, mode)
    }

    fn forward_columns(
        &self,
        window: &Tensor,
        columns: Option<&Tensor>,
        _mode: Mode<'_>,
    ) -> candle_core::Result<Tensor> {
        let s = self.shape;
        let (patches, width) = (s.lookback / s.patch, s.patch * s.features);
        // The window is [L·F, stocks] with a patch's days in consecutive rows: patch p is
        // rows p·width .. (p+1)·width, so each patch embeds as one product on that
        // layout, [stocks, width] (a transposed view, no copy) · [width, d], and the
        // patches' products side by side are already one row per (stock, patch):
        // [stocks, patches · d] = [stocks · patches, d], a stock's patches together. Only
        // that (ten times smaller than the window) is gathered for the day's stocks.
        let weight = self.embed.weight.as_tensor();
        let embedded = (0..patches)
            .map(|p| fused::matmul(&window.narrow(0, p * width, width)?.t()?, weight))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut x = Tensor::cat(&embedded, 1)?;
        if let Some(columns) = columns {
            x = x.index_select(columns, 0)?;
        }
        let stocks = x.dim(0)?;
        // Bias and position per (patch, d), the same for every stock.
        let offset = self.position.as_tensor().broadcast_add(self.embed.bias.as_tensor())?.flatten_all()?;
        let mut x = fused::add_bias(&x, &offset)?.reshape((stocks * patches, s.d_model))?;
        for layer in &self.layers {
            x = (&x + self.attention(layer, &x)?)?;
            let expanded = layer.expand.forward(&layer.feed_forward_norm.forward(&x)?)?;
            let expanded = fused::gelu(&expanded)?;
            x = (&x + layer.contract.forward(&expanded)?)?;
        }
        let pooled = fused::group_mean(&self.final_norm.forward(&x)?, patches)?;
        self.head.forward(&pooled)?.t()?.contiguous()
    }

    fn lookback(&self) -> usize {
        self.shape.lookback
    }

    fn variables(&self) -> Vec<(String, Var)> {
        let dense = |name: String, d: &Dense| {
            [(format!("{name}.weight"), d.weight.clone()), (format!("{name}.bias"), d.bias.clone())]
        };
        let norm = |name: String, n: &Norm| {
            [(format!("{name}.scale"), n.scale.clone()), (format!("{name}.shift"), n.shift.clone())]
        };
        let mut variables: Vec<(String, Var)> = dense("embed".into(), &self.embed).into();
        variables.push(("position".into(), self.position.clone()));
        for (i, layer) in self.layers.iter().enumerate() {
            variables.extend(norm(format!("layer{i}.attention_norm"), &layer.attention_norm));
            variables.extend(dense(format!("layer{i}.qkv"), &layer.qkv));
            variables.extend(dense(format!("layer{i}.output"), &layer.output));
            variables.extend(norm(format!("layer{i}.feed_forward_norm"), &layer.feed_forward_norm));
            variables.extend(dense(format!("layer{i}.expand"), &layer.expand));
            variables.extend(dense(format!("layer{i}.contract"), &layer.contract));
        }
        variables.extend(norm("final_norm".into(), &self.final_norm));
        variables.extend(dense("head".into(), &self.head));
        variables
    }
}
