//! What a job measures besides its primary metrics: style exposures of its scores, and
//! the metrics of every trained horizon.

use candle_core::Device;
use wf_shared::cadence::Cadence;
use wf_shared::exposure::{Exposures, STYLE_FACTORS, quantise};
use wf_shared::metric::{day_metrics, spearman};
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, Panel, PanelSpec, build_panel};
use wf_worker::importance::{self, DAY_STRIDE};
use wf_worker::job::run_job;
use wf_worker::train::{TrainRequest, score_range};

fn model(name: &str, kind: ModelKind, params: serde_json::Value) -> ModelConfig {
    let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
    ModelConfig { name: name.into(), kind, params, seeds: vec![0] }
}

fn setup(models: Vec<ModelConfig>) -> (Panel, SweepConfig) {
    let synth = generate(&SynthSpec { stocks: 60, days: 500, ..SynthSpec::default() }).expect("synth");
    let panel = build_panel(&Bars::new(synth.bars).expect("bars"), &PanelSpec { horizons: vec![1, 5, 20] });
    let config = SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "diagnostics".into(),
        panel: "synth:stocks=60,days=500".into(),
        content_hash: None,
        features: None,
        start: chrono::NaiveDate::from_ymd_opt(2022, 1, 3).expect("date"),
        end: chrono::NaiveDate::from_ymd_opt(2022, 6, 30).expect("date"),
        train_windows: vec![126],
        cadences: vec![Cadence::Quarterly],
        horizons: vec![1, 5, 20],
        primary_horizon: 5,
        embargo: 0,
        max_age: 42,
        k: TopK::Count(10),
        bootstrap_samples: 100,
        bootstrap_seed: 1,
        models,
        triggers: Default::default(),
        max_jobs: 100,
        backtest: None,
        trainers: Default::default(),
    };
    (panel, config)
}

/// A model that ranks by `vol_60` has exposure 1 to it (−1 for `-vol_60`), and every
/// exposure is the Spearman correlation of the day's scores with the day's factor.
#[test]
fn a_model_scoring_by_vol_60_has_exposure_one_to_it() {
    let factor = |feature: &str| model(feature, ModelKind::Factor, serde_json::json!({ "feature": feature }));
    let (panel, config) = setup(vec![factor("vol_60"), factor("-vol_60")]);
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let mut checked = 0;
    for job in &plan.jobs {
        let output = run_job(&panel, &config, job, &Device::Cpu).expect("job runs");
        let exposures = &output.exposures;
        assert_eq!(exposures.factors, STYLE_FACTORS.map(String::from).to_vec(), "the synthetic panel has all 8");
        assert_eq!(exposures.ages(), job.score_days.len());
        let vol_60 = exposures.factors.iter().position(|f| f == "vol_60").expect("vol_60");
        let sign = if job.model == 0 { 1.0 } else { -1.0 };
        let scores =
            score_range(output.ranker().expect("a built-in model"), &panel, job.score_days.clone(), 1, &Device::Cpu)
                .expect("s");
        for (age, day) in job.score_days.clone().enumerate() {
            assert_eq!(exposures.at(age, vol_60), Some(sign), "day {day}");
            let rows = panel.rows_of_day(day);
            for (index, name) in exposures.factors.iter().enumerate() {
                let column = &panel.feature(name).expect("factor")[rows.clone()];
                let (a, b): (Vec<f64>, Vec<f64>) = scores[age]
                    .iter()
                    .zip(column)
                    .filter(|(s, f)| s.is_finite() && f.is_finite())
                    .map(|(s, f)| (*s, f64::from(*f)))
                    .unzip();
                let expected = quantise(spearman(&a, &b));
                assert_eq!(exposures.values[age * exposures.factors.len() + index], expected, "{name}, day {day}");
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} days checked");
}

/// Exposures read the scored day's own features: poisoning every other day's feature
/// values changes nothing.
#[test]
fn exposures_read_the_scored_days_features_only() {
    let (panel, config) = setup(vec![model("mlp", ModelKind::Mlp, serde_json::json!({"hidden": [16], "epochs": 2}))]);
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let job = &plan.jobs[0];
    let output = run_job(&panel, &config, job, &Device::Cpu).expect("job runs");
    let scores =
        score_range(output.ranker().expect("a built-in model"), &panel, job.score_days.clone(), 1, &Device::Cpu)
            .expect("s");
    for age in [0, 7, job.score_days.len() - 1] {
        let day = job.score_days.start + age;
        let mut parts = panel.clone().into_parts();
        let keep = panel.rows_of_day(day);
        for column in &mut parts.features {
            for (row, value) in column.iter_mut().enumerate() {
                if !keep.contains(&row) {
                    *value = (row as f32 * 0.618).fract() * 10.0 - 5.0;
                }
            }
        }
        let poisoned = Panel::new(parts).expect("same shape");
        let alone = Exposures::measure(&poisoned, day..day + 1, std::slice::from_ref(&scores[age]));
        let width = alone.factors.len();
        assert_eq!(alone.values, output.exposures.values[age * width..(age + 1) * width], "age {age}");
        assert!(alone.values.iter().any(|v| *v != 0), "a trained model has some exposure");
    }
}

/// Every trained horizon is scored: each kept horizon's metrics are the model's scores
/// at that horizon's output against that horizon's targets, day by day.
#[test]
fn every_trained_horizon_is_scored_against_its_own_targets() {
    let (panel, config) = setup(vec![model("mlp", ModelKind::Mlp, serde_json::json!({"hidden": [16], "epochs": 2}))]);
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let job = &plan.jobs[0];
    let output = run_job(&panel, &config, job, &Device::Cpu).expect("job runs");
    let kept: Vec<u32> = output.horizons.iter().map(|h| h.horizon).collect();
    assert_eq!(kept, vec![1, 20], "the primary horizon 5 is `ages`");
    let mut compared = 0;
    for (column, horizon) in config.horizons.iter().enumerate() {
        let scores = score_range(
            output.ranker().expect("a built-in model"),
            &panel,
            job.score_days.clone(),
            column,
            &Device::Cpu,
        )
        .expect("scores");
        let target = panel.target(*horizon).expect("target");
        let ages = if *horizon == 5 {
            &output.ages
        } else {
            &output.horizons.iter().find(|h| h.horizon == *horizon).expect("kept").ages
        };
        assert_eq!(ages.len(), job.score_days.len());
        for (age, day) in job.score_days.clone().enumerate() {
            let expected = day_metrics(&scores[age], &target[panel.rows_of_day(day)], config.k);
            assert_eq!(ages[age], expected, "horizon {horizon}, day {day}");
            compared += usize::from(expected.is_some());
        }
    }
    // Not copies of one another.
    assert_ne!(output.horizons[0].ages, output.horizons[1].ages);
    assert_ne!(output.horizons[0].ages, output.ages);
    assert!(compared > 100, "only {compared} days compared");
}

/// A panel of 6 random features where the 5-day return is feature `f3` plus noise.
fn planted_panel() -> Panel {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let (stocks, days, features) = (80, 300, 6);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let rows = stocks * days;
    let values: Vec<Vec<f32>> = (0..features).map(|_| (0..rows).map(|_| normal() as f32).collect()).collect();
    let target: Vec<f64> = (0..rows).map(|row| 0.02 * f64::from(values[3][row]) + 0.01 * normal()).collect();
    Panel::new(wf_shared::panel::PanelParts {
        calendar: wf_shared::TradingCalendar::business_days(
            chrono::NaiveDate::from_ymd_opt(2021, 1, 4).expect("date"),
            days,
        ),
        codes: (0..stocks).map(|s| format!("S{s:03}")).collect(),
        day: (0..rows).map(|r| (r / stocks) as u32).collect(),
        stock: (0..rows).map(|r| (r % stocks) as u32).collect(),
        feature_names: (0..features).map(|f| format!("f{f}")).collect(),
        features: values,
        horizons: vec![5],
        targets: vec![target],
        adv: None,
    })
    .expect("panel")
}

fn planted_config(panel: &Panel, models: Vec<ModelConfig>) -> SweepConfig {
    let date = |day: usize| panel.calendar().date(day).expect("date");
    SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "planted".into(),
        panel: "planted".into(),
        content_hash: None,
        features: None,
        start: date(200),
        end: date(260),
        train_windows: vec![126],
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
    }
}

/// Only `f3` carries the signal: permutation importance ranks it first, by the loss and
/// by RankIC, for every trained kind.
#[test]
fn permutation_importance_puts_the_planted_feature_first() {
    let panel = planted_panel();
    let config = planted_config(
        &panel,
        vec![
            model("linear", ModelKind::Linear, serde_json::json!({"epochs": 10})),
            model("mlp", ModelKind::Mlp, serde_json::json!({"hidden": [16], "epochs": 10})),
            model("gbdt", ModelKind::Gbdt, serde_json::json!({"trees": 40})),
        ],
    );
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    for index in 0..config.models.len() {
        let job = plan.jobs.iter().find(|j| j.model == index).expect("a job");
        let output = run_job(&panel, &config, job, &Device::Cpu).expect("job runs");
        let importance = &output.importance;
        let name = &config.models[index].name;
        assert_eq!(importance.loss.len(), 6, "{name}: one value per feature");
        assert_eq!(
            importance.days as usize,
            output.stats.validation_days.div_ceil(DAY_STRIDE),
            "{name}: every second of early stopping's days"
        );
        let first = |values: &[f32]| (0..values.len()).max_by(|a, b| values[*a].total_cmp(&values[*b]));
        assert_eq!(first(&importance.loss), Some(3), "{name}: {:?}", importance.loss);
        assert_eq!(first(&importance.rank_ic), Some(3), "{name}: {:?}", importance.rank_ic);
        assert!(importance.base_rank_ic > 0.5, "{name}: the model learnt the signal: {}", importance.base_rank_ic);
        assert!(importance.rank_ic[3] > 0.3, "{name}: shuffling f3 destroys most of it: {:?}", importance.rank_ic);
    }
}

/// A model that starts with a product of its input carries a shuffled feature through
/// that product as an update: the same importance as running the whole model per pass,
/// up to float rounding; and every `DAY_STRIDE`-th validation day is measured.
#[test]
fn importance_through_the_input_product_equals_whole_passes() {
    let panel = planted_panel();
    let config = planted_config(
        &panel,
        vec![
            model("linear", ModelKind::Linear, serde_json::json!({"epochs": 6})),
            model("mlp", ModelKind::Mlp, serde_json::json!({"hidden": [16, 8], "epochs": 6})),
        ],
    );
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    for index in 0..config.models.len() {
        let job = plan.jobs.iter().find(|j| j.model == index).expect("a job");
        let output = run_job(&panel, &config, job, &Device::Cpu).expect("job runs");
        let params = output.spec.train_params().expect("trained");
        let weights = params.horizon_weights_for(&config);
        let request = TrainRequest::of_job(&panel, &config, job, params, &weights);
        let name = &config.models[index].name;
        let measured = |stride, product| {
            importance::measure(
                output.ranker().expect("a built-in model"),
                &request,
                config.primary_horizon,
                &Device::Cpu,
                importance::Method { stride, product },
            )
            .expect("measured")
        };
        let (through, whole) = (measured(DAY_STRIDE, true), measured(DAY_STRIDE, false));
        assert_eq!(through, output.importance, "{name}: the job measures through the product");
        assert_eq!(through.days, whole.days);
        assert!((through.base_loss - whole.base_loss).abs() < 1e-9, "{name}: the base pass is the same product");
        for feature in 0..through.loss.len() {
            let (a, b) = (through.loss[feature], whole.loss[feature]);
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-2), "{name} feature {feature}: loss rise {a} vs {b}");
            let (a, b) = (through.rank_ic[feature], whole.rank_ic[feature]);
            assert!((a - b).abs() < 1e-4, "{name} feature {feature}: RankIC fall {a} vs {b}");
        }
        let every = measured(1, true);
        assert_eq!(every.days as usize, output.stats.validation_days, "{name}: stride 1 reads every day");
        assert!(every.days > through.days);
    }
}

/// A model that reads a history of days is measured too: each stock's whole lookback of
/// a feature moves with one permutation, and the planted feature still comes first.
#[test]
fn permutation_importance_covers_history_models() {
    let panel = planted_panel();
    let params = serde_json::json!({
        "lookback": 10, "patch": 5, "d_model": 16, "heads": 2, "layers": 1, "epochs": 12, "learning_rate": 0.003
    });
    let config = planted_config(&panel, vec![model("patchtst", ModelKind::Patchtst, params)]);
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let output = run_job(&panel, &config, &plan.jobs[0], &Device::Cpu).expect("job runs");
    let importance = &output.importance;
    assert!(importance.is_measured(), "patchtst importance measured");
    assert_eq!(importance.loss.len(), 6);
    let first = |values: &[f32]| (0..values.len()).max_by(|a, b| values[*a].total_cmp(&values[*b]));
    assert_eq!(first(&importance.loss), Some(3), "{:?}", importance.loss);
    assert_eq!(first(&importance.rank_ic), Some(3), "{:?}", importance.rank_ic);
    assert!(importance.base_rank_ic > 0.3, "patchtst learnt the signal: {}", importance.base_rank_ic);
}

/// Importance reads the validation days inside the training window only: poisoning
/// every test day's features changes the scores but not the importance.
#[test]
fn importance_never_reads_a_test_day() {
    let panel = planted_panel();
    let config =
        planted_config(&panel, vec![model("mlp", ModelKind::Mlp, serde_json::json!({"hidden": [16], "epochs": 4}))]);
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let job = &plan.jobs[0];
    let clean = run_job(&panel, &config, job, &Device::Cpu).expect("job runs");
    let mut parts = panel.clone().into_parts();
    let test_rows: Vec<usize> = (job.retrain_day..panel.calendar().len()).flat_map(|d| panel.rows_of_day(d)).collect();
    for column in &mut parts.features {
        for row in &test_rows {
            column[*row] = -column[*row] * 3.0 + 1.0;
        }
    }
    let poisoned = Panel::new(parts).expect("same shape");
    let dirty = run_job(&poisoned, &config, job, &Device::Cpu).expect("job runs");
    assert_ne!(clean.ages, dirty.ages, "the test days' scores read the poisoned features");
    assert!(clean.importance.is_measured());
    assert_eq!(clean.importance, dirty.importance, "importance read no test day");
}
