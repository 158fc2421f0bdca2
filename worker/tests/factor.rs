//! The `factor` baseline: no training, and every day's metrics and ranking are those of
//! the feature itself (times its sign), computed directly.

use candle_core::Device;
use wf_shared::backtest::top_ranked;
use wf_shared::cadence::Cadence;
use wf_shared::metric::day_metrics;
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, PanelSpec, build_panel};
use wf_worker::artifact::{ArtifactMeta, load, save};
use wf_worker::job::run_job;
use wf_worker::train::score_range;

fn factor(name: &str, feature: &str) -> ModelConfig {
    let params = [("feature".to_string(), serde_json::json!(feature))].into_iter().collect();
    ModelConfig { name: name.into(), kind: ModelKind::Factor, params, seeds: vec![0] }
}

#[test]
fn a_factor_job_scores_every_day_by_its_signed_feature_without_training() {
    let synth = generate(&SynthSpec { stocks: 60, days: 500, ..SynthSpec::default() }).expect("synth");
    let panel = build_panel(&Bars::new(synth.bars).expect("bars"), &PanelSpec { horizons: vec![5] });
    let config = SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "factor".into(),
        panel: "synth:stocks=60,days=500".into(),
        content_hash: None,
        features: None,
        start: chrono::NaiveDate::from_ymd_opt(2022, 1, 3).expect("date"),
        end: chrono::NaiveDate::from_ymd_opt(2022, 6, 30).expect("date"),
        train_windows: vec![126],
        cadences: vec![Cadence::Quarterly],
        horizons: vec![5],
        primary_horizon: 5,
        embargo: 0,
        max_age: 42,
        k: TopK::Count(10),
        bootstrap_samples: 100,
        bootstrap_seed: 1,
        models: vec![factor("reversal", "-ret_5"), factor("momentum", "mom_60_5")],
        triggers: Default::default(),
        max_jobs: 100,
        backtest: None,
        trainers: Default::default(),
    };
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let target = panel.target(5).expect("target");
    let mut checked = 0;
    for job in &plan.jobs {
        let (name, sign) = if job.model == 0 { ("ret_5", -1.0) } else { ("mom_60_5", 1.0) };
        let feature = panel.feature(name).expect("feature");
        let output = run_job(&panel, &config, job, &Device::Cpu).expect("a factor job runs");
        assert_eq!((output.stats.epochs, output.stats.training_days), (0, 0), "nothing is trained");
        assert!(output.ranker().expect("a built-in model").variables().is_empty());
        for (age, day) in job.score_days.clone().enumerate() {
            let rows = panel.rows_of_day(day);
            // Directly: the feature times its sign, a missing value at 0.
            let scores: Vec<f64> =
                feature[rows.clone()].iter().map(|v| if v.is_finite() { sign * f64::from(*v) } else { 0.0 }).collect();
            let expected = day_metrics(&scores, &target[rows.clone()], config.k);
            assert_eq!(output.ages[age], expected, "{name}, day {day}");
            assert_eq!(output.rankings[age], top_ranked(&scores, &panel.stock()[rows], 128), "{name}, day {day}");
            checked += 1;
        }

        // Saved and loaded, the factor scores the same.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("factor.safetensors");
        let meta = ArtifactMeta {
            job_key: job.key.to_string(),
            dataset: "synth".into(),
            spec: output.spec.clone(),
            features: panel.features().len(),
            feature_names: panel.feature_names().to_vec(),
            horizons: config.horizons.clone(),
            seed: job.seed,
        };
        save(&path, output.ranker().expect("a built-in model"), &meta).expect("save");
        let (loaded, _) = load(&path, &Device::Cpu).expect("load");
        let again = score_range(loaded.as_ref(), &panel, job.score_days.clone(), 0, &Device::Cpu).expect("scores");
        let first =
            score_range(output.ranker().expect("a built-in model"), &panel, job.score_days.clone(), 0, &Device::Cpu)
                .expect("scores");
        assert_eq!(again, first);
    }
    assert!(checked > 100, "only {checked} days checked");
}

#[test]
fn a_factor_names_its_feature_and_nothing_else() {
    use wf_shared::model::ModelSpec;
    let spec = |params: serde_json::Value| {
        let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
        ModelSpec::from_config(2, &ModelConfig { name: "f".into(), kind: ModelKind::Factor, params, seeds: vec![0] }, 1)
    };
    assert_eq!(
        spec(serde_json::json!({"feature": "-vol_60"})).expect("valid"),
        ModelSpec::Factor { feature: "vol_60".into(), sign: -1 }
    );
    assert_eq!(
        spec(serde_json::json!({"feature": "mom_60_5"})).expect("valid"),
        ModelSpec::Factor { feature: "mom_60_5".into(), sign: 1 }
    );
    for (params, field) in [
        (serde_json::json!({}), "models[2].params.feature"),
        (serde_json::json!({"feature": "-"}), "models[2].params.feature"),
        (serde_json::json!({"feature": "ret_5", "epochs": 3}), "models[2].params.epochs"),
        (serde_json::json!({"feature": "ret_5", "hidden": [3]}), "models[2].params.hidden"),
    ] {
        let error = spec(params.clone()).expect_err("refused");
        assert_eq!(error.field, field, "{params}: {error}");
    }
    let linear = ModelConfig {
        name: "l".into(),
        kind: ModelKind::Linear,
        params: [("feature".to_string(), serde_json::json!("ret_5"))].into_iter().collect(),
        seeds: vec![0],
    };
    assert_eq!(ModelSpec::from_config(0, &linear, 1).expect_err("refused").field, "models[0].params.feature");
}
