//! Training and scoring throughput of the Candle models, side by side with an equivalent
//! PyTorch CPU script (`torch_reference.py`) in one run. Not a timed test: it prints.
//!
//! ```text
//! python3 -m venv .venv-bench && .venv-bench/bin/pip install torch numpy   # once
//! cargo bench -p wf-worker --bench train_throughput
//! ```
//!
//! Shapes: 1,000 stocks per day, 64 features, 4 horizons; MLP 64 → 128 → 64 → 4 over 252
//! days (also at 4,000 stocks, the whole-market universe: `WF_BENCH_STOCKS=1000,4000`, the
//! default, lists the counts; the rate per stock-day should not fall as stocks grow), and
//! PatchTST at the first count (lookback 60, patch 10, d_model 64, 2 layers, 4 heads) over
//! 40 days per epoch. One day per step, the product's own `train()` (batches built once per job,
//! 0.1 ListNet + 1.0 MSE, AdamW, clipping). Per-epoch time = (time of 1 + N epochs − time
//! of 1 epoch) / N, so batch building and start-up are not counted. `WF_TORCH_PYTHON` names
//! the Python with torch (default `.venv-bench/bin/python`); without it the reference is
//! skipped with a printed reason. Threads: `RAYON_NUM_THREADS` for Candle, the same count
//! for torch. `WF_BENCH_MODELS=mlp` (or `patchtst`) runs one model only. Each side runs
//! `WF_BENCH_REPEATS` times (default 3), alternating, and the medians are printed. The MLP
//! also runs with Candle's autograd in place of its own backward (`model::Tape`), side by
//! side: the same gradients, what the tape saves.
//! `WF_BENCH_DEVICE=cuda:0` (with `--features cuda`) runs both sides on the GPU instead.

use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use wf_shared::Panel;
use wf_shared::calendar::TradingCalendar;
use wf_shared::panel::PanelParts;
use wf_worker::WorkerError;
use wf_worker::device::DeviceChoice;
use wf_worker::model::{Activation, Mode, ModelSpec, Ranker, TrainParams, build};
use wf_worker::train::{TrainRequest, score_range, train};

/// As the `wf` binaries (see `wf_worker::allocator`): glibc's malloc made training 4-5x
/// slower.
#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

const DAYS: usize = 252;
const FEATURES: usize = 64;
const HIDDEN: [usize; 2] = [128, 64];
const HORIZONS: [u32; 4] = [1, 5, 10, 20];
const EPOCHS: u32 = 3;
/// PatchTST steps are ~100x dearer: one epoch of this many days is timed.
const PATCHTST_DAYS: usize = 40;
/// Measured sgemm peak of this 2-core machine (FINDINGS.md).
const PEAK_GFLOPS: f64 = 178.0;

fn random_panel(stocks: usize) -> Panel {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let days = DAYS + 60;
    let rows = stocks * days;
    let start = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default();
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let parts = PanelParts {
        calendar: TradingCalendar::business_days(start, days),
        codes: (0..stocks).map(|s| format!("S{s:04}")).collect(),
        day: (0..rows).map(|r| (r / stocks) as u32).collect(),
        stock: (0..rows).map(|r| (r % stocks) as u32).collect(),
        feature_names: (0..FEATURES).map(|f| format!("f{f}")).collect(),
        features: (0..FEATURES).map(|_| (0..rows).map(|_| normal() as f32).collect()).collect(),
        horizons: HORIZONS.to_vec(),
        targets: (0..HORIZONS.len()).map(|_| (0..rows).map(|_| 0.02 * normal()).collect()).collect(),
        adv: None,
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

/// One model's measurement.
struct Figures {
    train: f64,
    score: f64,
    gflops: f64,
}

/// A model trained through Candle's autograd: the calls `train()` makes go to the model
/// itself, except [`Ranker::forward_taped`] (the default: none).
struct Autograd(Box<dyn Ranker>);

impl Ranker for Autograd {
    fn forward(&self, features: &Tensor, mode: Mode<'_>) -> candle_core::Result<Tensor> {
        self.0.forward(features, mode)
    }

    fn forward_columns(
        &self,
        window: &Tensor,
        columns: Option<&Tensor>,
        mode: Mode<'_>,
    ) -> candle_core::Result<Tensor> {
        self.0.forward_columns(window, columns, mode)
    }

    fn lookback(&self) -> usize {
        self.0.lookback()
    }

    fn variables(&self) -> Vec<(String, Var)> {
        self.0.variables()
    }
}

/// Candle: per-epoch time of the product's `train()`, and scoring through `score_day`;
/// with `autograd`, the gradients through Candle's autograd rather than the model's own.
fn candle(
    spec: &ModelSpec,
    panel: &Panel,
    days: usize,
    epochs: u32,
    flops_per_stock: f64,
    autograd: bool,
    device: &Device,
) -> Figures {
    let weights = vec![0.25; HORIZONS.len()];
    let lookback = build(spec, panel.feature_names(), HORIZONS.len(), 7, device).map(|m| m.lookback()).unwrap_or(1);
    let window = lookback - 1..lookback - 1 + days;
    let time_epochs = |epochs: u32| -> f64 {
        let mut model =
            build(spec, panel.feature_names(), HORIZONS.len(), 7, device).unwrap_or_else(|e| panic!("model: {e}"));
        if autograd {
            model = Box::new(Autograd(model));
        }
        let params = TrainParams { epochs, ..spec.train_params().cloned().unwrap_or_default() };
        let request = TrainRequest {
            panel,
            window: window.clone(),
            horizons: &HORIZONS,
            horizon_weights: &weights,
            params: &params,
            seed: 7,
            stop: None,
        };
        let started = Instant::now();
        train(model.as_ref(), &request, device).unwrap_or_else(|e| panic!("train: {e}"));
        started.elapsed().as_secs_f64()
    };
    let one = time_epochs(1);
    let per_epoch = (time_epochs(1 + epochs) - one) / f64::from(epochs);
    let model = build(spec, panel.feature_names(), HORIZONS.len(), 7, device).unwrap_or_else(|e| panic!("model: {e}"));
    let started = Instant::now();
    score_range(model.as_ref(), panel, window.clone(), 0, device).unwrap_or_else(|e| panic!("score: {e}"));
    let train_rate = (panel.codes().len() * days) as f64 / per_epoch;
    Figures {
        train: train_rate,
        score: days as f64 / started.elapsed().as_secs_f64(),
        gflops: train_rate * flops_per_stock / 1e9,
    }
}

/// PyTorch: the reference script, or why it did not run.
/// `(stocks, days)`: the stocks of each day and the days of an epoch.
fn pytorch(
    (stocks, days): (usize, usize),
    device: &str,
    kind: &str,
    shape: &str,
    epochs: u32,
    threads: usize,
    flops_per_stock: f64,
) -> Result<(Figures, String), String> {
    let python = std::env::var("WF_TORCH_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-bench/bin/python").to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_reference.py");
    let args = [stocks, days, FEATURES, HORIZONS.len(), threads, epochs as usize].map(|a| a.to_string());
    let output = Command::new(&python)
        .arg(script)
        .arg(kind)
        .args(&args)
        .arg(shape)
        .arg(device)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default().to_string());
    }
    let result: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim())
        .map_err(|e| format!("unreadable result: {e}"))?;
    let train_rate = result["train_stock_days_per_s"].as_f64().unwrap_or(f64::NAN);
    let figures = Figures {
        train: train_rate,
        score: result["score_days_per_s"].as_f64().unwrap_or(f64::NAN),
        gflops: train_rate * flops_per_stock / 1e9,
    };
    Ok((figures, result["torch"].as_str().unwrap_or("?").to_string()))
}

/// Runs both sides `repeats` times, alternating, and keeps each figure's median: this
/// machine's speed drifts by ±20% from minute to minute, and alternating exposes both
/// sides to the same drift.
fn alternate(
    repeats: usize,
    mut run: impl FnMut() -> (Figures, Result<(Figures, String), String>),
) -> (Figures, Result<(Figures, String), String>) {
    let (mut ours, mut theirs, mut failure, mut version) = (Vec::new(), Vec::new(), None, String::new());
    for _ in 0..repeats {
        let (candle, reference) = run();
        ours.push(candle);
        match reference {
            Ok((figures, v)) => {
                theirs.push(figures);
                version = v;
            }
            Err(reason) => failure = Some(reason),
        }
    }
    let reference = match failure {
        Some(reason) => Err(reason),
        None => Ok((median(&theirs), version)),
    };
    (median(&ours), reference)
}

/// The median of each figure separately.
fn median(runs: &[Figures]) -> Figures {
    let middle = |pick: fn(&Figures) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Figures { train: middle(|f| f.train), score: middle(|f| f.score), gflops: middle(|f| f.gflops) }
}

/// `gflops` as a share of this machine's CPU peak (nothing on a GPU).
fn of_peak(gflops: f64, on_cpu: bool) -> String {
    if on_cpu { format!("({:.1}% of {PEAK_GFLOPS} GFLOP/s)", gflops / PEAK_GFLOPS * 100.0) } else { String::new() }
}

fn report(
    name: &str,
    candle: &Figures,
    reference: Result<(Figures, String), String>,
    on_cpu: bool,
    targets: &mut wf_shared::targets::Targets,
) {
    println!("{:<18} {:>22} {:>14} {:>9}", name, "train stock-days/s", "score days/s", "GFLOP/s");
    println!(
        "{:<18} {:>22.0} {:>14.1} {:>9.2}  {}",
        "  candle",
        candle.train,
        candle.score,
        candle.gflops,
        of_peak(candle.gflops, on_cpu)
    );
    match reference {
        Ok((torch, version)) => {
            println!(
                "{:<18} {:>22.0} {:>14.1} {:>9.2}  {} torch {version}",
                "  pytorch",
                torch.train,
                torch.score,
                torch.gflops,
                of_peak(torch.gflops, on_cpu)
            );
            let (train, score) = (candle.train / torch.train, candle.score / torch.score);
            println!(
                "  candle / pytorch: training {train:.2}x: {}, scoring {score:.2}x: {} (target >= 1.0x)",
                targets.at_least(&format!("{name}: training vs torch"), train, 1.0),
                targets.at_least(&format!("{name}: scoring vs torch"), score, 1.0)
            );
        }
        Err(reason) => println!("  pytorch reference skipped: {reason}"),
    }
}

#[allow(unsafe_code)]
fn main() {
    wf_worker::allocator::keep_freed_memory();
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    // As `wf` does: without RAYON_NUM_THREADS candle parses /proc/cpuinfo on every matrix
    // product, which halved the MLP's training throughput here (0.22x vs 0.48x PyTorch).
    // SAFETY: the first statement of `main` after reading the environment: no other
    // thread exists yet.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    // As `wf` does too (see `wf_worker::threads::env_for`): candle's element-wise pool
    // spins less after each op and leaves the cores to the matrix products.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: as above, no other thread exists yet.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000") };
    }
    let (device, torch_device) = match std::env::var("WF_BENCH_DEVICE") {
        Err(_) => (Device::Cpu, "cpu"),
        Ok(text) => match text.parse::<DeviceChoice>().map_err(WorkerError::Device).and_then(DeviceChoice::device) {
            Ok(Device::Cpu) => (Device::Cpu, "cpu"),
            Ok(device) => (device, "cuda"),
            Err(error) => {
                eprintln!("WF_BENCH_DEVICE={text}: {error}");
                std::process::exit(2);
            }
        },
    };
    let on_cpu = device.is_cpu();
    let counts: Vec<usize> = std::env::var("WF_BENCH_STOCKS")
        .unwrap_or_else(|_| "1000,4000".into())
        .split(',')
        .map(|count| count.trim().parse().ok().filter(|c: &usize| *c >= 2))
        .collect::<Option<_>>()
        .unwrap_or_else(|| {
            eprintln!("WF_BENCH_STOCKS: a comma-separated list of stock counts of at least 2");
            std::process::exit(2);
        });
    let panels: Vec<Panel> = counts.iter().map(|stocks| random_panel(*stocks)).collect();
    let train = TrainParams { validation_days: 0, patience: 1000, warmup_steps: 1, ..TrainParams::default() };
    println!(
        "{FEATURES} features, {} horizons, {threads} threads, on {torch_device}; one day (all its stocks) per step",
        HORIZONS.len()
    );

    let mlp =
        ModelSpec::Mlp { hidden: HIDDEN.to_vec(), activation: Activation::Relu, dropout: 0.1, train: train.clone() };
    let sizes: Vec<usize> = std::iter::once(FEATURES).chain(HIDDEN).chain(std::iter::once(HORIZONS.len())).collect();
    // Forward FLOPs per stock, x3 for forward + backward.
    let mlp_flops = 3.0 * sizes.windows(2).map(|w| 2.0 * (w[0] * w[1]) as f64).sum::<f64>();
    let only = std::env::var("WF_BENCH_MODELS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|m| m == name);
    let repeats: usize = std::env::var("WF_BENCH_REPEATS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let mut targets = wf_shared::targets::Targets::default();
    if wanted("mlp") {
        let mut first_rate = None;
        for (stocks, panel) in counts.iter().zip(&panels) {
            let (figures, reference) = alternate(repeats, || {
                (
                    candle(&mlp, panel, DAYS, EPOCHS, mlp_flops, false, &device),
                    pytorch((*stocks, DAYS), torch_device, "mlp", "128,64", EPOCHS, threads, mlp_flops),
                )
            });
            let (autograd, _) = alternate(repeats, || {
                (candle(&mlp, panel, DAYS, EPOCHS, mlp_flops, true, &device), Err("not run".into()))
            });
            let name = format!("mlp {FEATURES}-128-64-{}, {stocks} stocks", HORIZONS.len());
            report(&name, &figures, reference, on_cpu, &mut targets);
            println!(
                "  candle through autograd: {:.0} train stock-days/s; the model's own backward is {:.2}x faster",
                autograd.train,
                figures.train / autograd.train
            );
            match first_rate {
                None => first_rate = Some((*stocks, figures.train)),
                Some((base, rate)) => println!(
                    "  per stock-day, {stocks} stocks train at {:.2}x the rate of {base} (target >= 1.0x): {}",
                    figures.train / rate,
                    targets.at_least(&format!("{stocks} stocks' training rate vs {base}"), figures.train / rate, 1.0)
                ),
            }
        }
    }

    let (lookback, patch, d, layers, heads) = (60usize, 10usize, 64usize, 2usize, 4usize);
    let patchtst = ModelSpec::Patchtst { lookback, patch, d_model: d, layers, heads, feed_forward: 2 * d, train };
    let patches = (lookback / patch) as f64;
    let (df, pf) = (d as f64, (patch * FEATURES) as f64);
    let per_layer = patches * (2.0 * df * 3.0 * df + 2.0 * df * df + 2.0 * 2.0 * df * 2.0 * df)
        + 2.0 * 2.0 * patches * patches * df;
    let patchtst_flops = 3.0 * (patches * 2.0 * pf * df + layers as f64 * per_layer + 2.0 * df * HORIZONS.len() as f64);
    if wanted("patchtst") {
        let (days, stocks, panel) = (PATCHTST_DAYS, counts[0], &panels[0]);
        let shape = format!("{lookback},{patch},{d},{layers},{heads}");
        let (figures, reference) = alternate(repeats, || {
            (
                candle(&patchtst, panel, days, 1, patchtst_flops, false, &device),
                pytorch((stocks, days), torch_device, "patchtst", &shape, 1, threads, patchtst_flops),
            )
        });
        let name = format!("patchtst L{lookback} p{patch} d{d} x{layers} h{heads}, {stocks} stocks");
        report(&name, &figures, reference, on_cpu, &mut targets);
    }
    println!("peak memory of this process (candle side): {:.0} MiB", peak_rss_mib());
    println!("{}", targets.summary());
    std::process::exit(targets.exit_code());
}
