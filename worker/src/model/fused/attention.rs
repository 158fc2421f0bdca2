//! Multi-head self-attention over a short sequence, forward and backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, D, Layout, Shape, Tensor, bail};

use super::kernel::{ROWS_PER_TASK, axpy, data, dot, exp, zeroed, zip2, zip3};

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
pub(super) struct Attention {
    seq: usize,
    heads: usize,
}

/// The shape of one attention problem.
#[derive(Clone, Copy)]
pub(super) struct Dims {
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
