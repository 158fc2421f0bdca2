//! Prediction latency (issue 19: p99 under 50 ms for 1,000 stocks): a deployment's
//! version ranks a day, as `wf predict` and a prediction server do with the version's
//! model in memory (score every stock of the day, order by score, ties by code).
//!
//! `cargo bench -p wf-live --bench predict`
//!
//! On the synthetic market with 1,000 stocks (`WF_BENCH_STOCKS`), each model kind of the
//! jp grid's shape is trained once on a 126-day window (a few epochs: latency does not
//! depend on how well it learnt), its weights are written and read back as a deployment
//! stores them (timed), and then it ranks `WF_BENCH_DAYS` (default 250) consecutive days
//! one call at a time. Printed per kind: the model load time and the p50, p99 and worst
//! latency of a ranking, against the 50 ms target.

use std::time::Instant;

use candle_core::Device;
use wf_live::rank_day;
use wf_shared::cadence::Cadence;
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, PanelSpec, build_panel};
use wf_worker::artifact::{ArtifactMeta, from_bytes, to_bytes};
use wf_worker::job::run_job;

#[global_allocator]
static GLOBAL: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

type Outcome<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn percentile(sorted: &[f64], share: f64) -> f64 {
    let index = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[allow(unsafe_code)]
fn main() -> Outcome<()> {
    // As `wf coordinator` serves predictions (`wf_worker::threads::env_for`).
    wf_worker::allocator::keep_freed_memory();
    for (name, value) in wf_worker::threads::env_for(1) {
        // SAFETY: the first statement of `main`: no other thread exists yet.
        unsafe { std::env::set_var(name, value) };
    }
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (stocks, days) = (env("WF_BENCH_STOCKS", 1000), env("WF_BENCH_DAYS", 250));
    let start = chrono::NaiveDate::from_ymd_opt(2021, 1, 4).ok_or("date")?;
    let synth = generate(&SynthSpec { stocks, days: 200 + days, start, seed: 11, null: false })?;
    let panel = build_panel(&Bars::new(synth.bars)?, &PanelSpec { horizons: vec![1, 5, 10, 20] });
    let params = |value: serde_json::Value| value.as_object().cloned().unwrap_or_default().into_iter().collect();
    let models = vec![
        ("mlp [128, 64]", ModelKind::Mlp, params(serde_json::json!({"hidden": [128, 64], "epochs": 2}))),
        ("linear", ModelKind::Linear, params(serde_json::json!({"epochs": 2}))),
        ("gbdt (200 trees at most)", ModelKind::Gbdt, params(serde_json::json!({}))),
        ("patchtst (lookback 20)", ModelKind::Patchtst, params(serde_json::json!({"epochs": 1}))),
    ];
    println!(
        "ranking one day of {stocks} stocks, {} features; {days} calls per model, one at a time, model in memory",
        panel.features().len()
    );
    println!("| model | load from bytes | p50 | p99 | worst | p99 < 50 ms |");
    println!("|---|---|---|---|---|---|");
    let device = Device::Cpu;
    let mut targets = wf_shared::targets::Targets::default();
    for (name, kind, params) in models {
        let config = SweepConfig {
            selection: Default::default(),
            basis: Default::default(),
            name: "predict-bench".into(),
            panel: "synth".into(),
            content_hash: None,
            features: None,
            start: panel.calendar().date(160).ok_or("date")?,
            end: panel.calendar().date(180).ok_or("date")?,
            train_windows: vec![126],
            cadences: vec![Cadence::Weekly],
            horizons: vec![1, 5, 10, 20],
            primary_horizon: 5,
            embargo: 0,
            max_age: 5,
            k: TopK::Count(50),
            bootstrap_samples: 10,
            bootstrap_seed: 1,
            models: vec![ModelConfig { name: name.into(), kind, params, seeds: vec![0] }],
            triggers: Default::default(),
            max_jobs: 10,
            backtest: None,
            trainers: Default::default(),
        };
        let plan =
            plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).map_err(|e| e.to_string())?;
        let job = plan.jobs.first().ok_or("no job")?;
        let output = run_job(&panel, &config, job, &device)?;
        let meta = ArtifactMeta {
            job_key: job.key.to_string(),
            dataset: "synth".into(),
            spec: output.spec.clone(),
            features: panel.features().len(),
            feature_names: panel.feature_names().to_vec(),
            horizons: config.horizons.clone(),
            seed: 0,
        };
        let bytes = to_bytes(output.ranker()?, &meta)?;
        let started = Instant::now();
        let (model, _) = from_bytes(&bytes, &device)?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let first = panel.calendar().len() - days;
        let mut latencies = Vec::with_capacity(days);
        let mut ranked = 0;
        for day in first..first + days {
            let started = Instant::now();
            let ranking = rank_day(model.as_ref(), &panel, day, 1, &device)?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
            ranked += ranking.codes.len();
        }
        latencies.sort_by(f64::total_cmp);
        let p99 = percentile(&latencies, 0.99);
        println!(
            "| {name} | {load_ms:.1} ms | {:.2} ms | {p99:.2} ms | {:.2} ms | {} |",
            percentile(&latencies, 0.5),
            latencies.last().copied().unwrap_or(f64::NAN),
            targets.at_most(&format!("{name} p99 (ms)"), p99, 50.0)
        );
        assert!(ranked > days * stocks / 2, "days were ranked: {ranked}");
    }
    println!("{}", targets.summary());
    if targets.exit_code() != 0 {
        return Err(targets.summary().into());
    }
    Ok(())
}
