//! Bias addition and its backward (a sum over the leading dimension).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

use super::kernel::{ROWS_PER_TASK, data, parallel, zeroed, zip2};

/// `x + bias`, `bias` broadcast over the leading dimensions of `x` (its shape is the
/// trailing dimensions of `x`). Its gradient is a column sum in one pass, not Candle's
/// reduction over the leading dimension.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return x.broadcast_add(bias);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasAdd)
}

pub(super) struct BiasAdd;

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
pub(super) struct ColumnSum {
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
