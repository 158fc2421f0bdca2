//! Why models rank as they do: per (window, model), seeds pooled, the style exposures of
//! the scores and the metrics of every trained horizon (`docs/ANALYTICS.md`,
//! "Exposures" and "Every trained horizon").

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use wf_shared::TradingCalendar;
use wf_shared::age::{AgeMatrix, Metric, ModelRun};
use wf_shared::bootstrap::{Bootstrap, Interval};
use wf_shared::metric::DayMetrics;
use wf_shared::spec::{ModelKind, SweepConfig};

/// A trained model whose mean |exposure| to one factor exceeds this is warned about.
pub const EXPOSURE_WARNING: f64 = 0.5;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Style exposures per (window, model) with any measured.
    pub exposures: Vec<ModelExposures>,
    /// Metrics of every trained horizon per (window, model).
    pub horizons: Vec<ModelHorizons>,
    /// Permutation importance per (window, trained model) with any measured.
    #[serde(default)]
    pub importance: Vec<ModelImportance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelImportance {
    pub window: u32,
    pub model: String,
    /// Retrain dates of the runs with importance, in retrain order (seeds pooled).
    pub retrain_dates: Vec<NaiveDate>,
    /// Every feature, most important (largest mean loss rise) first.
    pub features: Vec<FeatureImportance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureImportance {
    pub feature: String,
    /// Mean over runs of the validation loss rise when the feature is shuffled.
    pub loss: f64,
    /// Mean over runs of the validation RankIC fall when the feature is shuffled.
    pub rank_ic: f64,
    /// Each run's loss rise, by `retrain_dates` (the importance drift).
    pub by_run: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelExposures {
    pub window: u32,
    pub model: String,
    /// False for untrained baselines (a factor's exposure to itself is ±1 by design).
    pub trained: bool,
    /// Retrain dates of the runs with exposures, in retrain order (seeds pooled).
    pub retrain_dates: Vec<NaiveDate>,
    pub factors: Vec<FactorExposure>,
    /// Plain warnings, for trained models: "scores rank mostly by vol_60: ρ = 0.81".
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorExposure {
    pub factor: String,
    /// Mean over runs of each run's mean exposure over its ages.
    pub mean: f64,
    /// 95% moving-block bootstrap interval over runs in retrain order (block = horizon).
    pub interval: Option<Interval>,
    /// Mean over runs at each age.
    pub by_age: Vec<Option<f64>>,
    /// Each run's mean exposure, by `retrain_dates`.
    pub by_run: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHorizons {
    pub window: u32,
    pub model: String,
    pub trained: bool,
    /// One row per trained horizon with results, in the spec's order.
    pub rows: Vec<HorizonRow>,
}

/// One horizon's metrics over every (run, age) cell up to `max_age`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonRow {
    pub horizon: u32,
    /// The horizon triggers and headlines read.
    pub primary: bool,
    /// Scored (run, age) cells.
    pub cells: usize,
    pub p_at_k: f64,
    /// Mean base rate: the P@K of a random ranking.
    pub base_rate: f64,
    pub delta: f64,
    /// Mean over the cells with a RankIC.
    pub rank_ic: Option<f64>,
    pub spread: f64,
    /// Mean ΔP@K at each age over the runs (the horizon × age surface).
    pub delta_by_age: Vec<Option<f64>>,
    /// Mean RankIC at each age over the runs.
    pub rank_ic_by_age: Vec<Option<f64>>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (count > 0).then(|| sum / count as f64)
}

/// The runs of every (window, model), seeds pooled, in retrain order.
fn groups(matrix: &AgeMatrix) -> Vec<((u32, usize), Vec<&ModelRun>)> {
    let mut keys: Vec<(u32, usize)> = matrix.runs.iter().map(|r| (r.window, r.model)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(window, model)| {
            let mut runs: Vec<&ModelRun> =
                matrix.runs.iter().filter(|r| r.window == window && r.model == model).collect();
            runs.sort_by_key(|r| (r.retrain_day, r.seed));
            ((window, model), runs)
        })
        .collect()
}

/// The diagnostics of `matrix` (runs of `config`'s models on a panel with `features`).
pub fn build(config: &SweepConfig, matrix: &AgeMatrix, calendar: &TradingCalendar, features: &[String]) -> Diagnostics {
    let bootstrap = Bootstrap {
        block: matrix.horizon.max(1) as usize,
        samples: config.bootstrap_samples,
        seed: config.bootstrap_seed,
    };
    let max_age = matrix.max_age as usize;
    let mut diagnostics = Diagnostics::default();
    for ((window, model), runs) in groups(matrix) {
        let (name, trained) = config
            .models
            .get(model)
            .map_or_else(|| (format!("model {model}"), true), |m| (m.name.clone(), m.kind != ModelKind::Factor));
        if let Some((retrain_dates, factors)) = exposures(&runs, max_age, bootstrap, calendar) {
            let mut model =
                ModelExposures { window, model: name.clone(), trained, retrain_dates, factors, warnings: vec![] };
            model.warnings = warnings(&model);
            diagnostics.exposures.push(model);
        }
        if let Some((retrain_dates, features)) = importance(&runs, features, calendar) {
            diagnostics.importance.push(ModelImportance { window, model: name.clone(), retrain_dates, features });
        }
        let rows = config
            .horizons
            .iter()
            .filter_map(|horizon| horizon_row(&runs, *horizon, matrix.horizon, max_age, matrix.basis))
            .collect();
        diagnostics.horizons.push(ModelHorizons { window, model: name, trained, rows });
    }
    diagnostics
}

/// The retrain dates of the runs that measured importance, and each feature's importance
/// averaged over them, most important first.
fn importance(
    runs: &[&ModelRun],
    features: &[String],
    calendar: &TradingCalendar,
) -> Option<(Vec<NaiveDate>, Vec<FeatureImportance>)> {
    let measured: Vec<&ModelRun> = runs
        .iter()
        .copied()
        .filter(|r| r.importance.is_measured() && r.importance.loss.len() == features.len())
        .collect();
    if measured.is_empty() {
        return None;
    }
    let mut rows: Vec<FeatureImportance> = features
        .iter()
        .enumerate()
        .map(|(index, feature)| {
            let by_run: Vec<Option<f64>> =
                measured.iter().map(|r| Some(f64::from(r.importance.loss[index])).filter(|v| v.is_finite())).collect();
            FeatureImportance {
                feature: feature.clone(),
                loss: mean(by_run.iter().flatten().copied()).unwrap_or(f64::NAN),
                rank_ic: mean(measured.iter().map(|r| f64::from(r.importance.rank_ic[index]))).unwrap_or(f64::NAN),
                by_run,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.loss.total_cmp(&a.loss));
    Some((measured.iter().map(|r| calendar.date(r.retrain_day).unwrap_or_default()).collect(), rows))
}

fn exposures(
    runs: &[&ModelRun],
    max_age: usize,
    bootstrap: Bootstrap,
    calendar: &TradingCalendar,
) -> Option<(Vec<NaiveDate>, Vec<FactorExposure>)> {
    let measured: Vec<&ModelRun> = runs.iter().copied().filter(|r| !r.exposures.factors.is_empty()).collect();
    let first = measured.first()?;
    let names = first.exposures.factors.clone();
    let retrain_dates = measured.iter().map(|r| calendar.date(r.retrain_day).unwrap_or_default()).collect();
    let ages = measured.iter().map(|r| r.exposures.ages()).max().unwrap_or(0).min(max_age);
    let factors = names
        .iter()
        .filter_map(|factor| {
            // Each run's index of the factor (a run of another panel may lack it).
            let index: Vec<Option<usize>> =
                measured.iter().map(|r| r.exposures.factors.iter().position(|f| f == factor)).collect();
            let value = |run: usize, age: usize| index[run].and_then(|i| measured[run].exposures.at(age, i));
            let by_run: Vec<Option<f64>> = (0..measured.len())
                .map(|run| mean((0..ages.min(measured[run].exposures.ages())).filter_map(|age| value(run, age))))
                .collect();
            let run_means: Vec<f64> = by_run.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
            let overall = mean(run_means.iter().copied())?;
            Some(FactorExposure {
                factor: factor.clone(),
                mean: overall,
                interval: bootstrap.mean_interval(&run_means),
                by_age: (0..ages).map(|age| mean((0..measured.len()).filter_map(|run| value(run, age)))).collect(),
                by_run,
            })
        })
        .collect();
    Some((retrain_dates, factors))
}

impl ModelExposures {
    /// Whether `factor` is warned about: a trained model's mean exposure past
    /// [`EXPOSURE_WARNING`] in size (a factor baseline's to its own factor is ±1 by design).
    pub fn warns(&self, factor: &FactorExposure) -> bool {
        self.trained && factor.mean.abs() > EXPOSURE_WARNING
    }
}

/// "scores rank mostly by vol_60: ρ = 0.81" for each factor [`ModelExposures::warns`]
/// about, largest first.
fn warnings(model: &ModelExposures) -> Vec<String> {
    let mut large: Vec<&FactorExposure> = model.factors.iter().filter(|f| model.warns(f)).collect();
    large.sort_by(|a, b| b.mean.abs().total_cmp(&a.mean.abs()));
    large
        .into_iter()
        .map(|f| {
            let direction = if f.mean < 0.0 { "inversely " } else { "" };
            format!("scores rank mostly {direction}by {}: ρ = {:.2}", f.factor, f.mean)
        })
        .collect()
}

fn horizon_row(
    runs: &[&ModelRun],
    horizon: u32,
    primary: u32,
    max_age: usize,
    basis: wf_shared::metric::Basis,
) -> Option<HorizonRow> {
    let at = |run: &ModelRun, age: usize| -> Option<DayMetrics> { run.at_horizon(horizon, primary, age).copied() };
    let ages = runs.iter().map(|r| r.ages.len()).max().unwrap_or(0).min(max_age);
    let cells: Vec<DayMetrics> =
        runs.iter().flat_map(|run| (0..ages.min(run.ages.len())).filter_map(move |age| at(run, age))).collect();
    if cells.is_empty() {
        return None;
    }
    let of = |value: fn(&DayMetrics) -> f64| mean(cells.iter().map(value)).unwrap_or(f64::NAN);
    let by_age = |metric: Metric| -> Vec<Option<f64>> {
        (0..ages).map(|age| mean(runs.iter().map(|run| metric.value(at(run, age).as_ref())))).collect()
    };
    Some(HorizonRow {
        horizon,
        primary: horizon == primary,
        cells: cells.len(),
        p_at_k: mean(cells.iter().map(|d| d.p_at_k_on(basis))).unwrap_or(f64::NAN),
        base_rate: mean(cells.iter().map(|d| d.base_rate_on(basis))).unwrap_or(f64::NAN),
        delta: mean(cells.iter().map(|d| d.delta_on(basis))).unwrap_or(f64::NAN),
        rank_ic: mean(cells.iter().filter_map(|d| d.rank_ic)),
        spread: of(|d| d.spread),
        delta_by_age: by_age(basis.delta()),
        rank_ic_by_age: by_age(Metric::RankIc),
    })
}

#[cfg(test)]
mod tests {
    use wf_shared::age::HorizonAges;
    use wf_shared::drift::DriftPath;
    use wf_shared::exposure::{Exposures, MISSING};
    use wf_shared::importance::Importance;
    use wf_shared::spec::ModelConfig;

    use super::*;

    fn day(p_at_k: f64, rank_ic: Option<f64>) -> Option<DayMetrics> {
        Some(DayMetrics {
            p_at_k,
            base_rate: 0.5,
            median_p_at_k: p_at_k,
            median_base_rate: 0.5,
            rank_ic,
            spread: 0.01,
            top_k_mean: 0.0,
            stocks: 40,
            k: 4,
        })
    }

    /// A run retrained on `retrain_day` with exposures (vol_60, ret_5) by age and a
    /// horizon-20 path.
    fn run(model: usize, retrain_day: usize, values: Vec<i16>) -> ModelRun {
        // Trained runs measure importance of features (a, b): (0.1, 0.5) on day 10, (0.3, 0.1) on day 20.
        let importance = if model == 0 {
            let loss = if retrain_day == 10 { vec![0.1, 0.5] } else { vec![0.3, 0.1] };
            Importance { days: 5, base_loss: 1.0, base_rank_ic: 0.1, rank_ic: vec![0.01, 0.02], loss }
        } else {
            Importance::default()
        };
        ModelRun {
            window: 126,
            model,
            seed: 0,
            retrain_day,
            train_seconds: 1.0,
            ages: vec![day(0.6, Some(0.1)), day(0.5, None), None],
            drift: Some(DriftPath { training: Vec::new(), days: Vec::new() }),
            rankings: Vec::new(),
            exposures: Exposures { factors: vec!["vol_60".into(), "ret_5".into()], values },
            horizons: vec![HorizonAges { horizon: 20, ages: vec![day(0.7, Some(0.3)), None, day(0.4, Some(-0.1))] }],
            importance,
        }
    }

    #[test]
    fn exposures_average_each_models_ages_then_the_models_and_warn_for_trained_models_only() {
        let config = SweepConfig::from_toml(include_str!("../../../configs/quickstart.toml")).expect("quickstart");
        let mut config = config;
        config.horizons = vec![5, 20];
        config.models = vec![
            ModelConfig { name: "mlp".into(), kind: ModelKind::Mlp, params: Default::default(), seeds: vec![0] },
            ModelConfig { name: "-vol_60".into(), kind: ModelKind::Factor, params: Default::default(), seeds: vec![0] },
        ];
        // Ages (vol_60, ret_5): run 1 (0.9, 0.1), (0.7, –), (–, –); run 2 (0.5, −0.3), (0.3, −0.1), (0.4, 0.0).
        let first = vec![9000, 1000, 7000, MISSING, MISSING, MISSING];
        let second = vec![5000, -3000, 3000, -1000, 4000, 0];
        let matrix = AgeMatrix {
            basis: Default::default(),
            horizon: 5,
            max_age: 3,
            runs: vec![
                run(0, 20, second.clone()),
                run(0, 10, first.clone()),
                run(1, 10, first.iter().map(|v| if *v == MISSING { MISSING } else { -*v }).collect()),
            ],
        };
        let calendar = TradingCalendar::business_days(chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"), 40);
        let diagnostics = build(&config, &matrix, &calendar, &["a".to_string(), "b".to_string()]);
        let mlp = &diagnostics.exposures[0];
        assert_eq!((mlp.model.as_str(), mlp.trained), ("mlp", true));
        assert_eq!(
            mlp.retrain_dates,
            vec![calendar.date(10).expect("d"), calendar.date(20).expect("d")],
            "retrain order"
        );
        let vol = &mlp.factors[0];
        let close = |a: &[Option<f64>], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.is_some_and(|a| (a - b).abs() < 1e-12))
        };
        assert!(close(&vol.by_run, &[0.8, 0.4]), "{:?}", vol.by_run);
        assert!((vol.mean - 0.6).abs() < 1e-12, "{}", vol.mean);
        assert!(close(&vol.by_age, &[0.7, 0.5, 0.4]), "{:?}", vol.by_age);
        let ret = &mlp.factors[1];
        assert_eq!(ret.by_run[0], Some(0.1));
        assert!((ret.by_run[1].expect("mean") - (-0.4 / 3.0)).abs() < 1e-12);
        assert_eq!(mlp.warnings, vec!["scores rank mostly by vol_60: ρ = 0.60".to_string()]);
        // The baseline's exposure to its own factor is past the limit, but it is not warned about.
        let baseline = &diagnostics.exposures[1];
        assert!(!baseline.trained && baseline.factors[0].mean < -0.5 && baseline.warnings.is_empty());

        // Horizons: every (run, age) cell pooled, in the spec's order.
        let rows = &diagnostics.horizons[0].rows;
        assert_eq!(
            rows.iter().map(|r| (r.horizon, r.primary, r.cells)).collect::<Vec<_>>(),
            [(5, true, 4), (20, false, 4)]
        );
        assert!((rows[0].p_at_k - 0.55).abs() < 1e-12 && (rows[0].delta - 0.05).abs() < 1e-12);
        assert!((rows[0].rank_ic.expect("ic") - 0.1).abs() < 1e-12, "cells without a RankIC are skipped");
        assert!((rows[1].p_at_k - 0.55).abs() < 1e-12);
        assert!((rows[1].rank_ic.expect("ic") - 0.1).abs() < 1e-12);
        assert_eq!(rows[1].delta_by_age.len(), 3);
        assert!((rows[1].delta_by_age[0].expect("d") - 0.2).abs() < 1e-12);
        assert_eq!(rows[1].delta_by_age[1], None, "no run scored age 1 at horizon 20");
        assert_eq!(rows[0].rank_ic_by_age[1], None);

        // Importance: each feature's mean over the runs, most important first; none for the baseline.
        assert_eq!(diagnostics.importance.len(), 1, "the untrained baseline measures none");
        let importance = &diagnostics.importance[0];
        assert_eq!(importance.model, "mlp");
        let order: Vec<&str> = importance.features.iter().map(|f| f.feature.as_str()).collect();
        assert_eq!(order, ["b", "a"]);
        assert!((importance.features[0].loss - 0.3).abs() < 1e-6 && (importance.features[1].loss - 0.2).abs() < 1e-6);
        assert!((importance.features[0].rank_ic - 0.02).abs() < 1e-6);
        assert_eq!(importance.features[1].by_run.len(), 2);
        assert!((importance.features[1].by_run[0].expect("run") - 0.1).abs() < 1e-6, "retrain order: day 10 first");
    }
}
