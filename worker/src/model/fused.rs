//! Fused CPU kernels, with their backward passes, for the transformer's hot spots.
//!
//! Composed from Candle's primitive ops, one PatchTST training step ran some 40 tensor
//! passes per layer norm, per attention and per GELU, each allocating a full activation;
//! the GELU's `tanh`/`powf` and the bias gradients (a sum over the leading dimension,
//! which Candle's CPU kernels do ~100x slower than along the last) took half the step
//! (`perf` on `cargo bench -p wf-worker --bench train_throughput`). Each op here does
//! one pass forward and one backward, written as plain loops over contiguous rows that
//! the compiler vectorises, spread over rows with rayon (`RAYON_NUM_THREADS`).
//!
//! Each op is a Candle `CustomOp` whose `bwd` runs a second fused kernel, so autograd
//! sees one node per op. On other devices (CUDA) the same function falls back to the
//! composed primitive ops; the tests check both paths agree, forward and backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

use super::Activation;

/// Rows per parallel task: large enough that rayon's overhead is noise.
const ROWS_PER_TASK: usize = 64;
/// Elements per parallel task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// The contiguous `f32` data of a storage.
fn data<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let all = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("fused kernels need contiguous inputs"),
    }
}

/// Elements below which a kernel runs on the calling thread: handing work to rayon's
/// pool costs tens of microseconds, and with one thread (a worker process per core) it
/// only adds hand-offs: a one-thread pool made an MLP step 0.5 ms slower.
const PARALLEL_MIN: usize = 1 << 15;

fn parallel(len: usize) -> bool {
    len >= PARALLEL_MIN && rayon::current_num_threads() > 1
}

/// `n` zeros. Not `vec![0.0; n]`: that asks the allocator for zeroed memory, which
/// mimalloc serves from fresh pages the kernel must fault in and clear, 5x slower here
/// than clearing a reused block (`examples/fused_profile.rs`).
fn zeroed(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0.0);
    v
}

/// `f` over matching chunks of `out` and `a`, on rayon's pool where worth it.
fn zip2<F>(out: &mut [f32], out_chunk: usize, a: &[f32], a_chunk: usize, f: F)
where
    F: Fn((&mut [f32], &[f32])) + Sync + Send,
{
    if parallel(out.len()) {
        out.par_chunks_mut(out_chunk).zip(a.par_chunks(a_chunk)).for_each(f);
    } else {
        out.chunks_mut(out_chunk).zip(a.chunks(a_chunk)).for_each(f);
    }
}

/// `f` over matching chunks of `out`, `a` and `b`, on rayon's pool where worth it;
/// the results in chunk order.
fn zip3<F, R>(out: &mut [f32], out_chunk: usize, a: &[f32], a_chunk: usize, b: &[f32], b_chunk: usize, f: F) -> Vec<R>
where
    F: Fn((&mut [f32], (&[f32], &[f32]))) -> R + Sync + Send,
    R: Send,
{
    if parallel(out.len()) {
        out.par_chunks_mut(out_chunk).zip(a.par_chunks(a_chunk).zip(b.par_chunks(b_chunk))).map(f).collect()
    } else {
        out.chunks_mut(out_chunk).zip(a.chunks(a_chunk).zip(b.chunks(b_chunk))).map(f).collect()
    }
}

/// `e^x` to ~2e-7 relative error, in plain arithmetic the compiler vectorises (libm's
/// `expf` is a call per element): `2^n · p(r)` with `x = n·ln2 + r`, `|r| ≤ ln2/2`.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `a · b` with eight independent partial sums, so it vectorises (a plain `sum` of
/// products is one sequential chain of additions).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `y += alpha · x`.
#[inline(always)]
fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

// --- Matrix product -----------------------------------------------------------------

/// `a · b` of two matrices. Its backward computes the gradient of an input only if that
/// input tracks one: Candle's product always computes both, so a first layer spent a
/// product per step (11% of an MLP step's arithmetic) on the gradient of its data.
pub fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.device().is_cpu() && (!a.track_op() || !b.track_op()) { a.apply_op2(b, MatMul) } else { a.matmul(b) }
}

struct MatMul;

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "fused-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage as _;
        let ((m, k), (k2, n)) = match (l1.dims(), l2.dims()) {
            ([m, k], [k2, n]) => ((*m, *k), (*k2, *n)),
            (a, b) => bail!("matmul: {a:?} · {b:?} is not a product of two matrices"),
        };
        if k != k2 {
            bail!("matmul: [{m}, {k}] · [{k2}, {n}] do not match");
        }
        Ok((s1.matmul(s2, (1, m, n, k), l1, l2)?, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let da = a.track_op().then(|| grad.matmul(&b.t()?)).transpose()?;
        let db = b.track_op().then(|| a.t()?.matmul(grad)).transpose()?;
        Ok((da, db))
    }
}

// --- GELU (tanh approximation, as Candle's `gelu`) -----------------------------------

const GELU_C: f32 = 0.797_884_6; // sqrt(2 / pi)
const GELU_A: f32 = 0.044_715;

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let u = GELU_C * (x + GELU_A * x * x * x);
    1.0 - 2.0 / (exp(2.0 * u) + 1.0)
}

/// GELU of every element: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    pointwise::<Gelu>(x, Tensor::gelu)
}

struct Gelu;

impl Function for Gelu {
    const NAME: &'static str = "fused-gelu";

    #[inline(always)]
    fn value(x: f32) -> f32 {
        0.5 * x * (1.0 + gelu_tanh(x))
    }

    #[inline(always)]
    fn gradient(x: f32, dy: f32) -> f32 {
        let t = gelu_tanh(x);
        let du = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
        dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
    }
}

// --- ReLU ------------------------------------------------------------------------------

/// `max(x, 0)` (in [`hidden_layer`]). Its backward is one pass; Candle's builds a zero
/// tensor, compares, converts the mask to floats and multiplies (7% of an MLP step).
struct Relu;

impl Function for Relu {
    const NAME: &'static str = "fused-relu";

    #[inline(always)]
    fn value(x: f32) -> f32 {
        x.max(0.0)
    }

    /// `dy` where `x ≥ 0` (Candle's convention at 0), else 0.
    #[inline(always)]
    fn gradient(x: f32, dy: f32) -> f32 {
        if x >= 0.0 { dy } else { 0.0 }
    }
}

// --- SiLU -------------------------------------------------------------------------------

struct Silu;

impl Function for Silu {
    const NAME: &'static str = "fused-silu";

    #[inline(always)]
    fn value(x: f32) -> f32 {
        x / (1.0 + exp(-x))
    }

    /// `dy · σ(x) · (1 + x · (1 − σ(x)))`.
    #[inline(always)]
    fn gradient(x: f32, dy: f32) -> f32 {
        let sigmoid = 1.0 / (1.0 + exp(-x));
        dy * sigmoid * (1.0 + x * (1.0 - sigmoid))
    }
}

// --- Element-wise functions -------------------------------------------------------------

/// A differentiable function of one element.
trait Function: Send + Sync + 'static {
    const NAME: &'static str;
    fn value(x: f32) -> f32;
    /// `dy · f'(x)`.
    fn gradient(x: f32, dy: f32) -> f32;
}

/// `F` of every element of `x`: the fused op on the CPU, Candle's `composed` elsewhere.
fn pointwise<F: Function>(
    x: &Tensor,
    composed: fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() { x.contiguous()?.apply_op1(Pointwise::<F>::default()) } else { composed(x) }
}

/// `F` of every element, a fused op each way (monomorphised, so the loops vectorise).
struct Pointwise<F>(std::marker::PhantomData<F>);

impl<F> Default for Pointwise<F> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<F: Function> CustomOp1 for Pointwise<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = data(storage, layout)?;
        let mut y = zeroed(x.len());
        zip2(&mut y, CHUNK, x, CHUNK, |(y, x)| values::<F>(y, x));
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, self)?))
    }
}

/// `(x, dy) → dx` of [`Pointwise`].
impl<F: Function> CustomOp2 for Pointwise<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, dy) = (data(s1, l1)?, data(s2, l2)?);
        if x.len() != dy.len() {
            bail!("{} backward: {} inputs but {} gradients", F::NAME, x.len(), dy.len());
        }
        let mut dx = zeroed(x.len());
        zip3(&mut dx, CHUNK, x, CHUNK, dy, CHUNK, |(dx, (x, dy))| gradients::<F>(dx, x, dy));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `y = F(x)`. Plain indexed loops in AVX2 clones: through rayon's `map` and
/// `collect_into_vec` each element was a call, and GELU took 12% of a PatchTST step.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn values<F: Function>(y: &mut [f32], x: &[f32]) {
    let n = y.len().min(x.len());
    let (y, x) = (&mut y[..n], &x[..n]);
    for i in 0..n {
        y[i] = F::value(x[i]);
    }
}

/// `dx = dy · F'(x)`.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn gradients<F: Function>(dx: &mut [f32], x: &[f32], dy: &[f32]) {
    let n = dx.len().min(x.len()).min(dy.len());
    let (dx, x, dy) = (&mut dx[..n], &x[..n], &dy[..n]);
    for i in 0..n {
        dx[i] = F::gradient(x[i], dy[i]);
    }
}

// --- Dropout masks ----------------------------------------------------------------------

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
fn fill_mask(mask: &mut [f32], dropout: &Dropout) {
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
struct HiddenLayer {
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
const HIDDEN_SERIAL_MAX: usize = 1 << 20;

/// Rows per rayon task for a hidden layer of `len` elements in rows of `n`, or `None`
/// to stay on the calling thread.
fn hidden_rows_per_task(len: usize, n: usize) -> Option<usize> {
    (len > HIDDEN_SERIAL_MAX && rayon::current_num_threads() > 1).then(|| (4 * CHUNK / n.max(1)).max(1))
}

/// [`hidden_forward`] of every row, split over rayon's pool when large.
fn hidden_forward_rows<F: Function>(y: &mut [f32], z: &[f32], bias: &[f32], n: usize, dropout: Option<&Dropout>) {
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
fn hidden_backward_rows<F: Function>(
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
fn hidden_forward<F: Function>(
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
fn hidden_backward<F: Function>(
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

// --- Layer normalisation over the last dimension --------------------------------------

const NORM_EPSILON: f32 = 1e-5;

/// `(x − mean) / √(var + 1e-5) · scale + shift` over the last dimension of `x`, with
/// the biased variance; `scale` and `shift` have the last dimension's width.
pub fn layer_norm(x: &Tensor, scale: &Tensor, shift: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normalised = centred.broadcast_div(&(variance + f64::from(NORM_EPSILON))?.sqrt()?)?;
        return normalised.broadcast_mul(scale)?.broadcast_add(shift);
    }
    x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, LayerNorm)
}

struct LayerNorm;

/// The sum of `a` with eight independent partial sums, so it vectorises (as [`dot`]).
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for l in 0..8 {
            lanes[l] += chunk[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Mean and reciprocal standard deviation of one row.
#[inline(always)]
fn moments(row: &[f32]) -> (f32, f32) {
    let width = row.len() as f32;
    let mean = sum(row) / width;
    // Two passes (not Σv² − width · mean², which cancels when the mean dwarfs the spread).
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for chunk in chunks {
        for l in 0..8 {
            lanes[l] += (chunk[l] - mean) * (chunk[l] - mean);
        }
    }
    let variance = (lanes.iter().sum::<f32>() + tail) / width;
    (mean, 1.0 / (variance + NORM_EPSILON).sqrt())
}

fn width_of(l1: &Layout, l2: &Layout, l3: &Layout) -> candle_core::Result<usize> {
    let width = l1.dims().last().copied().unwrap_or(1);
    if l2.shape().elem_count() != width || l3.shape().elem_count() != width {
        bail!("layer norm: scale and shift must have {width} elements");
    }
    Ok(width)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let width = width_of(l1, l2, l3)?;
        let (x, scale, shift) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let mut y = zeroed(x.len());
        zip2(&mut y, ROWS_PER_TASK * width, x, ROWS_PER_TASK * width, |(y, x)| {
            layer_norm_rows(y, x, scale, shift, width);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let width = scale.elem_count();
        let rows = x.elem_count() / width;
        // One kernel, one packed result: `rows` rows of dx, then d(scale), then d(shift).
        let packed = x.contiguous()?.apply_op3_no_bwd(&scale.contiguous()?, &grad.contiguous()?, &LayerNormBackward)?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dscale = packed.narrow(0, rows, 1)?.reshape(scale.shape())?;
        let dshift = packed.narrow(0, rows + 1, 1)?.reshape(scale.shape())?;
        Ok((Some(dx), Some(dscale), Some(dshift)))
    }
}

/// [`LayerNorm`] of rows of `width`. Compiled a second time for AVX2, with the row sums
/// in vector lanes: with sequential sums a layer norm of `[6000, 64]` took 0.45 ms on 2
/// threads, more than half the 0.76 ms of the `[6000, 64] · [64, 192]` product after it.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn layer_norm_rows(y: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32], width: usize) {
    let (scale, shift) = (&scale[..width], &shift[..width]);
    for (y, x) in y.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
        let (mean, rstd) = moments(x);
        for i in 0..width {
            y[i] = (x[i] - mean) * rstd * scale[i] + shift[i];
        }
    }
}

/// [`LayerNormBackward`] of rows of `width`: writes `dx` and adds to `sums` (d(scale),
/// then d(shift)); `g` is scratch of `width`. AVX2 clone and lane sums as the forward.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn layer_norm_backward_rows(
    dx: &mut [f32],
    x: &[f32],
    dy: &[f32],
    scale: &[f32],
    sums: &mut [f32],
    g: &mut [f32],
    width: usize,
) {
    let (scale, g) = (&scale[..width], &mut g[..width]);
    let (dscale, dshift) = sums.split_at_mut(width);
    let (dscale, dshift) = (&mut dscale[..width], &mut dshift[..width]);
    for ((dx, x), dy) in dx.chunks_exact_mut(width).zip(x.chunks_exact(width)).zip(dy.chunks_exact(width)) {
        let (mean, rstd) = moments(x);
        for i in 0..width {
            g[i] = dy[i] * scale[i];
            dscale[i] += dy[i] * (x[i] - mean) * rstd;
            dshift[i] += dy[i];
        }
        // mean(g) and mean(g · normalised), normalised = (x − mean) · rstd.
        let total = sum(g);
        let mean_g = total / width as f32;
        let mean_gx = rstd * (dot(g, x) - mean * total) / width as f32;
        for i in 0..width {
            dx[i] = rstd * (g[i] - mean_g - (x[i] - mean) * rstd * mean_gx);
        }
    }
}

/// `(x, scale, dy) → [dx; d(scale); d(shift)]` of [`LayerNorm`], `[rows + 2, width]`.
struct LayerNormBackward;

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "fused-layer-norm-backward"
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
        let width = width_of(l1, l2, l2)?;
        let (x, scale, dy) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        if x.len() != dy.len() {
            bail!("layer norm backward: {} inputs but {} gradients", x.len(), dy.len());
        }
        let rows = x.len() / width;
        let mut out = zeroed((rows + 2) * width);
        let (dx, _) = out.split_at_mut(rows * width);
        let chunk = ROWS_PER_TASK * width;
        // Each task returns its partial d(scale) and d(shift); they are summed after.
        let partials: Vec<Vec<f32>> = zip3(dx, chunk, x, chunk, dy, chunk, |(dx, (x, dy))| {
            let (mut sums, mut g) = (zeroed(2 * width), zeroed(width));
            layer_norm_backward_rows(dx, x, dy, scale, &mut sums, &mut g, width);
            sums
        });
        let tail = &mut out[rows * width..];
        for partial in partials {
            for (total, part) in tail.iter_mut().zip(partial) {
                *total += part;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, width))))
    }
}

// --- Bias addition -------------------------------------------------------------------

/// `x + bias`, `bias` broadcast over the leading dimensions of `x` (its shape is the
/// trailing dimensions of `x`). Its gradient is a column sum in one pass, not Candle's
/// reduction over the leading dimension.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return x.broadcast_add(bias);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasAdd)
}

struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "fused-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, bias) = (data(s1, l1)?, data(s2, l2)?);
        let width = bias.len();
        if width == 0 || x.len() % width != 0 {
            bail!("bias add: {} elements do not split into rows of {width}", x.len());
        }
        let mut y = zeroed(x.len());
        let chunk = ROWS_PER_TASK * width;
        zip2(&mut y, chunk, x, chunk, |(y, x)| {
            for (y, x) in y.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                for ((y, x), b) in y.iter_mut().zip(x).zip(bias) {
                    *y = x + b;
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let sums = grad.contiguous()?.apply_op1_no_bwd(&ColumnSum { width: bias.elem_count() })?;
        Ok((Some(grad.clone()), Some(sums.reshape(bias.shape())?)))
    }
}

/// The sum of the rows of `x` seen as `[.., width]`: `[width]`.
struct ColumnSum {
    width: usize,
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "fused-column-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, width) = (data(storage, layout)?, self.width);
        let chunk = ROWS_PER_TASK * 4 * width;
        let partial = |x: &[f32]| {
            let mut sums = zeroed(width);
            for row in x.chunks_exact(width) {
                for (sum, v) in sums.iter_mut().zip(row) {
                    *sum += v;
                }
            }
            sums
        };
        let partials: Vec<Vec<f32>> = if parallel(x.len()) {
            x.par_chunks(chunk).map(partial).collect()
        } else {
            x.chunks(chunk).map(partial).collect()
        };
        let mut sums = zeroed(width);
        for partial in partials {
            for (sum, part) in sums.iter_mut().zip(partial) {
                *sum += part;
            }
        }
        Ok((CpuStorage::F32(sums), Shape::from(width)))
    }
}

// --- Mean over runs of rows --------------------------------------------------------------

/// The mean of each run of `group` consecutive rows of `x [n · group, width]`: `[n,
/// width]` (PatchTST's pooling of a stock's patches). Candle's `mean` over the middle
/// dimension of `[n, group, width]` took 1.3 ms of a 25 ms forward pass
/// (`examples/patchtst_profile.rs`); this is one pass each way.
pub fn group_mean(x: &Tensor, group: usize) -> candle_core::Result<Tensor> {
    let (rows, width) = x.dims2()?;
    if group == 0 || rows % group != 0 {
        bail!("group mean: {rows} rows do not split into runs of {group}");
    }
    if !x.device().is_cpu() {
        return x.reshape((rows / group, group, width))?.mean(1);
    }
    x.contiguous()?.apply_op1(GroupMean { group, width })
}

#[derive(Clone, Copy)]
struct GroupMean {
    group: usize,
    width: usize,
}

impl CustomOp1 for GroupMean {
    fn name(&self) -> &'static str {
        "fused-group-mean"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, group, width) = (data(storage, layout)?, self.group, self.width);
        let n = x.len() / (group * width);
        let mut y = zeroed(n * width);
        let scale = 1.0 / group as f32;
        zip2(&mut y, ROWS_PER_TASK * width, x, ROWS_PER_TASK * group * width, |(y, x)| {
            for (y, run) in y.chunks_exact_mut(width).zip(x.chunks_exact(group * width)) {
                for row in run.chunks_exact(width) {
                    axpy(y, scale, row);
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, width))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&GroupSpread(*self))?))
    }
}

/// The backward of a [`GroupMean`]: each row of `dy`, divided by `group`, `group` times.
struct GroupSpread(GroupMean);

impl CustomOp1 for GroupSpread {
    fn name(&self) -> &'static str {
        "fused-group-mean-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dy, GroupMean { group, width }) = (data(storage, layout)?, self.0);
        let n = dy.len() / width;
        let mut dx = zeroed(n * group * width);
        let scale = 1.0 / group as f32;
        zip2(&mut dx, ROWS_PER_TASK * group * width, dy, ROWS_PER_TASK * width, |(dx, dy)| {
            for (run, dy) in dx.chunks_exact_mut(group * width).zip(dy.chunks_exact(width)) {
                for row in run.chunks_exact_mut(width) {
                    axpy(row, scale, dy);
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((n * group, width))))
    }
}

// --- Multi-head self-attention over a short sequence ----------------------------------

/// Scaled dot-product self-attention with `heads` heads over sequences of `seq` rows:
/// `qkv [batch · seq, 3·d]` (a sequence's rows together; queries, keys and values side
/// by side, each head a contiguous `d / heads` slice) in, the heads' contexts side by
/// side `[batch · seq, d]` out.
///
/// Sequences here are short (a stock's patches: 6 for 60 days in patches of 10), so a
/// batch of `stocks × heads` tiny matrix products is mostly overhead; one loop per
/// sequence computes scores, softmax and context in registers-sized scratch.
pub fn attention(qkv: &Tensor, seq: usize, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, width) = qkv.dims2()?;
    if width % 3 != 0 || (width / 3) % heads != 0 {
        bail!("attention: width {width} is not 3 x heads ({heads}) x head width");
    }
    if seq == 0 || rows % seq != 0 {
        bail!("attention: {rows} rows are not whole sequences of {seq}");
    }
    let batch = rows / seq;
    let d = width / 3;
    if !qkv.device().is_cpu() {
        let head_width = d / heads;
        let split = |index: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, index * d, d)?.reshape((batch, seq, heads, head_width))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (head_width as f64).sqrt())?;
        let shifted = scores.broadcast_sub(&scores.max_keepdim(D::Minus1)?.detach())?;
        let exp = shifted.exp()?;
        let weights = exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?;
        let context = weights.matmul(&v)?;
        return context.transpose(1, 2)?.contiguous()?.reshape((rows, d));
    }
    qkv.contiguous()?.apply_op1(Attention { seq, heads })
}

#[derive(Clone, Copy)]
struct Attention {
    seq: usize,
    heads: usize,
}

/// The shape of one attention problem.
#[derive(Clone, Copy)]
struct Dims {
    seq: usize,
    d: usize,
    heads: usize,
    head_width: usize,
    scale: f32,
}

impl Dims {
    fn of(layout: &Layout, seq: usize, heads: usize) -> candle_core::Result<Self> {
        let (_, width) = layout.shape().dims2()?;
        let d = width / 3;
        let head_width = d / heads;
        Ok(Self { seq, d, heads, head_width, scale: 1.0 / (head_width as f32).sqrt() })
    }

    /// Softmax attention weights of head `h` of one sequence `qkv [seq, 3d]` into
    /// `weights [seq, seq]`.
    #[inline(always)]
    fn weights(&self, qkv: &[f32], h: usize, weights: &mut [f32]) {
        let (seq, d, hw) = (self.seq, self.d, self.head_width);
        for i in 0..seq {
            let q = &qkv[i * 3 * d + h * hw..][..hw];
            let row = &mut weights[i * seq..][..seq];
            let mut max = f32::NEG_INFINITY;
            for (j, w) in row.iter_mut().enumerate() {
                *w = dot(q, &qkv[j * 3 * d + d + h * hw..][..hw]) * self.scale;
                max = max.max(*w);
            }
            let mut total = 0.0;
            for w in row.iter_mut() {
                *w = exp(*w - max);
                total += *w;
            }
            for w in row.iter_mut() {
                *w /= total;
            }
        }
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = data(storage, layout)?;
        let dims = Dims::of(layout, self.seq, self.heads)?;
        let (seq, d, hw) = (dims.seq, dims.d, dims.head_width);
        let rows = layout.shape().dims2()?.0;
        let mut out = zeroed(rows * d);
        let sequences = ROWS_PER_TASK / seq + 1;
        zip2(&mut out, sequences * seq * d, qkv, sequences * seq * 3 * d, |(out, qkv)| {
            let mut weights = zeroed(seq * seq);
            let weights = &mut weights[..];
            for (out, qkv) in out.chunks_exact_mut(seq * d).zip(qkv.chunks_exact(seq * 3 * d)) {
                for h in 0..dims.heads {
                    dims.weights(qkv, h, weights);
                    for i in 0..seq {
                        let context = &mut out[i * d + h * hw..][..hw];
                        for j in 0..seq {
                            axpy(context, weights[i * seq + j], &qkv[j * 3 * d + 2 * d + h * hw..][..hw]);
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(qkv.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, self)?))
    }
}

/// `(qkv, d(context)) → d(qkv)` of [`Attention`].
impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (qkv, dout) = (data(s1, l1)?, data(s2, l2)?);
        let dims = Dims::of(l1, self.seq, self.heads)?;
        let (seq, d, hw) = (dims.seq, dims.d, dims.head_width);
        if dout.len() * 3 != qkv.len() {
            bail!("attention backward: {} gradients for {} inputs", dout.len(), qkv.len());
        }
        let mut dqkv = zeroed(qkv.len());
        let sequences = ROWS_PER_TASK / seq + 1;
        let (wide, narrow) = (sequences * seq * 3 * d, sequences * seq * d);
        zip3(&mut dqkv, wide, qkv, wide, dout, narrow, |(dqkv, (qkv, dout))| {
            let (mut weights, mut dscores, mut scratch) = (zeroed(seq * seq), zeroed(seq * seq), zeroed(2 * seq * hw));
            let (weights, dscores, scratch) = (&mut weights[..], &mut dscores[..], &mut scratch[..]);
            let sequences =
                dqkv.chunks_exact_mut(seq * 3 * d).zip(qkv.chunks_exact(seq * 3 * d).zip(dout.chunks_exact(seq * d)));
            for (dqkv, (qkv, dout)) in sequences {
                // Where head h of the query, key and value of position i starts.
                let q_at = |i: usize, h: usize| i * 3 * d + h * hw;
                let k_at = |i: usize, h: usize| i * 3 * d + d + h * hw;
                let v_at = |i: usize, h: usize| i * 3 * d + 2 * d + h * hw;
                for h in 0..dims.heads {
                    dims.weights(qkv, h, weights);
                    for i in 0..seq {
                        let g = &dout[i * d + h * hw..][..hw];
                        // d(weights)_ij = g_i · v_j, then the softmax's backward.
                        let mut expected = 0.0;
                        for j in 0..seq {
                            let dw = dot(g, &qkv[v_at(j, h)..][..hw]);
                            dscores[i * seq + j] = dw;
                            expected += dw * weights[i * seq + j];
                        }
                        for j in 0..seq {
                            let w = weights[i * seq + j];
                            dscores[i * seq + j] = w * (dscores[i * seq + j] - expected) * dims.scale;
                            axpy(&mut dqkv[v_at(j, h)..][..hw], w, g); // d(v)_j += w_ij · g_i
                        }
                    }
                    // d(q)_i = Σ_j s_ij · k_j and d(k)_j = Σ_i s_ij · q_i, in scratch rows.
                    scratch.fill(0.0);
                    let (dq, dk) = scratch.split_at_mut(seq * hw);
                    for i in 0..seq {
                        for j in 0..seq {
                            let s = dscores[i * seq + j];
                            axpy(&mut dq[i * hw..][..hw], s, &qkv[k_at(j, h)..][..hw]);
                            axpy(&mut dk[j * hw..][..hw], s, &qkv[q_at(i, h)..][..hw]);
                        }
                    }
                    for i in 0..seq {
                        dqkv[q_at(i, h)..][..hw].copy_from_slice(&dq[i * hw..][..hw]);
                        dqkv[k_at(i, h)..][..hw].copy_from_slice(&dk[i * hw..][..hw]);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Standard normal values times `scale` plus `shift`.
    fn spread(shape: &[usize], seed: u64, scale: f32, shift: f32) -> Tensor {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let values: Vec<f32> =
            (0..n).map(|_| scale * Distribution::<f32>::sample(&StandardNormal, &mut rng) + shift).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap_or_else(|e| panic!("tensor: {e}"))
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        spread(shape, seed, 1.0, 0.0)
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        let diff = (a - b).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>());
        diff.unwrap_or_else(|e| panic!("difference: {e}"))
    }

    /// Runs `fused` and `composed` on the same variables with a random upstream
    /// gradient, and asserts that outputs and every input's gradient agree.
    fn check(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        composed: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        tolerance: f32,
    ) {
        let run = |f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>| {
            let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap_or_else(|e| panic!("{e}"))).collect();
            let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let out = f(&tensors).unwrap_or_else(|e| panic!("forward: {e}"));
            let upstream = random(out.dims(), 99);
            let grads = (&out * &upstream)
                .and_then(|l| l.sum_all())
                .and_then(|l| l.backward())
                .unwrap_or_else(|e| panic!("backward: {e}"));
            let grads: Vec<Tensor> = tensors
                .iter()
                .map(|t| grads.get(t).cloned().unwrap_or_else(|| panic!("an input got no gradient")))
                .collect();
            (out, grads)
        };
        let (fused_out, fused_grads) = run(&fused);
        let (composed_out, composed_grads) = run(&composed);
        assert_eq!(fused_out.dims(), composed_out.dims());
        let out_diff = max_difference(&fused_out, &composed_out);
        assert!(out_diff < tolerance, "outputs differ by {out_diff}");
        for (i, (a, b)) in fused_grads.iter().zip(&composed_grads).enumerate() {
            assert_eq!(a.dims(), b.dims(), "gradient {i} shape");
            let diff = max_difference(a, b);
            assert!(diff < tolerance, "gradient of input {i} differs by {diff}");
        }
    }

    #[test]
    fn exp_is_accurate_over_the_float_range() {
        for i in -870..=880 {
            let x = i as f32 / 10.0;
            let (fast, exact) = (exp(x), x.exp());
            assert!(((fast - exact) / exact).abs() < 5e-7, "exp({x}) = {fast}, not {exact}");
        }
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn group_means_match_candles_mean_over_the_middle_dimension() {
        let fused = |t: &[Tensor]| group_mean(&t[0], 6);
        let composed = |t: &[Tensor]| t[0].reshape((70, 6, 37))?.mean(1);
        check(&[spread(&[420, 37], 2, 1.0, 0.0)], fused, composed, 1e-5);
        assert!(group_mean(&Tensor::zeros((7, 3), candle_core::DType::F32, &Device::Cpu).expect("zeros"), 2).is_err());
    }

    #[test]
    fn gelu_matches_candles() {
        check(&[spread(&[37, 70], 1, 3.0, 0.0)], |t| gelu(&t[0]), |t| t[0].gelu(), 1e-5);
    }

    #[test]
    fn dropout_masks_keep_the_asked_share_and_depend_on_the_key() {
        let mask = Dropout::new(0.9, 7).mask(100_000);
        let kept = mask.iter().filter(|m| **m > 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        assert!(mask.iter().all(|m| *m == 0.0 || (*m - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(mask, Dropout::new(0.9, 7).mask(100_000), "the same key gives the same mask");
        let other = Dropout::new(0.9, 8).mask(100_000);
        let differ = mask.iter().zip(&other).filter(|(a, b)| a != b).count();
        // Independent masks differ where exactly one keeps: 2 · 0.9 · 0.1 = 18%.
        assert!((15_000..21_000).contains(&differ), "{differ} elements differ");
        // Neighbouring elements are not correlated: pairs both dropped ~1%.
        let both = mask.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count();
        assert!((700..1_300).contains(&both), "{both} neighbouring pairs both dropped");
    }

    #[test]
    fn hidden_layers_match_the_composed_ops_for_every_activation_with_and_without_dropout() {
        for activation in [Activation::Relu, Activation::Gelu, Activation::Silu] {
            for dropout in [None, Some(Dropout::new(0.8, 0xfeed_beef_0123_4567))] {
                hidden_layer_matches_the_composed_ops([67, 301], activation, dropout, 1e-4);
            }
        }
    }

    /// Above `HIDDEN_SERIAL_MAX` elements the rows are split over rayon's pool, each task
    /// keying its dropout mask from its first row.
    #[test]
    fn large_hidden_layers_split_over_threads_match_the_composed_ops() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap_or_else(|e| panic!("{e}"));
        pool.install(|| {
            assert!(hidden_rows_per_task(40 * 30_000, 30_000).is_some(), "this layer is split");
            for activation in [Activation::Relu, Activation::Gelu] {
                let dropout = Some(Dropout::new(0.8, 0xfeed_beef_0123_4567));
                // The bias gradient sums 30,000 terms: float rounding reaches ~2e-4.
                hidden_layer_matches_the_composed_ops([40, 30_000], activation, dropout, 1e-3);
            }
        });
    }

    fn hidden_layer_matches_the_composed_ops(
        shape: [usize; 2],
        activation: Activation,
        dropout: Option<Dropout>,
        tolerance: f32,
    ) {
        let inputs = [spread(&shape, 4, 2.0, 0.1), random(&[shape[0], 1], 5)];
        let composed = |t: &[Tensor]| {
            let x = t[0].broadcast_add(&t[1])?;
            let x = match activation {
                Activation::Relu => x.relu()?,
                Activation::Gelu => x.gelu()?,
                Activation::Silu => x.silu()?,
            };
            match dropout {
                Some(_) => {
                    let mask = Dropout::new(0.8, 0xfeed_beef_0123_4567).mask(x.elem_count());
                    x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
                }
                None => Ok(x),
            }
        };
        check(&inputs, |t| hidden_layer(&t[0], &t[1], activation, dropout), composed, tolerance);
    }

    #[test]
    fn a_hidden_layer_refuses_a_bias_of_the_wrong_height() {
        let result = hidden_layer(&random(&[4, 9], 1), &random(&[5, 1], 2), Activation::Relu, None);
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("does not match 5 biases"), "{message}");
    }

    #[test]
    fn a_product_with_data_matches_candles_and_gives_the_data_no_gradient() {
        let (w, x) = (Var::from_tensor(&random(&[33, 17], 1)).unwrap_or_else(|e| panic!("{e}")), random(&[17, 45], 2));
        let gradients = |product: &Tensor| {
            let upstream = random(product.dims(), 3);
            (product * &upstream).and_then(|l| l.sum_all()?.backward()).unwrap_or_else(|e| panic!("{e}"))
        };
        for (fused, composed) in [
            (matmul(w.as_tensor(), &x), w.as_tensor().matmul(&x)),
            (
                matmul(&x.t().unwrap_or_else(|e| panic!("{e}")), &w.t().unwrap_or_else(|e| panic!("{e}"))),
                (x.t().and_then(|t| t.matmul(&w.t()?))),
            ),
        ] {
            let (fused, composed) =
                (fused.unwrap_or_else(|e| panic!("{e}")), composed.unwrap_or_else(|e| panic!("{e}")));
            assert!(max_difference(&fused, &composed) < 1e-5);
            let (fused_grads, composed_grads) = (gradients(&fused), gradients(&composed));
            let (a, b) = (fused_grads.get(w.as_tensor()), composed_grads.get(w.as_tensor()));
            let (a, b) =
                (a.unwrap_or_else(|| panic!("no weight gradient")), b.unwrap_or_else(|| panic!("no weight gradient")));
            assert!(max_difference(a, b) < 1e-4);
            assert!(fused_grads.get(&x).is_none(), "the data got a gradient");
        }
        // Both inputs tracked: Candle's own product, both gradients.
        check(&[random(&[6, 5], 4), random(&[5, 7], 5)], |t| matmul(&t[0], &t[1]), |t| t[0].matmul(&t[1]), 1e-5);
        let wrong = matmul(&random(&[3, 4], 1), &random(&[5, 2], 2)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(wrong.contains("do not match"), "{wrong}");
    }

    #[test]
    fn layer_norm_matches_the_composed_ops() {
        let composed = |t: &[Tensor]| {
            let centred = t[0].broadcast_sub(&t[0].mean_keepdim(D::Minus1)?)?;
            let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
            centred.broadcast_div(&(variance + 1e-5)?.sqrt()?)?.broadcast_mul(&t[1])?.broadcast_add(&t[2])
        };
        let inputs = [spread(&[5, 130, 24], 1, 2.0, 1.0), random(&[24], 2), random(&[24], 3)];
        check(&inputs, |t| layer_norm(&t[0], &t[1], &t[2]), composed, 1e-4);
        // Rows of 67 (lane sums with a tail of 3) whose mean dwarfs their spread.
        let inputs = [spread(&[130, 67], 4, 1.0, 1000.0), random(&[67], 5), random(&[67], 6)];
        check(&inputs, |t| layer_norm(&t[0], &t[1], &t[2]), composed, 2e-3);
    }

    #[test]
    fn bias_add_matches_broadcasting() {
        let inputs = [random(&[300, 6, 8], 1), random(&[6, 8], 2)];
        check(&inputs, |t| add_bias(&t[0], &t[1]), |t| t[0].broadcast_add(&t[1]), 1e-4);
        let inputs = [random(&[513, 16], 3), random(&[16], 4)];
        check(&inputs, |t| add_bias(&t[0], &t[1]), |t| t[0].broadcast_add(&t[1]), 1e-4);
    }

    #[test]
    fn attention_matches_the_composed_ops() {
        let (batch, seq, d, heads) = (70, 6, 16, 4);
        let qkv = random(&[batch * seq, 3 * d], 5);
        let composed = |t: &[Tensor]| {
            let head_width = d / heads;
            let split = |index: usize| -> candle_core::Result<Tensor> {
                t[0].narrow(D::Minus1, index * d, d)?
                    .reshape((batch, seq, heads, head_width))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = (q.matmul(&k.t()?.contiguous()?)? / (head_width as f64).sqrt())?;
            let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
            weights.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch * seq, d))
        };
        check(&[qkv], |t| attention(&t[0], seq, heads), composed, 1e-4);
    }
}
