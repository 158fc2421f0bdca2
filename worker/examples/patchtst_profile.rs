//! Times a PatchTST forward pass (eval) and some of its parts at the benchmark's shapes
//! (1,000 stocks, 64 features, lookback 60, patch 10, d_model 64, 2 layers, 4 heads):
//! `RAYON_NUM_THREADS=2 cargo run --release -p wf-worker --example patchtst_profile`.
use std::time::Instant;

use candle_core::{Device, Tensor};
use wf_worker::model::{Mode, ModelSpec, TrainParams, build};

#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

fn time(label: &str, steps: u32, mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<()> {
    f()?;
    let started = Instant::now();
    for _ in 0..steps {
        f()?;
    }
    println!("{label:<44} {:>8.3} ms", started.elapsed().as_secs_f64() * 1e3 / f64::from(steps));
    Ok(())
}

fn main() -> candle_core::Result<()> {
    wf_worker::allocator::keep_freed_memory();
    let device = Device::Cpu;
    let spec = ModelSpec::Patchtst {
        lookback: 60,
        patch: 10,
        d_model: 64,
        layers: 2,
        heads: 4,
        feed_forward: 128,
        train: TrainParams::default(),
    };
    let mlp = ModelSpec::Mlp {
        hidden: vec![128, 64],
        activation: wf_worker::model::Activation::Relu,
        dropout: 0.1,
        train: TrainParams::default(),
    };
    let mlp = build(&mlp, 64, 4, 7, &device)?;
    let batch = Tensor::randn(0f32, 1.0, (64, 32_000), &device)?;
    time("mlp forward, eval, 32 days [64, 32000]", 10, || mlp.forward(&batch, Mode::Eval).map(|_| ()))?;
    let w1 = Tensor::randn(0f32, 1.0, (128, 64), &device)?;
    time("mlp first product [128, 64] . [64, 32000]", 10, || w1.matmul(&batch).map(|_| ()))?;
    let h1 = w1.matmul(&batch)?;
    let b1 = Tensor::zeros((128, 1), candle_core::DType::F32, &device)?;
    time("mlp hidden layer [128, 32000]", 10, || {
        wf_worker::model::fused::hidden_layer(&h1, &b1, wf_worker::model::Activation::Relu, None).map(|_| ())
    })?;
    let w2 = Tensor::randn(0f32, 1.0, (64, 128), &device)?;
    time("mlp second product [64, 128] . [128, 32000]", 10, || w2.matmul(&h1).map(|_| ()))?;
    let model = build(&spec, 64, 4, 7, &device)?;
    let window = Tensor::randn(0f32, 1.0, (60 * 64, 1000), &device)?;
    time("forward, eval", 20, || model.forward(&window, Mode::Eval).map(|_| ()))?;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    time("forward, train", 20, || model.forward(&window, Mode::Train(&mut rng)).map(|_| ()))?;
    time("forward and backward, train", 10, || {
        model.forward(&window, Mode::Train(&mut rng))?.sum_all()?.backward().map(|_| ())
    })?;
    let qkv = Tensor::randn(0f32, 1.0, (6000, 192), &device)?;
    time("attention [6000, 192], 4 heads", 20, || wf_worker::model::fused::attention(&qkv, 6, 4).map(|_| ()))?;
    use wf_worker::model::fused;
    let q = Tensor::randn(0f32, 1.0, (64, 192), &device)?;
    let h = Tensor::randn(0f32, 1.0, (6000, 64), &device)?;
    let (scale, shift) =
        (Tensor::ones(64, candle_core::DType::F32, &device)?, Tensor::zeros(64, candle_core::DType::F32, &device)?);
    let wide = Tensor::randn(0f32, 1.0, (6000, 128), &device)?;
    let (b64, b128, b192) = (
        Tensor::zeros(64, candle_core::DType::F32, &device)?,
        Tensor::zeros(128, candle_core::DType::F32, &device)?,
        Tensor::zeros(192, candle_core::DType::F32, &device)?,
    );
    time("layer norm [6000, 64]", 20, || fused::layer_norm(&h, &scale, &shift).map(|_| ()))?;
    time("bias add [6000, 192]", 20, || fused::add_bias(&qkv, &b192).map(|_| ()))?;
    time("bias add [6000, 64]", 20, || fused::add_bias(&h, &b64).map(|_| ()))?;
    time("gelu [6000, 128]", 20, || fused::gelu(&wide).map(|_| ()))?;
    let w128 = Tensor::randn(0f32, 1.0, (64, 128), &device)?;
    let w64 = Tensor::randn(0f32, 1.0, (128, 64), &device)?;
    time("expand [6000, 64] . [64, 128]", 20, || fused::matmul(&h, &w128).map(|_| ()))?;
    time("contract [6000, 128] . [128, 64]", 20, || fused::matmul(&wide, &w64).map(|_| ()))?;
    let w6464 = Tensor::randn(0f32, 1.0, (64, 64), &device)?;
    time("output [6000, 64] . [64, 64]", 20, || fused::matmul(&h, &w6464).map(|_| ()))?;
    time("one encoder layer, composed here", 20, || {
        let qkv = fused::add_bias(&fused::matmul(&fused::layer_norm(&h, &scale, &shift)?, &q)?, &b192)?;
        let x = (&h + fused::add_bias(&fused::matmul(&fused::attention(&qkv, 6, 4)?, &w6464)?, &b64)?)?;
        let e = fused::gelu(&fused::add_bias(&fused::matmul(&fused::layer_norm(&x, &scale, &shift)?, &w128)?, &b128)?)?;
        (&x + fused::add_bias(&fused::matmul(&e, &w64)?, &b64)?).map(|_| ())
    })?;
    let x = Tensor::randn(0f32, 1.0, (1000, 6, 64), &device)?;
    time("mean over patches [1000, 6, 64] -> [1000, 64]", 20, || x.mean(1).map(|_| ()))?;
    let y = Tensor::randn(0f32, 1.0, (6, 64, 1000), &device)?;
    time("permute [6, 64, 1000] -> [1000, 6, 64]", 20, || y.permute((2, 0, 1))?.contiguous().map(|_| ()))?;
    let a = Tensor::randn(0f32, 1.0, (6000, 64), &device)?;
    time("residual add [6000, 64]", 20, || (&a + &a).map(|_| ()))?;
    let w = Tensor::randn(0f32, 1.0, (64, 640), &device)?;
    time("embedding products 6 x [64, 640] . [640, 1000]", 20, || {
        for p in 0..6 {
            w.matmul(&window.narrow(0, p * 640, 640)?)?;
        }
        Ok(())
    })?;
    let q = Tensor::randn(0f32, 1.0, (64, 192), &device)?;
    time("qkv product [6000, 64] . [64, 192]", 20, || a.matmul(&q).map(|_| ()))?;
    Ok(())
}
