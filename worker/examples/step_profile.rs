//! Splits one MLP training step into parts and times each (1,000 stocks, 64 features):
//! `cargo run --release -p wf-worker --example step_profile`.
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wf_worker::model::{Activation, Mode, ModelSpec, TrainParams, build};

fn time(label: &str, steps: u32, mut f: impl FnMut()) {
    f();
    let started = Instant::now();
    for _ in 0..steps {
        f();
    }
    println!("{label:<40} {:>8.3} ms", started.elapsed().as_secs_f64() * 1e3 / f64::from(steps));
}

fn main() -> candle_core::Result<()> {
    let device = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (64, 1000), &device)?;
    let y = Tensor::randn(0f32, 1.0, (4, 1000), &device)?;
    for dropout in [0.0f32, 0.1] {
        let spec = ModelSpec::Mlp {
            hidden: vec![128, 64],
            activation: Activation::Relu,
            dropout,
            train: TrainParams::default(),
        };
        let model = build(&spec, &(0..64).map(|f| format!("f{f}")).collect::<Vec<_>>(), 4, 1, &device)?;
        let vars: Vec<_> = model.variables().into_iter().map(|(_, v)| v).collect();
        let mut opt = AdamW::new(vars.clone(), ParamsAdamW::default())?;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        println!("dropout {dropout}");
        time("forward eval", 200, || drop(model.forward(&x, Mode::Eval)));
        time("forward train", 200, || drop(model.forward(&x, Mode::Train(&mut rng))));
        time("forward + mse backward", 200, || {
            let s = model.forward(&x, Mode::Train(&mut rng)).and_then(|s| s.sub(&y)?.sqr()?.mean_all());
            drop(s.and_then(|l| l.backward()));
        });
        time("forward + backward + adamw", 200, || {
            let s = model.forward(&x, Mode::Train(&mut rng)).and_then(|s| s.sub(&y)?.sqr()?.mean_all());
            if let Ok(grads) = s.and_then(|l| l.backward()) {
                drop(opt.step(&grads));
            }
        });
    }
    let a = Tensor::randn(0f32, 1.0, (1000, 128), &device)?;
    let b = Tensor::randn(0f32, 1.0, (128, 64), &device)?;
    time("matmul 1000x128 @ 128x64", 200, || drop(a.matmul(&b)));
    let at = Tensor::randn(0f32, 1.0, (1000, 64), &device)?;
    time("matmul (1000x128)^T @ 1000x64", 200, || drop(a.t().and_then(|t| t.matmul(&at))));
    time("relu 1000x128", 200, || drop(a.relu()));
    time("sum_keepdim(0) 1000x128", 200, || drop(a.sum_keepdim(0)));
    time("sum_keepdim(1) 1000x128", 200, || drop(a.sum_keepdim(1)));
    let ones = Tensor::ones((1, 1000), candle_core::DType::F32, &device)?;
    time("ones(1x1000) @ 1000x128", 200, || drop(ones.matmul(&a)));
    time("mul 1000x128", 200, || drop(a.mul(&a)));
    time("ge(0) 1000x128", 200, || drop(a.ge(0f64)));
    let bias = Tensor::randn(0f32, 1.0, 128, &device)?;
    time("broadcast_add bias 1000x128", 200, || drop(a.broadcast_add(&bias)));
    let w = candle_core::Var::from_tensor(&b)?;
    time("matmul fwd+bwd only", 200, || {
        let l = at.t().and_then(|t| t.matmul(a.as_ref())).ok();
        drop(l);
        let out = a.matmul(w.as_tensor()).and_then(|o| o.sum_all());
        drop(out.and_then(|o| o.backward()));
    });
    let bv = candle_core::Var::from_tensor(&bias)?;
    time("broadcast_add fwd+bwd", 200, || {
        let out = a.broadcast_add(bv.as_tensor()).and_then(|o| o.sum_all());
        drop(out.and_then(|o| o.backward()));
    });
    time("relu fwd+bwd (var input)", 200, || {
        let av = candle_core::Var::from_tensor(&a).ok();
        if let Some(av) = av {
            let out = av.as_tensor().relu().and_then(|o| o.sum_all());
            drop(out.and_then(|o| o.backward()));
        }
    });
    Ok(())
}
