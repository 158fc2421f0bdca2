//! The models on the synthetic market: real training, real scoring, real files.

use std::sync::OnceLock;

use candle_core::Device;
use wf_shared::bootstrap::Bootstrap;
use wf_shared::cadence::Cadence;
use wf_shared::plan::{Job, Plan, plan_panel};
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, Panel, PanelSpec, build_panel};
use wf_worker::WorkerError;
use wf_worker::artifact::{ArtifactMeta, load, save};
use wf_worker::job::run_job;
use wf_worker::model::{Mode, ModelSpec, build};
use wf_worker::train::{FeatureCube, day_batch, day_loss, score_day, score_range};

/// As the `wf` binaries (glibc's malloc trains several times slower; see `wf`'s main.rs).
#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

struct Market {
    panel: Panel,
    config: SweepConfig,
    plan: Plan,
    first_break: usize,
}

fn model(name: &str, kind: ModelKind, params: serde_json::Value) -> ModelConfig {
    let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
    ModelConfig { name: name.into(), kind, params, seeds: vec![3] }
}

/// The default synthetic market, planned quarterly with a 252-day window.
fn market() -> &'static Market {
    static MARKET: OnceLock<Market> = OnceLock::new();
    MARKET.get_or_init(|| {
        let synth = generate(&SynthSpec::default()).expect("valid spec");
        let first_break_date = synth.truth.breaks[0];
        let bars = Bars::new(synth.bars).expect("valid bars");
        let panel = build_panel(&bars, &PanelSpec { horizons: vec![1, 5] });
        let config = SweepConfig {
            selection: Default::default(),
            basis: Default::default(),
            name: "models".into(),
            panel: "synth:default".into(),
            content_hash: None,
            features: None,
            start: chrono::NaiveDate::from_ymd_opt(2022, 1, 3).expect("date"),
            end: chrono::NaiveDate::from_ymd_opt(2024, 6, 28).expect("date"),
            train_windows: vec![252],
            cadences: vec![Cadence::Quarterly],
            horizons: vec![1, 5],
            primary_horizon: 5,
            embargo: 0,
            max_age: 126,
            k: TopK::Count(20),
            bootstrap_samples: 500,
            bootstrap_seed: 7,
            models: vec![
                model("linear", ModelKind::Linear, serde_json::json!({"epochs": 15})),
                model("mlp", ModelKind::Mlp, serde_json::json!({"hidden": [32, 16], "dropout": 0.1, "epochs": 15})),
                model(
                    "patchtst",
                    ModelKind::Patchtst,
                    serde_json::json!({"lookback": 10, "patch": 5, "d_model": 16, "layers": 1, "heads": 2, "epochs": 10}),
                ),
            ],
            triggers: Default::default(),
            max_jobs: 1000,
            backtest: None,
            trainers: Default::default(),
        };
        let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
        let first_break = panel.calendar().index_of(first_break_date).expect("break on the calendar");
        Market { panel, config, plan, first_break }
    })
}

/// The latest job of `model` whose whole scoring range ends before the first break.
fn job_before_break(market: &Market, model: usize) -> &Job {
    market
        .plan
        .jobs
        .iter()
        .filter(|j| j.model == model && j.score_days.end + 5 <= market.first_break)
        .max_by_key(|j| j.retrain_day)
        .expect("a job scored entirely before the break")
}

/// Saves the model `job` trained to `path`, with its metadata (returned).
fn save_job_model(
    path: &std::path::Path,
    market: &Market,
    job: &Job,
    output: &wf_worker::job::JobOutput,
) -> ArtifactMeta {
    let meta = ArtifactMeta {
        job_key: job.key.to_string(),
        dataset: "synth:default".into(),
        spec: output.spec.clone(),
        features: market.panel.features().len(),
        feature_names: market.panel.feature_names().to_vec(),
        horizons: market.config.horizons.clone(),
        seed: job.seed,
    };
    save(path, output.ranker().expect("a built-in model"), &meta).expect("save");
    meta
}

#[test]
fn gathering_stocks_before_or_after_the_first_layer_gives_the_same_scores() {
    let market = market();
    for (index, config) in market.config.models.iter().enumerate() {
        let spec = ModelSpec::from_config(index, config, 2).expect("valid spec");
        let ranker = build(&spec, market.panel.feature_names(), 2, 1, &Device::Cpu).expect("model builds");
        let cube = FeatureCube::build(&market.panel, 400 - (ranker.lookback() - 1), 400, &Device::Cpu).expect("cube");
        let window = cube.window(400, ranker.lookback()).expect("window");
        let stocks = window.dim(1).expect("stocks");
        let odd: Vec<u32> = (0..stocks as u32).filter(|s| s % 2 == 1).rev().collect();
        let columns = candle_core::Tensor::from_vec(odd.clone(), odd.len(), &Device::Cpu).expect("columns");
        let late = ranker.forward_columns(&window, Some(&columns), Mode::Eval).expect("gather late");
        let early = ranker.forward(&window.index_select(&columns, 1).expect("gather"), Mode::Eval).expect("early");
        assert_eq!(late.dims(), &[2, odd.len()], "{}", config.name);
        let difference: f32 =
            (late - early).and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar()).expect("difference");
        assert!(difference < 1e-4, "{}: the two gathers differ by {difference}", config.name);
    }
}

#[test]
fn batched_scoring_equals_scoring_each_day_alone() {
    let market = market();
    for (index, config) in market.config.models.iter().enumerate() {
        let spec = ModelSpec::from_config(index, config, 2).expect("valid spec");
        let ranker = build(&spec, market.panel.feature_names(), 2, 1, &Device::Cpu).expect("model builds");
        let lookback = ranker.lookback();
        // 70 days: more than one batch of days for the models that batch them.
        let days = 400..470;
        let batched = score_range(ranker.as_ref(), &market.panel, days.clone(), 1, &Device::Cpu).expect("scores");
        let cube =
            FeatureCube::build(&market.panel, days.start + 1 - lookback, days.end - 1, &Device::Cpu).expect("cube");
        for (day, scores) in days.zip(&batched) {
            let rows = market.panel.rows_of_day(day);
            let stocks = market.panel.stock()[rows.clone()].to_vec();
            let stocks = candle_core::Tensor::from_vec(stocks, rows.len(), &Device::Cpu).expect("stocks");
            let alone: Vec<f32> = ranker
                .forward(&cube.input(day, &stocks, lookback).expect("input"), Mode::Eval)
                .and_then(|s| s.narrow(0, 1, 1)?.flatten_all()?.to_vec1())
                .expect("one day");
            assert_eq!(scores.len(), alone.len(), "{}: day {day}", config.name);
            for (a, b) in scores.iter().zip(&alone) {
                assert!((a - f64::from(*b)).abs() < 1e-4, "{}: day {day}: {a} vs {b}", config.name);
            }
        }
    }
}

#[test]
fn every_trainable_variable_receives_a_gradient() {
    let market = market();
    for (index, config) in market.config.models.iter().enumerate() {
        let spec = ModelSpec::from_config(index, config, 2).expect("valid spec");
        let ranker = build(&spec, market.panel.feature_names(), 2, 1, &Device::Cpu).expect("model builds");
        assert!(ranker.variables().len() >= 2, "a weight and a bias at least");
        let batch = day_batch(&market.panel, 400, &[1, 5], Default::default(), &Device::Cpu)
            .expect("batch")
            .expect("enough rows");
        let weights = candle_core::Tensor::from_vec(vec![0.5f32, 0.5], 2, &Device::Cpu).expect("weights");
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let cube = FeatureCube::build(&market.panel, 400 - (ranker.lookback() - 1), 400, &Device::Cpu).expect("cube");
        let input = cube.input(400, &batch.stocks, ranker.lookback()).expect("input");
        let scores = ranker.forward(&input, Mode::Train(&mut rng)).expect("forward");
        let grads = day_loss(&scores, &batch, spec.train_params().expect("a trained model"), &weights)
            .expect("loss")
            .backward()
            .expect("backward");
        for (name, variable) in ranker.variables() {
            let grad =
                grads.get(variable.as_tensor()).unwrap_or_else(|| panic!("{}: {name} has no gradient", config.name));
            let size: f32 = grad.abs().and_then(|g| g.sum_all()).and_then(|g| g.to_scalar()).expect("norm");
            assert!(size > 0.0, "{}: {name} has a zero gradient", config.name);
        }
    }
}

#[test]
fn loss_falls_and_out_of_sample_precision_before_the_break_is_positive() {
    let market = market();
    for model in 0..market.config.models.len() {
        let job = job_before_break(market, model);
        let output = run_job(&market.panel, &market.config, job, &Device::Cpu).expect("job runs");
        let name = &market.config.models[model].name;
        let history = &output.stats.history;
        assert!(history.last().expect("epochs").0 < history[0].0, "{name}: training loss did not fall: {history:?}");
        let deltas: Vec<f64> = output.ages.iter().map(|d| d.map_or(f64::NAN, |d| d.delta())).collect();
        let mean = deltas.iter().filter(|d| d.is_finite()).sum::<f64>()
            / deltas.iter().filter(|d| d.is_finite()).count() as f64;
        let interval = Bootstrap { block: 5, samples: 1000, seed: 7 }.mean_interval(&deltas).expect("interval");
        println!(
            "{name}: epochs {}, mean ΔP@K {mean:.4} [{:.4}, {:.4}]",
            output.stats.epochs, interval.low, interval.high
        );
        assert!(interval.low > 0.0, "{name}: ΔP@K interval {interval:?} does not exclude 0");
    }
}

#[test]
fn the_same_seed_gives_identical_scores_and_artifacts_reproduce_them() {
    let market = market();
    let job = job_before_break(market, 1);
    let first = run_job(&market.panel, &market.config, job, &Device::Cpu).expect("job runs");
    let second = run_job(&market.panel, &market.config, job, &Device::Cpu).expect("job runs");
    let day = job.score_days.start + 3;
    let scores =
        score_day(first.ranker().expect("a built-in model"), &market.panel, day, 1, &Device::Cpu).expect("scores");
    let again =
        score_day(second.ranker().expect("a built-in model"), &market.panel, day, 1, &Device::Cpu).expect("scores");
    assert!(scores.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()), "same seed, different scores");
    let range =
        score_range(first.ranker().expect("a built-in model"), &market.panel, day - 2..day + 1, 1, &Device::Cpu)
            .expect("scores");
    assert!(
        range[2].iter().zip(&scores).all(|(a, b)| a.to_bits() == b.to_bits()),
        "range and single-day scoring differ"
    );
    assert_eq!(first.ages, second.ages);
    assert_eq!(first.rankings, second.rankings);
    // The ranking kept for the day is its scores' order (positions in the day's rows, best
    // first; as universe indices in a run).
    let column = market.config.horizons.iter().position(|h| *h == market.config.primary_horizon).unwrap_or(0);
    let primary =
        score_day(first.ranker().expect("a built-in model"), &market.panel, day, column, &Device::Cpu).expect("scores");
    let stocks = &market.panel.stock()[market.panel.rows_of_day(day)];
    let kept = &wf_shared::age::universe_indices(&market.panel, day, &first.rankings[day - job.score_days.start]);
    assert_eq!(first.rankings.len(), first.ages.len());
    assert_eq!(kept, &wf_shared::backtest::top_ranked(&primary, stocks, 128));
    assert_eq!(kept.len(), stocks.len().min(128));
    let best = primary.iter().zip(stocks).max_by(|a, b| a.0.total_cmp(b.0)).map(|(_, s)| *s);
    assert_eq!(kept.first().copied(), best);

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    let meta = save_job_model(&path, market, job, &first);
    let (loaded, loaded_meta) = load(&path, &Device::Cpu).expect("load");
    assert_eq!(loaded_meta, meta);
    let reloaded = score_day(loaded.as_ref(), &market.panel, day, 1, &Device::Cpu).expect("scores");
    assert!(scores.iter().zip(&reloaded).all(|(a, b)| a.to_bits() == b.to_bits()), "loaded model scores differently");
    std::fs::write(&path, b"not a model").expect("overwrite");
    assert!(matches!(load(&path, &Device::Cpu), Err(WorkerError::Artifact { .. })));
}

#[test]
fn days_of_any_universe_size_with_null_features_are_scored() {
    let market = market();
    for (index, config) in market.config.models.iter().enumerate() {
        let spec = ModelSpec::from_config(index, config, 2).expect("valid spec");
        let ranker = build(&spec, market.panel.feature_names(), 2, 1, &Device::Cpu).expect("model builds");
        // Day 2: most features are still null and PatchTST's lookback reaches before the
        // data; the last day has the full universe.
        for day in [2, 300, market.panel.calendar().len() - 1] {
            let rows = market.panel.rows_of_day(day);
            let nulls = market
                .panel
                .features()
                .iter()
                .map(|c| c[rows.clone()].iter().filter(|v| v.is_nan()).count())
                .sum::<usize>();
            let scores = score_day(ranker.as_ref(), &market.panel, day, 1, &Device::Cpu).expect("scores");
            assert_eq!(scores.len(), rows.len());
            assert!(
                scores.iter().all(|s| s.is_finite()),
                "{}: day {day} ({nulls} null features) has a non-finite score",
                config.name
            );
        }
    }
    assert_ne!(
        market.panel.rows_of_day(5).len(),
        market.panel.rows_of_day(900).len(),
        "late listings change the universe"
    );
}

#[test]
fn a_window_whose_labels_reach_the_retrain_date_is_refused() {
    let market = market();
    let mut job = job_before_break(market, 0).clone();
    job.train_days = job.train_days.start + 2..job.train_days.end + 2;
    let error = run_job(&market.panel, &market.config, &job, &Device::Cpu).expect_err("leaking window");
    assert!(matches!(error, WorkerError::Leakage { .. }));
    assert!(!error.retryable());
    assert!(error.to_string().contains("not before the retrain date"), "{error}");
}

/// Early stopping holds out the window's last days after a gap of the longest horizon:
/// the training statistics account for every day of the window.
#[test]
fn early_stopping_validation_is_purged_by_the_longest_horizon() {
    let market = market();
    let job = job_before_break(market, 0);
    let output = run_job(&market.panel, &market.config, job, &Device::Cpu).expect("job runs");
    let longest = market.config.longest_horizon() as usize;
    let (train, validation) = (output.stats.training_days, output.stats.validation_days);
    assert_eq!(validation, 21);
    assert_eq!(train + longest + validation, job.train_days.len(), "training {train}, validation {validation}");
}

#[test]
fn a_window_inside_the_embargo_is_refused() {
    let market = market();
    // The job as planned without an embargo, run under a spec that asks for 3 days.
    let job = job_before_break(market, 0).clone();
    let mut config = market.config.clone();
    config.embargo = 3;
    let error = run_job(&market.panel, &config, &job, &Device::Cpu).expect_err("inside the embargo");
    assert!(matches!(error, WorkerError::Leakage { .. }));
    assert!(error.to_string().contains("less an embargo of 3 days"), "{error}");
}

/// The GPU check. On CUDA device 0 every model trains (its loss falls and its ΔP@K before
/// the first break has an interval above 0, as on the CPU), and the model trained on the
/// CPU, loaded onto the GPU, scores a day as it does on the CPU. Skipped, with the reason
/// printed, in a build without the `cuda` feature or on a machine without a device.
#[test]
fn on_a_cuda_device_every_model_trains_and_scores_as_on_the_cpu() {
    let gpu = match wf_worker::device::DeviceChoice::Cuda(0).device() {
        Ok(device) => device,
        Err(reason) => {
            println!("skipped, no GPU to check: {reason}");
            return;
        }
    };
    let market = market();
    for model in 0..market.config.models.len() {
        let job = job_before_break(market, model);
        let name = &market.config.models[model].name;
        let trained = run_job(&market.panel, &market.config, job, &gpu).expect("job runs on the GPU");
        assert_eq!(trained.stats.device, "cuda", "{name}");
        let history = &trained.stats.history;
        assert!(
            history.last().expect("epochs").0 < history[0].0,
            "{name}: GPU training loss did not fall: {history:?}"
        );
        let deltas: Vec<f64> = trained.ages.iter().map(|d| d.map_or(f64::NAN, |d| d.delta())).collect();
        let interval = Bootstrap { block: 5, samples: 1000, seed: 7 }.mean_interval(&deltas).expect("interval");
        println!(
            "{name} on the GPU: epochs {}, ΔP@K [{:.4}, {:.4}]",
            trained.stats.epochs, interval.low, interval.high
        );
        assert!(interval.low > 0.0, "{name}: GPU ΔP@K interval {interval:?} does not exclude 0");

        let on_cpu = run_job(&market.panel, &market.config, job, &Device::Cpu).expect("job runs");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("model.safetensors");
        save_job_model(&path, market, job, &on_cpu);
        let (loaded, _) = load(&path, &gpu).expect("load onto the GPU");
        let day = job.score_days.start + 3;
        let cpu = score_day(on_cpu.ranker().expect("a built-in model"), &market.panel, day, 1, &Device::Cpu)
            .expect("CPU scores");
        let gpu_scores = score_day(loaded.as_ref(), &market.panel, day, 1, &gpu).expect("GPU scores");
        let worst = cpu.iter().zip(&gpu_scores).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3, "{name}: the same weights score {worst} apart on the GPU and the CPU");
    }
}
