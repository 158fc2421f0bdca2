//! PatchTST (APEX-style): each stock's last `lookback` days of features are cut into
//! patches of `patch` days, embedded linearly, run through a transformer encoder
//! (pre-norm, multi-head self-attention over patches, GELU feed-forward), mean-pooled,
//! and mapped to one score per horizon.
//!
//! LayerNorm and softmax are composed from primitive ops: Candle's fused versions have
//! no backward pass and would silently train nothing (FINDINGS.md); a test checks that
//! every variable gets a gradient. No dropout inside the encoder.

use candle_core::{D, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::{Mode, Ranker, glorot, zeros};

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

    /// `x [.., inputs] → [.., outputs]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_matmul(self.weight.as_tensor())?.broadcast_add(self.bias.as_tensor())
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

    /// Layer normalisation over the last dimension, from primitive (differentiable) ops.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normalised = centred.broadcast_div(&(variance + 1e-5)?.sqrt()?)?;
        normalised.broadcast_mul(self.scale.as_tensor())?.broadcast_add(self.shift.as_tensor())
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

fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let exp = shifted.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
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
        let (stocks, patches, d) = x.dims3()?;
        let heads = self.shape.heads;
        let head_width = d / heads;
        let qkv = layer.qkv.forward(&layer.attention_norm.forward(x)?)?;
        let split = |index: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, index * d, d)?
                .reshape((stocks, patches, heads, head_width))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (head_width as f64).sqrt())?;
        let context = softmax_last(&scores)?.matmul(&v)?;
        let merged = context.transpose(1, 2)?.contiguous()?.reshape((stocks, patches, d))?;
        layer.output.forward(&merged)
    }
}

impl Ranker for PatchTst {
    fn forward(&self, features: &Tensor, _mode: Mode<'_>) -> candle_core::Result<Tensor> {
        let s = self.shape;
        let stocks = features.dim(1)?;
        // [L·F, stocks] → [stocks, patches, patch·F]: days are contiguous per stock.
        let patches = features.t()?.contiguous()?.reshape((stocks, s.lookback / s.patch, s.patch * s.features))?;
        let mut x = self.embed.forward(&patches)?.broadcast_add(self.position.as_tensor())?;
        for layer in &self.layers {
            x = (&x + self.attention(layer, &x)?)?;
            let expanded = layer.expand.forward(&layer.feed_forward_norm.forward(&x)?)?.gelu()?;
            x = (&x + layer.contract.forward(&expanded)?)?;
        }
        let pooled = self.final_norm.forward(&x)?.mean(1)?;
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
