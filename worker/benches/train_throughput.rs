//! Training and scoring throughput of the Candle models, side by side with an equivalent
//! PyTorch CPU script (`torch_reference.py`) in one run. Not a timed test: it prints.
//!
//! ```text
//! python3 -m venv .venv-bench && .venv-bench/bin/pip install torch numpy   # once
//! cargo bench -p wf-worker --bench train_throughput
//! ```
//!
//! Shapes: 1,000 stocks per day, 252 days, 64 features, MLP 64 → 128 → 64 → 4 heads,
//! one day per step, the product's own `train()` (batches built once per job, 0.1
//! ListNet + 1.0 MSE, AdamW, clipping). Per-epoch time = (time of 1 + N epochs − time of
//! 1 epoch) / N, so batch building and start-up are not counted. `WF_TORCH_PYTHON` names
//! the Python with torch (default `.venv-bench/bin/python`); without it the reference is
//! skipped with a printed reason. Threads: `RAYON_NUM_THREADS` for Candle, the same count
//! for torch.

use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use wf_shared::Panel;
use wf_shared::calendar::TradingCalendar;
use wf_shared::panel::PanelParts;
use wf_worker::model::{Activation, ModelSpec, TrainParams, build};
use wf_worker::train::{TrainRequest, score_day, train};

const STOCKS: usize = 1000;
const DAYS: usize = 252;
const FEATURES: usize = 64;
const HIDDEN: [usize; 2] = [128, 64];
const HORIZONS: [u32; 4] = [1, 5, 10, 20];
const EPOCHS: u32 = 3;
/// Measured sgemm peak of this 2-core machine (FINDINGS.md).
const PEAK_GFLOPS: f64 = 178.0;

fn random_panel() -> Panel {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let rows = STOCKS * DAYS;
    let start = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default();
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let parts = PanelParts {
        calendar: TradingCalendar::business_days(start, DAYS),
        codes: (0..STOCKS).map(|s| format!("S{s:04}")).collect(),
        day: (0..rows).map(|r| (r / STOCKS) as u32).collect(),
        stock: (0..rows).map(|r| (r % STOCKS) as u32).collect(),
        feature_names: (0..FEATURES).map(|f| format!("f{f}")).collect(),
        features: (0..FEATURES).map(|_| (0..rows).map(|_| normal() as f32).collect()).collect(),
        horizons: HORIZONS.to_vec(),
        targets: (0..HORIZONS.len()).map(|_| (0..rows).map(|_| 0.02 * normal()).collect()).collect(),
    };
    Panel::new(parts).unwrap_or_else(|e| panic!("benchmark panel: {e}"))
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let panel = random_panel();
    let spec = ModelSpec::Mlp {
        hidden: HIDDEN.to_vec(),
        activation: Activation::Relu,
        dropout: 0.1,
        train: TrainParams { validation_days: 0, patience: 1000, warmup_steps: 1, ..TrainParams::default() },
    };
    let device = Device::Cpu;
    let weights = vec![0.25; HORIZONS.len()];
    let time_epochs = |epochs: u32| -> f64 {
        let model = build(&spec, FEATURES, HORIZONS.len(), 7, &device).unwrap_or_else(|e| panic!("model: {e}"));
        let params = TrainParams { epochs, ..spec.train_params().clone() };
        let request = TrainRequest {
            panel: &panel,
            window: 0..DAYS,
            horizons: &HORIZONS,
            horizon_weights: &weights,
            params: &params,
            seed: 7,
        };
        let started = Instant::now();
        train(model.as_ref(), &request, &device).unwrap_or_else(|e| panic!("train: {e}"));
        started.elapsed().as_secs_f64()
    };
    let one = time_epochs(1);
    let many = time_epochs(1 + EPOCHS);
    let per_epoch = (many - one) / f64::from(EPOCHS);
    let candle_train = (STOCKS * DAYS) as f64 / per_epoch;

    let model = build(&spec, FEATURES, HORIZONS.len(), 7, &device).unwrap_or_else(|e| panic!("model: {e}"));
    let started = Instant::now();
    for day in 0..DAYS {
        score_day(model.as_ref(), &panel, day, 0, &device).unwrap_or_else(|e| panic!("score: {e}"));
    }
    let candle_score = DAYS as f64 / started.elapsed().as_secs_f64();
    // Forward FLOPs of one stock, x3 for forward + backward.
    let sizes: Vec<usize> = std::iter::once(FEATURES).chain(HIDDEN).chain(std::iter::once(HORIZONS.len())).collect();
    let flops_per_stock = 3.0 * sizes.windows(2).map(|w| 2.0 * (w[0] * w[1]) as f64).sum::<f64>();
    let gflops = candle_train * flops_per_stock / 1e9;

    println!(
        "MLP {FEATURES} -> {HIDDEN:?} -> {} heads, {STOCKS} stocks x {DAYS} days, {threads} threads",
        HORIZONS.len()
    );
    println!(
        "{:<10} {:>22} {:>16} {:>12} {:>10}",
        "engine", "train stock-days/s", "score days/s", "peak MiB", "GFLOP/s"
    );
    println!(
        "{:<10} {:>22.0} {:>16.0} {:>12.0} {:>10.2}  ({:.1}% of {PEAK_GFLOPS} GFLOP/s peak)",
        "candle",
        candle_train,
        candle_score,
        peak_rss_mib(),
        gflops,
        gflops / PEAK_GFLOPS * 100.0
    );

    let python = std::env::var("WF_TORCH_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-bench/bin/python").to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_reference.py");
    let hidden = HIDDEN.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let args = [STOCKS, DAYS, FEATURES, HIDDEN[0], HORIZONS.len(), threads, EPOCHS as usize].map(|a| a.to_string());
    match Command::new(&python).arg(script).args(&args).arg(&hidden).output() {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let Ok(result) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
                println!("pytorch    reference printed no result: {text}");
                return;
            };
            let torch_train = result["train_stock_days_per_s"].as_f64().unwrap_or(f64::NAN);
            let torch_score = result["score_days_per_s"].as_f64().unwrap_or(f64::NAN);
            let torch_gflops = torch_train * flops_per_stock / 1e9;
            println!(
                "{:<10} {:>22.0} {:>16.0} {:>12.0} {:>10.2}  (torch {})",
                "pytorch",
                torch_train,
                torch_score,
                result["peak_mib"].as_f64().unwrap_or(f64::NAN),
                torch_gflops,
                result["torch"].as_str().unwrap_or("?")
            );
            println!(
                "candle / pytorch: training {:.2}x, scoring {:.2}x (target >= 1.0x)",
                candle_train / torch_train,
                candle_score / torch_score
            );
        }
        Ok(output) => println!(
            "pytorch    reference failed: {}",
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default()
        ),
        Err(error) => println!("pytorch    reference skipped: cannot run {python}: {error}"),
    }
}
