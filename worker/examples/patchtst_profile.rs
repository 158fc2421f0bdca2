//! Times the PatchTST of the training bench (1,000 stocks, 64 features, lookback 60, patch
//! 10, d_model 64, 2 layers, 4 heads) and its parts, then the MLP's 32-day scoring pass:
//! `RAYON_NUM_THREADS=2 cargo run --release -p wf-worker --example patchtst_profile`.
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wf_worker::model::{Activation, Mode, ModelSpec, TrainParams, build, fused};

/// As the `wf` binaries: Candle's per-tensor allocations are slow with glibc's malloc.
#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

fn time(label: &str, steps: u32, mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<()> {
    f()?;
    let started = Instant::now();
    for _ in 0..steps {
        f()?;
    }
    println!("{label:<48} {:>8.3} ms", started.elapsed().as_secs_f64() * 1e3 / f64::from(steps));
    Ok(())
}

fn main() -> candle_core::Result<()> {
    wf_worker::allocator::keep_freed_memory();
    let device = Device::Cpu;
    let random = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &device);
    let zeros = |width: usize| Tensor::zeros(width, DType::F32, &device);

    let spec = ModelSpec::Patchtst {
        lookback: 60,
        patch: 10,
        d_model: 64,
        layers: 2,
        heads: 4,
        feed_forward: 128,
        train: TrainParams::default(),
    };
    let model = build(&spec, &(0..64).map(|f| format!("f{f}")).collect::<Vec<_>>(), 4, 7, &device)?;
    let window = random(&[60 * 64, 1000])?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    time("patchtst forward, eval", 20, || model.forward(&window, Mode::Eval).map(|_| ()))?;
    time("patchtst forward and backward, train", 10, || {
        model.forward(&window, Mode::Train(&mut rng))?.sum_all()?.backward().map(|_| ())
    })?;

    // The parts, on one row per (stock, patch): [6000, d].
    let embedding = random(&[64, 640])?;
    time("embedding products 6 x [64, 640] . [640, 1000]", 20, || {
        for p in 0..6 {
            fused::matmul(&embedding, &window.narrow(0, p * 640, 640)?)?;
        }
        Ok(())
    })?;
    let stacked = random(&[6, 64, 1000])?;
    time("permute [6, 64, 1000] -> [1000, 6, 64]", 20, || stacked.permute((2, 0, 1))?.contiguous().map(|_| ()))?;
    let (h, wide, qkv) = (random(&[6000, 64])?, random(&[6000, 128])?, random(&[6000, 192])?);
    let (qkv_weight, output, expand, contract) =
        (random(&[64, 192])?, random(&[64, 64])?, random(&[64, 128])?, random(&[128, 64])?);
    let (scale, shift) = (Tensor::ones(64, DType::F32, &device)?, zeros(64)?);
    let (b64, b128, b192) = (zeros(64)?, zeros(128)?, zeros(192)?);
    time("layer norm [6000, 64]", 20, || fused::layer_norm(&h, &scale, &shift).map(|_| ()))?;
    time("qkv product [6000, 64] . [64, 192]", 20, || fused::matmul(&h, &qkv_weight).map(|_| ()))?;
    time("bias add [6000, 192]", 20, || fused::add_bias(&qkv, &b192).map(|_| ()))?;
    time("attention [6000, 192], 4 heads", 20, || fused::attention(&qkv, 6, 4).map(|_| ()))?;
    time("output product [6000, 64] . [64, 64]", 20, || fused::matmul(&h, &output).map(|_| ()))?;
    time("residual add [6000, 64]", 20, || (&h + &h).map(|_| ()))?;
    time("expand product [6000, 64] . [64, 128]", 20, || fused::matmul(&h, &expand).map(|_| ()))?;
    time("gelu [6000, 128]", 20, || fused::gelu(&wide).map(|_| ()))?;
    time("contract product [6000, 128] . [128, 64]", 20, || fused::matmul(&wide, &contract).map(|_| ()))?;
    time("one encoder layer of these", 20, || {
        let normed = fused::layer_norm(&h, &scale, &shift)?;
        let qkv = fused::add_bias(&fused::matmul(&normed, &qkv_weight)?, &b192)?;
        let x = (&h + fused::add_bias(&fused::matmul(&fused::attention(&qkv, 6, 4)?, &output)?, &b64)?)?;
        let normed = fused::layer_norm(&x, &scale, &shift)?;
        let expanded = fused::gelu(&fused::add_bias(&fused::matmul(&normed, &expand)?, &b128)?)?;
        (&x + fused::add_bias(&fused::matmul(&expanded, &contract)?, &b64)?).map(|_| ())
    })?;
    time("pooling: fused::group_mean [6000, 64] -> [1000, 64]", 20, || fused::group_mean(&h, 6).map(|_| ()))?;
    let grouped = h.reshape((1000, 6, 64))?;
    time("pooling: Candle's mean(1) [1000, 6, 64]", 20, || grouped.mean(1).map(|_| ()))?;

    // The MLP's scoring: 32 days of 1,000 stocks in one forward pass.
    let mlp = ModelSpec::Mlp {
        hidden: vec![128, 64],
        activation: Activation::Relu,
        dropout: 0.1,
        train: TrainParams::default(),
    };
    let mlp = build(&mlp, &(0..64).map(|f| format!("f{f}")).collect::<Vec<_>>(), 4, 7, &device)?;
    let batch = random(&[64, 32_000])?;
    time("mlp forward, eval, 32 days [64, 32000]", 10, || mlp.forward(&batch, Mode::Eval).map(|_| ()))?;
    let (first, second) = (random(&[128, 64])?, random(&[64, 128])?);
    time("mlp first product [128, 64] . [64, 32000]", 10, || fused::matmul(&first, &batch).map(|_| ()))?;
    let hidden = first.matmul(&batch)?;
    let bias = Tensor::zeros((128, 1), DType::F32, &device)?;
    time("mlp hidden layer [128, 32000]", 10, || {
        fused::hidden_layer(&hidden, &bias, Activation::Relu, None).map(|_| ())
    })?;
    time("mlp second product [64, 128] . [128, 32000]", 10, || fused::matmul(&second, &hidden).map(|_| ()))?;
    Ok(())
}
