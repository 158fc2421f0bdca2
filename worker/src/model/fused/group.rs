//! The mean over runs of rows, and its backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, bail};

use super::kernel::{ROWS_PER_TASK, axpy, data, zeroed, zip2};

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
pub(super) struct GroupMean {
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
pub(super) struct GroupSpread(GroupMean);

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
