//! The `gbdt` model: it trains, is deterministic for a seed, ranks better than chance on
//! the synthetic market before its first planted break, and saves and reloads with
//! identical scores. Its spec takes only what applies to trees.

use candle_core::Device;
use wf_shared::bootstrap::Bootstrap;
use wf_shared::cadence::Cadence;
use wf_shared::model::ModelSpec;
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, PanelSpec, build_panel};
use wf_worker::artifact::{ArtifactMeta, load, save};
use wf_worker::job::run_job;
use wf_worker::train::score_range;

fn gbdt(params: serde_json::Value) -> ModelConfig {
    let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
    ModelConfig { name: "gbdt".into(), kind: ModelKind::Gbdt, params, seeds: vec![3] }
}

#[test]
fn gbdt_trains_deterministically_beats_chance_before_the_break_and_reloads() {
    let synth = generate(&SynthSpec::default()).expect("valid spec");
    let first_break_date = synth.truth.breaks[0];
    let panel = build_panel(&Bars::new(synth.bars).expect("bars"), &PanelSpec { horizons: vec![1, 5] });
    let config = SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "gbdt".into(),
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
        models: vec![gbdt(serde_json::json!({ "trees": 60 }))],
        triggers: Default::default(),
        max_jobs: 1000,
        backtest: None,
        trainers: Default::default(),
    };
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let first_break = panel.calendar().index_of(first_break_date).expect("break on the calendar");
    let job = plan
        .jobs
        .iter()
        .filter(|j| j.score_days.end + 5 <= first_break)
        .max_by_key(|j| j.retrain_day)
        .expect("a job scored before the break");

    let first = run_job(&panel, &config, job, &Device::Cpu).expect("gbdt job runs");
    assert!(first.stats.epochs > 0 && first.stats.epochs <= 60, "trees fitted: {}", first.stats.epochs);
    assert!(first.stats.training_days > 100 && first.stats.validation_days > 0);
    let deltas: Vec<f64> = first.ages.iter().map(|d| d.map_or(f64::NAN, |d| d.delta())).collect();
    let interval = Bootstrap { block: 5, samples: 1000, seed: 7 }.mean_interval(&deltas).expect("interval");
    println!("gbdt: {} trees, ΔP@K interval [{:.4}, {:.4}]", first.stats.epochs, interval.low, interval.high);
    assert!(interval.low > 0.0, "gbdt: ΔP@K interval {interval:?} does not exclude 0");
    assert!(first.importance.is_measured(), "importance is measured for trees too");

    // Deterministic for a seed.
    let second = run_job(&panel, &config, job, &Device::Cpu).expect("gbdt job runs");
    assert_eq!(first.ages, second.ages);
    assert_eq!(first.rankings, second.rankings);
    assert_eq!(first.importance, second.importance);

    // Saved and loaded, it scores the same, bit for bit.
    let days = job.score_days.start..job.score_days.start + 5;
    let scores =
        score_range(first.ranker().expect("a built-in model"), &panel, days.clone(), 1, &Device::Cpu).expect("scores");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gbdt.safetensors");
    let meta = ArtifactMeta {
        job_key: job.key.to_string(),
        dataset: "synth:default".into(),
        spec: first.spec.clone(),
        features: panel.features().len(),
        feature_names: panel.feature_names().to_vec(),
        horizons: config.horizons.clone(),
        seed: job.seed,
    };
    save(&path, first.ranker().expect("a built-in model"), &meta).expect("save");
    let (loaded, loaded_meta) = load(&path, &Device::Cpu).expect("load");
    assert_eq!(loaded_meta, meta);
    let reloaded = score_range(loaded.as_ref(), &panel, days, 1, &Device::Cpu).expect("scores");
    assert_eq!(scores, reloaded);
}

#[test]
fn gbdt_takes_only_the_parameters_that_apply_to_trees() {
    let spec = |params: serde_json::Value| ModelSpec::from_config(1, &gbdt(params), 2);
    match spec(serde_json::json!({"trees": 50, "max_depth": 3, "target": "rank"})).expect("valid") {
        ModelSpec::Gbdt { trees, max_depth, train, .. } => {
            assert_eq!((trees, max_depth), (50, 3));
            assert_eq!((train.learning_rate, train.listnet_weight, train.mse_weight), (0.05, 0.0, 1.0));
        }
        other => panic!("not a gbdt: {other:?}"),
    }
    for (params, field) in [
        (serde_json::json!({"trees": 0}), "models[1].params.trees"),
        (serde_json::json!({"max_depth": 40}), "models[1].params.max_depth"),
        (serde_json::json!({"l2": -1.0}), "models[1].params.l2"),
        (serde_json::json!({"epochs": 3}), "models[1].params.epochs"),
        (serde_json::json!({"hidden": [3]}), "models[1].params.hidden"),
        (serde_json::json!({"horizon_weights": [1.0, 0.5]}), "models[1].params.horizon_weights"),
    ] {
        let error = spec(params.clone()).expect_err("refused");
        assert_eq!(error.field, field, "{params}: {error}");
    }
    let mlp = ModelConfig {
        name: "m".into(),
        kind: ModelKind::Mlp,
        params: [("trees".to_string(), serde_json::json!(5))].into_iter().collect(),
        seeds: vec![0],
    };
    assert_eq!(ModelSpec::from_config(0, &mlp, 2).expect_err("refused").field, "models[0].params.trees");
}
