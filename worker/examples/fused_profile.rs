//! Times the fused transformer kernels against Candle's own ops at PatchTST's benchmark
//! shapes (1,000 stocks x 6 patches, d 64): `cargo run --release -p wf-worker --example
//! fused_profile`.
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use wf_worker::model::{Activation, fused};

/// Times `f`; `FUSED_PROFILE=text` times only the labels that contain `text`.
fn time(label: &str, mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<()> {
    if std::env::var("FUSED_PROFILE").is_ok_and(|only| !label.contains(&only)) {
        return Ok(());
    }
    f()?;
    let steps = 200;
    let started = Instant::now();
    for _ in 0..steps {
        f()?;
    }
    println!("{label:<44} {:>8.3} ms", started.elapsed().as_secs_f64() * 1e3 / f64::from(steps));
    Ok(())
}

/// Passes its input through; its backward hands back a fixed upstream gradient, so a
/// backward pass times the op under test, not the loss's broadcast gradient.
struct Seed(Tensor);

impl candle_core::CustomOp1 for Seed {
    fn name(&self) -> &'static str {
        "seed"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let all = storage.as_slice::<f32>()?;
        let values = match layout.contiguous_offsets() {
            Some((start, end)) => all[start..end].to_vec(),
            None => candle_core::bail!("seed: contiguous input only"),
        };
        Ok((candle_core::CpuStorage::F32(values), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, _grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

/// Forward, then backward with `upstream` as the output's gradient.
fn fwd_bwd(out: candle_core::Result<Tensor>, upstream: &Tensor) -> candle_core::Result<()> {
    out?.apply_op1(Seed(upstream.clone()))?.sum_all()?.backward().map(drop)
}

fn main() -> candle_core::Result<()> {
    wf_worker::allocator::keep_freed_memory();
    let device = Device::Cpu;
    let rows = 6000;
    let x64 = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, 64), &device)?)?;
    let x128 = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, 128), &device)?)?;
    let x192 = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, 192), &device)?)?;
    let (g64, g128) = (Tensor::randn(0f32, 1.0, (rows, 64), &device)?, Tensor::randn(0f32, 1.0, (rows, 128), &device)?);
    let scale = Var::ones(64, candle_core::DType::F32, &device)?;
    let shift = Var::zeros(64, candle_core::DType::F32, &device)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (64, 192), &device)?)?;
    let b = Var::zeros(192, candle_core::DType::F32, &device)?;
    let g192 = Tensor::randn(0f32, 1.0, (rows, 192), &device)?;
    let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (128, 991), &device)?)?;
    let gh = Tensor::randn(0f32, 1.0, (128, 991), &device)?;
    let hb = Var::zeros((128, 1), candle_core::DType::F32, &device)?;
    let dropout = fused::Dropout::new(0.9, 7);
    let mask = Tensor::from_vec(dropout.mask(128 * 991), (128, 991), &device)?;
    let hidden = || fused::hidden_layer(h.as_tensor(), hb.as_tensor(), Activation::Relu, Some(dropout));
    time("hidden layer (bias, relu, dropout) fwd+bwd [128,991]", || fwd_bwd(hidden(), &gh))?;
    let composed = || h.as_tensor().broadcast_add(hb.as_tensor())?.relu()?.mul(&mask);
    time("candle bias, relu, dropout fwd+bwd [128,991]", || fwd_bwd(composed(), &gh))?;
    time("harness alone [128,991]", || fwd_bwd(Ok(h.as_tensor().clone()), &gh))?;
    time("gelu fwd [6000,128]", || fused::gelu(x128.as_tensor()).map(drop))?;
    time("gelu fwd+bwd", || fwd_bwd(fused::gelu(x128.as_tensor()), &g128))?;
    time("candle gelu fwd+bwd", || fwd_bwd(x128.as_tensor().gelu(), &g128))?;
    time("layer norm fwd [6000,64]", || fused::layer_norm(x64.as_tensor(), &scale, &shift).map(drop))?;
    time("layer norm fwd+bwd", || fwd_bwd(fused::layer_norm(x64.as_tensor(), &scale, &shift), &g64))?;
    time("bias add fwd [6000,192]", || fused::add_bias(x192.as_tensor(), &b).map(drop))?;
    time("candle broadcast_add fwd+bwd [6000,192]", || fwd_bwd(x192.as_tensor().broadcast_add(&b), &g192))?;
    time("bias add fwd+bwd [6000,192]", || fwd_bwd(fused::add_bias(x192.as_tensor(), &b), &g192))?;
    time("attention fwd [6000,192] seq 6 heads 4", || fused::attention(x192.as_tensor(), 6, 4).map(drop))?;
    time("attention fwd+bwd", || fwd_bwd(fused::attention(x192.as_tensor(), 6, 4), &g64))?;
    time("matmul [6000,64]x[64,192] fwd", || x64.as_tensor().matmul(&w).map(drop))?;
    time("matmul fwd+bwd", || fwd_bwd(x64.as_tensor().matmul(&w), &g192))?;
    time("residual add fwd+bwd [6000,64]", || fwd_bwd(x64.as_tensor() + x64.as_tensor().affine(1.0, 0.0)?, &g64))?;
    time("harness alone [6000,192]", || fwd_bwd(Ok(x192.as_tensor().clone()), &g192))?;
    Ok(())
}

#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;
