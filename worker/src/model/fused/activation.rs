//! Element-wise activations (GELU, ReLU, SiLU) as one fused pass each, forward and
//! backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, bail};

use super::kernel::{CHUNK, data, exp, zeroed, zip2, zip3};

pub(super) const GELU_C: f32 = 0.797_884_6; // sqrt(2 / pi)
pub(super) const GELU_A: f32 = 0.044_715;

#[inline(always)]
pub(super) fn gelu_tanh(x: f32) -> f32 {
    let u = GELU_C * (x + GELU_A * x * x * x);
    1.0 - 2.0 / (exp(2.0 * u) + 1.0)
}

/// GELU of every element: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    pointwise::<Gelu>(x, Tensor::gelu)
}

pub(super) struct Gelu;

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
pub(super) struct Relu;

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

pub(super) struct Silu;

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
pub(super) trait Function: Send + Sync + 'static {
    const NAME: &'static str;
    fn value(x: f32) -> f32;
    /// `dy · f'(x)`.
    fn gradient(x: f32, dy: f32) -> f32;
}

/// `F` of every element of `x`: the fused op on the CPU, Candle's `composed` elsewhere.
pub(super) fn pointwise<F: Function>(
    x: &Tensor,
    composed: fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() { x.contiguous()?.apply_op1(Pointwise::<F>::default()) } else { composed(x) }
}

/// `F` of every element, a fused op each way (monomorphised, so the loops vectorise).
pub(super) struct Pointwise<F>(std::marker::PhantomData<F>);

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
pub(super) fn values<F: Function>(y: &mut [f32], x: &[f32]) {
    let n = y.len().min(x.len());
    let (y, x) = (&mut y[..n], &x[..n]);
    for i in 0..n {
        y[i] = F::value(x[i]);
    }
}

/// `dx = dy · F'(x)`.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn gradients<F: Function>(dx: &mut [f32], x: &[f32], dy: &[f32]) {
    let n = dx.len().min(x.len()).min(dy.len());
    let (dx, x, dy) = (&mut dx[..n], &x[..n], &dy[..n]);
    for i in 0..n {
        dx[i] = F::gradient(x[i], dy[i]);
    }
}
