//! The matrix product, with its backward.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, bail};

/// `a · b` of two matrices. Its backward computes the gradient of an input only if that
/// input tracks one: Candle's product always computes both, so a first layer spent a
/// product per step (11% of an MLP step's arithmetic) on the gradient of its data.
pub fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.device().is_cpu() && (!a.track_op() || !b.track_op()) { a.apply_op2(b, MatMul) } else { a.matmul(b) }
}

pub(super) struct MatMul;

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
