//! Target transforms: training towards each of `zscore`, `rank` and `sign` lowers its own
//! loss; `zscore` is the default and leaves job keys as they were.

use candle_core::Device;
use wf_shared::cadence::Cadence;
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, PanelSpec, build_panel};
use wf_worker::job::run_job;

#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

fn model(name: &str, kind: ModelKind, params: serde_json::Value) -> ModelConfig {
    let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
    ModelConfig { name: name.into(), kind, params, seeds: vec![1] }
}

#[test]
fn training_towards_each_target_lowers_its_loss_and_zscore_keeps_the_keys() {
    let synth = generate(&SynthSpec { stocks: 80, days: 500, ..SynthSpec::default() }).expect("synth");
    let panel = build_panel(&Bars::new(synth.bars).expect("bars"), &PanelSpec { horizons: vec![5] });
    let models = vec![
        model("plain", ModelKind::Linear, serde_json::json!({"epochs": 6})),
        model("zscore", ModelKind::Linear, serde_json::json!({"epochs": 6, "target": "zscore", "weight_decay": 0.0})),
        model("rank", ModelKind::Mlp, serde_json::json!({"epochs": 6, "hidden": [16], "target": "rank"})),
        model("sign", ModelKind::Mlp, serde_json::json!({"epochs": 6, "hidden": [16], "target": "sign"})),
    ];
    let config = SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "targets".into(),
        panel: "synth".into(),
        content_hash: None,
        features: None,
        start: chrono::NaiveDate::from_ymd_opt(2022, 3, 1).expect("date"),
        end: chrono::NaiveDate::from_ymd_opt(2022, 6, 30).expect("date"),
        train_windows: vec![252],
        cadences: vec![Cadence::Quarterly],
        horizons: vec![5],
        primary_horizon: 5,
        embargo: 0,
        max_age: 21,
        k: TopK::Count(10),
        bootstrap_samples: 100,
        bootstrap_seed: 1,
        models,
        triggers: Default::default(),
        max_jobs: 100,
        backtest: None,
        trainers: Default::default(),
    };
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    for (index, name) in ["rank", "sign"].iter().enumerate() {
        let job = plan.jobs.iter().find(|j| j.model == index + 2).expect("a job");
        assert!(job.identity.contains(&format!("\"target\":\"{name}\"")), "{}", job.identity);
        let output = run_job(&panel, &config, job, &Device::Cpu).expect("trains");
        let history = &output.stats.history;
        assert!(history.len() >= 2, "{name}: {history:?}");
        assert!(history.last().expect("epochs").0 < history[0].0, "{name}: training loss did not fall: {history:?}");
        assert!(history.iter().all(|(train, validation)| train.is_finite() && validation.is_finite()));
    }
    // `zscore`, the default, is not written into the identity.
    let plain = plan.jobs.iter().find(|j| j.model == 0).expect("plain");
    assert!(!plain.identity.contains("\"target\""), "{}", plain.identity);
    let zscore = plan.jobs.iter().find(|j| j.model == 1).expect("zscore");
    assert!(!zscore.identity.contains("\"target\""), "{}", zscore.identity);
}

#[test]
fn an_unknown_target_is_refused_naming_the_choices() {
    let config = model("m", ModelKind::Linear, serde_json::json!({"target": "percentile"}));
    let error = wf_shared::model::ModelSpec::from_config(0, &config, 1).expect_err("refused");
    assert!(error.field.starts_with("models[0].params"), "{error}");
    assert!(
        error.reason.contains("zscore") && error.reason.contains("rank") && error.reason.contains("sign"),
        "{error}"
    );
}
