//! A hidden layer after its product: bias, activation and dropout in one pass, and
//! its backward; the dropout masks.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, bail};
use rayon::prelude::*;
use wf_shared::model::Activation;

use super::activation::{Function, Gelu, Relu, Silu};
use super::kernel::{CHUNK, data, zeroed};

/// A keyed inverted-dropout mask: element `i` is `1 / keep` with probability `keep`, else
/// 0, decided by a hash of `(key, i)` (murmur3's finaliser), so one random `key` from the
/// job's generator makes the whole mask reproducible; drawing every element from ChaCha
/// took 8% of an MLP training step.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    threshold: u32,
    low: u32,
    high: u32,
    scale: f32,
}

impl Dropout {
    pub fn new(keep: f32, key: u64) -> Self {
        let threshold = (f64::from(keep) * f64::from(u32::MAX)) as u32;
        Self { threshold, low: key as u32, high: (key >> 32) as u32, scale: 1.0 / keep }
    }

    /// The first `n` elements of the mask.
    pub fn mask(&self, n: usize) -> Vec<f32> {
        let mut mask = zeroed(n);
        fill_mask(&mut mask, self);
        mask
    }

    /// Element `i` of the mask.
    #[inline(always)]
    fn at(&self, i: u32) -> f32 {
        let mut h = i.wrapping_mul(0x9e37_79b1) ^ self.low;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b) ^ self.high;
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        if h < self.threshold { self.scale } else { 0.0 }
    }
}

/// Compiled also for AVX2, chosen at run time: the hash's 32-bit products have no
/// vector instruction in baseline x86-64, and one scalar hash per element of every
/// hidden layer was 15% of a jp-panel MLP job's CPU time (`perf`).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn fill_mask(mask: &mut [f32], dropout: &Dropout) {
    for (i, m) in mask.iter_mut().enumerate() {
        *m = dropout.at(i as u32);
    }
}

// --- A hidden layer after its product: bias, activation, dropout --------------------

/// `act(z + bias) · mask`, where `z` is `[rows, n]` and `bias` `[rows, 1]` (a bias per
/// row, as the MLP's feature-major layout has it) and the mask is `dropout`'s (none in
/// evaluation). One pass forward, one backward that recomputes the mask from its key;
/// composed from Candle's ops this was four nodes, each allocating a full activation
/// and each gradient summed into a zeroed buffer (a third of an MLP training step).
pub fn hidden_layer(
    z: &Tensor,
    bias: &Tensor,
    activation: Activation,
    dropout: Option<Dropout>,
) -> candle_core::Result<Tensor> {
    if z.device().is_cpu() {
        return z.contiguous()?.apply_op2(&bias.contiguous()?, HiddenLayer { activation, dropout });
    }
    let x = z.broadcast_add(bias)?;
    let x = match activation {
        Activation::Relu => x.relu()?,
        Activation::Gelu => x.gelu()?,
        Activation::Silu => x.silu()?,
    };
    match dropout {
        Some(dropout) => x.mul(&Tensor::from_vec(dropout.mask(x.elem_count()), x.shape(), x.device())?),
        None => Ok(x),
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct HiddenLayer {
    activation: Activation,
    dropout: Option<Dropout>,
}

impl HiddenLayer {
    /// The row width `n` of `z` `[rows, n]` with `bias` `[rows, 1]`.
    fn width(&self, z: &Layout, bias: &[f32]) -> candle_core::Result<usize> {
        let rows = bias.len();
        match z.dims() {
            [r, n] if *r == rows => Ok(*n),
            dims => bail!("hidden layer: input {dims:?} does not match {rows} biases"),
        }
    }
}

impl CustomOp2 for HiddenLayer {
    fn name(&self) -> &'static str {
        "fused-hidden-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, bias) = (data(s1, l1)?, data(s2, l2)?);
        let n = self.width(l1, bias)?;
        let mut y = zeroed(z.len());
        match self.activation {
            Activation::Relu => hidden_forward_rows::<Relu>(&mut y, z, bias, n, self.dropout.as_ref()),
            Activation::Gelu => hidden_forward_rows::<Gelu>(&mut y, z, bias, n, self.dropout.as_ref()),
            Activation::Silu => hidden_forward_rows::<Silu>(&mut y, z, bias, n, self.dropout.as_ref()),
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        z: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dz, dbias) = hidden_layer_backward(z, bias, grad, self.activation, self.dropout)?;
        Ok((Some(dz), Some(dbias)))
    }
}

/// The gradients `(dz, dbias)` of [`hidden_layer`] `(z, bias)` given the gradient `dy` of
/// its output (CPU): what autograd computes for it, callable without a graph.
pub fn hidden_layer_backward(
    z: &Tensor,
    bias: &Tensor,
    dy: &Tensor,
    activation: Activation,
    dropout: Option<Dropout>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dz = z.apply_op3_no_bwd(bias, &dy.contiguous()?, &HiddenLayer { activation, dropout })?;
    let dbias = dz.sum_keepdim(1)?;
    Ok((dz, dbias))
}

/// `(z, bias, dy) → dz` of [`HiddenLayer`].
impl CustomOp3 for HiddenLayer {
    fn name(&self) -> &'static str {
        "fused-hidden-layer-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, bias, dy) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let n = self.width(l1, bias)?;
        if dy.len() != z.len() {
            bail!("hidden layer backward: {} inputs but {} gradients", z.len(), dy.len());
        }
        let mut dz = zeroed(z.len());
        match self.activation {
            Activation::Relu => hidden_backward_rows::<Relu>(&mut dz, z, bias, dy, n, self.dropout.as_ref()),
            Activation::Gelu => hidden_backward_rows::<Gelu>(&mut dz, z, bias, dy, n, self.dropout.as_ref()),
            Activation::Silu => hidden_backward_rows::<Silu>(&mut dz, z, bias, dy, n, self.dropout.as_ref()),
        }
        Ok((CpuStorage::F32(dz), l1.shape().clone()))
    }
}

/// Elements above which a hidden layer's pass is split by rows over rayon's pool. A
/// training step's layer (one day, ~10^5 elements) stays on the calling thread, where
/// rayon's hand-off cost more than it saved; a scoring batch's layer (32 days, `[128,
/// 32000]`) takes 0.64 ms split over 2 threads, 1.23 ms on one (`examples/patchtst_profile.rs`).
pub(super) const HIDDEN_SERIAL_MAX: usize = 1 << 20;

/// Rows per rayon task for a hidden layer of `len` elements in rows of `n`, or `None`
/// to stay on the calling thread.
pub(super) fn hidden_rows_per_task(len: usize, n: usize) -> Option<usize> {
    (len > HIDDEN_SERIAL_MAX && rayon::current_num_threads() > 1).then(|| (4 * CHUNK / n.max(1)).max(1))
}

/// [`hidden_forward`] of every row, split over rayon's pool when large.
pub(super) fn hidden_forward_rows<F: Function>(
    y: &mut [f32],
    z: &[f32],
    bias: &[f32],
    n: usize,
    dropout: Option<&Dropout>,
) {
    match hidden_rows_per_task(y.len(), n) {
        None => hidden_forward::<F>(y, z, bias, n, 0, dropout),
        Some(rows) => y
            .par_chunks_mut(rows * n)
            .zip(z.par_chunks(rows * n))
            .zip(bias.par_chunks(rows))
            .enumerate()
            .for_each(|(task, ((y, z), bias))| hidden_forward::<F>(y, z, bias, n, task * rows, dropout)),
    }
}

/// [`hidden_backward`] of every row, split over rayon's pool when large.
pub(super) fn hidden_backward_rows<F: Function>(
    dz: &mut [f32],
    z: &[f32],
    bias: &[f32],
    dy: &[f32],
    n: usize,
    dropout: Option<&Dropout>,
) {
    match hidden_rows_per_task(dz.len(), n) {
        None => hidden_backward::<F>(dz, z, bias, dy, n, 0, dropout),
        Some(rows) => {
            let tasks = dz.par_chunks_mut(rows * n).zip(z.par_chunks(rows * n)).zip(dy.par_chunks(rows * n));
            tasks.zip(bias.par_chunks(rows)).enumerate().for_each(|(task, (((dz, z), dy), bias))| {
                hidden_backward::<F>(dz, z, bias, dy, n, task * rows, dropout)
            })
        }
    }
}

/// `y = F(z + bias) · mask`, row by row, the first being row `first_row` of the layer
/// (the mask is keyed by position in the layer). Plain indexed loops: with iterator
/// adapters (a zip with the element index) the compiler kept a scalar loop.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn hidden_forward<F: Function>(
    y: &mut [f32],
    z: &[f32],
    bias: &[f32],
    n: usize,
    first_row: usize,
    dropout: Option<&Dropout>,
) {
    for (row, ((y, z), b)) in y.chunks_exact_mut(n).zip(z.chunks_exact(n)).zip(bias).enumerate() {
        let first = ((first_row + row) * n) as u32;
        match dropout {
            Some(d) => {
                for j in 0..n {
                    y[j] = F::value(z[j] + b) * d.at(first + j as u32);
                }
            }
            None => {
                for j in 0..n {
                    y[j] = F::value(z[j] + b);
                }
            }
        }
    }
}

/// `dz = dy · mask · F'(z + bias)`, row by row.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn hidden_backward<F: Function>(
    dz: &mut [f32],
    z: &[f32],
    bias: &[f32],
    dy: &[f32],
    n: usize,
    first_row: usize,
    dropout: Option<&Dropout>,
) {
    let rows = dz.chunks_exact_mut(n).zip(z.chunks_exact(n)).zip(dy.chunks_exact(n)).zip(bias);
    for (row, (((dz, z), dy), b)) in rows.enumerate() {
        let first = ((first_row + row) * n) as u32;
        match dropout {
            Some(d) => {
                for j in 0..n {
                    dz[j] = F::gradient(z[j] + b, dy[j] * d.at(first + j as u32));
                }
            }
            None => {
                for j in 0..n {
                    dz[j] = F::gradient(z[j] + b, dy[j]);
                }
            }
        }
    }
}
