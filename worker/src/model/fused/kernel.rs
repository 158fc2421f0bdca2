//! The loops every fused op is made of: contiguous data, when to go parallel, zipped
//! rows, a fast `exp`, dot products.

use candle_core::{CpuStorage, Layout, bail};
use rayon::prelude::*;

/// Rows per parallel task: large enough that rayon's overhead is noise.
pub(super) const ROWS_PER_TASK: usize = 64;
/// Elements per parallel task of the element-wise kernels.
pub(super) const CHUNK: usize = 1 << 14;

/// The contiguous `f32` data of a storage.
pub(super) fn data<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let all = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => bail!("fused kernels need contiguous inputs"),
    }
}

/// Elements below which a kernel runs on the calling thread: handing work to rayon's
/// pool costs tens of microseconds, and with one thread (a worker process per core) it
/// only adds hand-offs: a one-thread pool made an MLP step 0.5 ms slower.
pub(super) const PARALLEL_MIN: usize = 1 << 15;

pub(super) fn parallel(len: usize) -> bool {
    len >= PARALLEL_MIN && rayon::current_num_threads() > 1
}

/// `n` zeros. Not `vec![0.0; n]`: that asks the allocator for zeroed memory, which
/// mimalloc serves from fresh pages the kernel must fault in and clear, 5x slower here
/// than clearing a reused block (`examples/fused_profile.rs`).
pub(super) fn zeroed(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0.0);
    v
}

/// `f` over matching chunks of `out` and `a`, on rayon's pool where worth it.
pub(super) fn zip2<F>(out: &mut [f32], out_chunk: usize, a: &[f32], a_chunk: usize, f: F)
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
pub(super) fn zip3<F, R>(
    out: &mut [f32],
    out_chunk: usize,
    a: &[f32],
    a_chunk: usize,
    b: &[f32],
    b_chunk: usize,
    f: F,
) -> Vec<R>
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
pub(super) fn exp(x: f32) -> f32 {
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
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
pub(super) fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}
