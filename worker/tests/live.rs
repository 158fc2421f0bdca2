//! Live equals replay, computed two ways: the sweep's jobs score their days in batches
//! into age-matrix rows that the offline replay reads; a deployment advanced day by day
//! with a [`PanelObserver`] scores each day one at a time with the promoted version's
//! model, learns each label only once matured, and bins each day's features against the
//! version's training window. On the synthetic market both retrain on the same days and
//! leave the same daily series, bit for bit, for a fixed cadence, a performance trigger,
//! a drift trigger and an age fallback.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Device;
use wf_shared::age::{AgeMatrix, Line, ModelRun};
use wf_shared::cadence::Cadence;
use wf_shared::decision::{LivePolicy, LiveState, Version};
use wf_shared::panel::Panel;
use wf_shared::plan::{Job, plan_panel};
use wf_shared::replay::{LineReplayer, Policy, Trigger};
use wf_shared::spec::{ModelConfig, ModelKind, PerformanceMetric, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, PanelSpec, build_panel};
use wf_worker::job::run_job;
use wf_worker::model::Ranker;
use wf_worker::observer::PanelObserver;

fn setup() -> (Panel, SweepConfig) {
    let synth = generate(&SynthSpec { stocks: 50, days: 460, ..SynthSpec::default() }).expect("synth");
    let panel = build_panel(&Bars::new(synth.bars).expect("bars"), &PanelSpec { horizons: vec![1, 5] });
    let params = serde_json::json!({"epochs": 3}).as_object().cloned().unwrap_or_default().into_iter().collect();
    let config = SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "live".into(),
        panel: "synth:stocks=50,days=460".into(),
        content_hash: None,
        features: None,
        start: chrono::NaiveDate::from_ymd_opt(2022, 1, 3).expect("date"),
        end: chrono::NaiveDate::from_ymd_opt(2022, 10, 31).expect("date"),
        train_windows: vec![126],
        cadences: vec![Cadence::Weekly, Cadence::Monthly],
        horizons: vec![1, 5],
        primary_horizon: 5,
        embargo: 0,
        max_age: 42,
        k: TopK::Count(10),
        bootstrap_samples: 100,
        bootstrap_seed: 1,
        models: vec![ModelConfig { name: "linear".into(), kind: ModelKind::Linear, params, seeds: vec![0] }],
        triggers: Default::default(),
        max_jobs: 1000,
        backtest: None,
        trainers: Default::default(),
    };
    (panel, config)
}

#[test]
fn a_deployment_scoring_each_day_live_retrains_and_earns_as_the_replay() {
    let (panel, config) = setup();
    let counts = live_equals_replay(&panel, &config);
    // The policies decide differently, and each retrains at least once.
    assert!(counts.iter().all(|n| *n > 1), "{counts:?}");
    assert!(counts.iter().collect::<std::collections::HashSet<_>>().len() > 1, "{counts:?}");
}

/// The same on a stretch of jp_tse1000 (2023, first half; `linear`, window 126): skipped,
/// saying so, where the data is not on the machine (it is not redistributable).
#[test]
fn on_jp_tse1000_a_live_deployment_equals_the_replay() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let input = std::env::var("WF_BENCH_OHLCV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("shared/data/jp_tse1000/jp_tse1000_daily.parquet"));
    if !input.exists() {
        println!("skipped: no jp_tse1000 data at {} (set WF_BENCH_OHLCV)", input.display());
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jp.parquet");
    wf_data::prepare::prepare(&input, &path, &PanelSpec { horizons: vec![1, 5] }, |_| {}).expect("prepared");
    let dataset = wf_data::dataset::load_dataset(&path.display().to_string(), &[1, 5], None).expect("loaded");
    let (_, mut config) = setup();
    config.start = chrono::NaiveDate::from_ymd_opt(2023, 1, 4).expect("date");
    config.end = chrono::NaiveDate::from_ymd_opt(2023, 6, 30).expect("date");
    config.k = TopK::Count(50);
    let counts = live_equals_replay(&dataset.panel, &config);
    println!("jp_tse1000 2023H1, linear window 126: versions per policy {counts:?}");
    assert!(counts.iter().all(|n| *n >= 1));
}

/// Trains every job of the spec's single line, replays a fixed cadence and three
/// policies from the jobs' rows, and advances a deployment of each with a
/// [`PanelObserver`]; asserts they retrain on the same days with the same daily ΔP@K,
/// bit for bit, and returns each one's count of versions.
fn live_equals_replay(panel: &Panel, config: &SweepConfig) -> Vec<usize> {
    let config = config.clone();
    let plan = plan_panel(&config, panel, &wf_shared::dataset::PanelDigests::of(panel)).expect("plannable");
    // Every job of the line, trained once: its row for the replay, its model for the live side.
    let mut runs = Vec::new();
    let mut models: HashMap<usize, (Arc<dyn Ranker>, &Job)> = HashMap::new();
    for job in &plan.jobs {
        let output = run_job(panel, &config, job, &Device::Cpu).expect("job runs");
        let result = output.result();
        models.insert(job.retrain_day, (Arc::from(output.model.expect("a built-in model")), job));
        runs.push(ModelRun::of_job(job, result, panel));
    }
    let matrix = AgeMatrix { horizon: config.primary_horizon, max_age: config.max_age, runs, basis: config.basis };
    let replayer = LineReplayer::new(&matrix, Line { window: 126, model: 0, seed: 0 }).expect("runs");
    let weekly = plan.retrain_days[0].1.clone();
    let monthly = plan.retrain_days[1].1.clone();
    let first_day = weekly[0].min(monthly[0]);
    let last_day = matrix.runs.iter().map(|r| r.retrain_day + r.ages.len() - 1).max().expect("runs");

    let performance = Trigger::Performance { metric: PerformanceMetric::DeltaPAtK, tau: 0.02, lookback: 10 };
    let drift = Trigger::Drift { theta: 0.05, share: 0.3, days: 5 };
    let age = Trigger::Age { max_age: 30 };
    let cases = [
        (LivePolicy::Fixed(Cadence::Monthly), monthly.clone()),
        (LivePolicy::Adaptive(Policy { triggers: vec![performance] }), weekly.clone()),
        (LivePolicy::Adaptive(Policy { triggers: vec![drift] }), weekly.clone()),
        (LivePolicy::Adaptive(Policy { triggers: vec![performance, age] }), weekly.clone()),
    ];
    let mut retrain_counts = Vec::new();
    for (policy, decision_days) in cases {
        let replay = match &policy {
            LivePolicy::Fixed(_) => replayer.fixed(&decision_days),
            LivePolicy::Adaptive(p) => replayer.adaptive(p, &weekly),
        };
        let mut observer = PanelObserver::new(
            panel,
            &config.horizons,
            config.primary_horizon,
            config.k,
            plan.last_matured_day,
            Device::Cpu,
        )
        .expect("primary target");
        let (model, job) = &models[&first_day];
        let training = observer.add(first_day, model.clone(), job.train_days.clone());
        let first = Version::new(first_day, job.key.to_string(), Some(training));
        let mut state =
            LiveState::new(policy.clone(), config.primary_horizon, config.max_age, decision_days.clone(), first)
                .on_basis(config.basis);
        let mut series = Vec::new();
        for day in first_day..=last_day {
            let retrain = state.advance(day, &mut observer).expect("in order").is_some_and(|d| d.retrain);
            if retrain {
                let (model, job) = &models[&day];
                let training = observer.add(day, model.clone(), job.train_days.clone());
                state.promote(Version::new(day, job.key.to_string(), Some(training))).expect("promoted");
            }
            // The day's ΔP@K as the deployment measures it once the label is known.
            let version = state.live_version().clone();
            let age = day - version.retrain_day;
            let measured = (age < config.max_age as usize && day <= plan.last_matured_day)
                .then(|| wf_shared::decision::Observe::metrics(&mut observer, &version, day))
                .flatten();
            series.push(config.basis.delta().value(measured.as_ref()));
        }
        assert!(observer.failures.is_empty(), "{:?}", observer.failures);
        let retrains: Vec<usize> = state.versions.iter().map(|v| v.retrain_day).collect();
        assert_eq!(retrains, replay.retrain_days, "{policy}: the replay's retrain days");
        let expected = replay.series(&matrix, config.basis.delta());
        assert_eq!(series.len(), expected.len(), "{policy}");
        for (index, (live, replayed)) in series.iter().zip(&expected).enumerate() {
            assert!(
                live.to_bits() == replayed.to_bits() || (live.is_nan() && replayed.is_nan()),
                "{policy}: day {}: live {live}, replay {replayed}",
                first_day + index
            );
        }
        // Every decision's readings are the replay's: a retrain decision fired a trigger.
        for decision in &state.decisions {
            let fired = decision.readings.iter().any(|r| r.fired);
            assert!(matches!(policy, LivePolicy::Fixed(_)) || fired == decision.retrain);
        }
        retrain_counts.push(retrains.len());
    }
    retrain_counts
}
