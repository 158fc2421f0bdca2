//! The age matrix: every trained model's out-of-sample metrics at every age.
//!
//! A model retrained on day `r` is scored on every test day `t` from `r` up to its
//! scoring range; the row of `(model, t)` sits at `age = t − r`. Because every model is
//! scored at every age, any retraining schedule can be replayed from this matrix without
//! training again.

use serde::{Deserialize, Serialize};

use crate::drift::DriftPath;
use crate::exposure::Exposures;
use crate::importance::Importance;
use crate::metric::DayMetrics;
pub use crate::metric::Metric;
use crate::plan::Job;

/// One trained model's out-of-sample path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRun {
    pub window: u32,
    /// Index of the model in the sweep.
    pub model: usize,
    pub seed: u64,
    pub retrain_day: usize,
    pub train_seconds: f64,
    /// Metrics by age (index = age); `None` where no stock was scored.
    pub ages: Vec<Option<DayMetrics>>,
    /// Feature drift against the training window, by age; absent when not measured.
    pub drift: Option<DriftPath>,
    /// By age, the universe indices of the top-ranked stocks, best first (the backtest's
    /// input); empty when the result kept none.
    #[serde(default)]
    pub rankings: Vec<Vec<u32>>,
    /// Style exposures by age (none measured in results before trainer version 5).
    #[serde(default)]
    pub exposures: Exposures,
    /// Metrics by age at every trained horizon but the primary one.
    #[serde(default)]
    pub horizons: Vec<HorizonAges>,
    /// Permutation importance of each feature on the validation days.
    #[serde(default)]
    pub importance: Importance,
}

/// The universe indices of a day's ranking given as positions in the day's rows (rows of a
/// day are in code order); a position past the day's rows is dropped.
pub fn universe_indices(panel: &crate::panel::Panel, day: usize, positions: &[u32]) -> Vec<u32> {
    let stocks = &panel.stock()[panel.rows_of_day(day)];
    positions.iter().filter_map(|p| stocks.get(*p as usize).copied()).collect()
}

/// Metrics by age at one horizon (index = age; `None` where no stock was scored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonAges {
    pub horizon: u32,
    pub ages: Vec<Option<DayMetrics>>,
}

impl ModelRun {
    /// The run of `job`, from what its worker reported, on `panel` (the one planned:
    /// its rankings' positions in each day's rows become universe indices).
    pub fn of_job(job: &Job, result: JobResult, panel: &crate::panel::Panel) -> Self {
        let rankings = result
            .rankings
            .iter()
            .enumerate()
            .map(|(age, ranking)| universe_indices(panel, job.score_days.start + age, ranking))
            .collect();
        Self {
            window: job.window,
            model: job.model,
            seed: job.seed,
            retrain_day: job.retrain_day,
            train_seconds: result.training.seconds,
            ages: result.ages,
            drift: Some(result.drift),
            rankings,
            exposures: result.exposures,
            horizons: result.horizons,
            importance: result.importance,
        }
    }

    pub fn at(&self, age: usize) -> Option<&DayMetrics> {
        self.ages.get(age).and_then(Option::as_ref)
    }

    /// The metrics of `age` at `horizon`: the primary horizon's when `horizon` is
    /// `primary`, otherwise the kept horizon's (`None` when not kept).
    pub fn at_horizon(&self, horizon: u32, primary: u32, age: usize) -> Option<&DayMetrics> {
        if horizon == primary {
            return self.at(age);
        }
        let kept = self.horizons.iter().find(|h| h.horizon == horizon)?;
        kept.ages.get(age).and_then(Option::as_ref)
    }
}

/// How a job's training went, as reported with its result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub epochs: u32,
    pub best_epoch: u32,
    pub best_validation_loss: f64,
    pub seconds: f64,
    /// Where it trained: `cpu` or `cuda:N`.
    pub device: String,
    pub training_days: usize,
    pub validation_days: usize,
}

/// What one job computed: the row of the age matrix it contributes, with drift and
/// training statistics. Written once per job key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub training: TrainingSummary,
    /// Metrics by age (index = age); `None` where no stock was scored.
    pub ages: Vec<Option<DayMetrics>>,
    pub drift: DriftPath,
    /// By age, the top-ranked stocks as positions in the day's rows (in code order), best
    /// first (the backtest's input, `docs/ANALYTICS.md` "Rankings kept"; a run holds
    /// them as universe indices, [`ModelRun::of_job`]); empty where nothing was scored, and
    /// empty altogether in results that keep none.
    #[serde(default)]
    pub rankings: Vec<Vec<u32>>,
    /// Style exposures of the scores by age (`docs/ANALYTICS.md` "Exposures").
    #[serde(default)]
    pub exposures: Exposures,
    /// Metrics by age at each trained horizon but the primary one, in the spec's order.
    #[serde(default)]
    pub horizons: Vec<HorizonAges>,
    /// Permutation importance of each feature on the job's validation days (inside its
    /// training window; `docs/ANALYTICS.md` "Feature importance").
    #[serde(default)]
    pub importance: Importance,
}

impl JobResult {
    /// The job's out-of-sample summary for monitoring: mean ΔP@K on the median basis
    /// (market-neutral, whatever its sweep's basis) over the ages it scored,
    /// and mean RankIC over the ages that have one (`docs/ANALYTICS.md`, "Job summary").
    /// `None` where no age has a value.
    pub fn summary(&self) -> (Option<f64>, Option<f64>) {
        let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        let scored = || self.ages.iter().flatten();
        (mean(scored().map(DayMetrics::median_delta).collect()), mean(scored().filter_map(|d| d.rank_ic).collect()))
    }
}

/// All runs of a sweep, with the horizon their metrics were measured at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeMatrix {
    pub horizon: u32,
    pub max_age: u32,
    pub runs: Vec<ModelRun>,
    /// The basis replays, triggers and verdicts read ΔP@K and P@K on.
    pub basis: crate::metric::Basis,
}

/// The runs of one (window, model, seed) line, sorted by retrain day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Line {
    pub window: u32,
    pub model: usize,
    pub seed: u64,
}

impl AgeMatrix {
    /// The distinct lines, sorted.
    pub fn lines(&self) -> Vec<Line> {
        let mut lines: Vec<Line> =
            self.runs.iter().map(|r| Line { window: r.window, model: r.model, seed: r.seed }).collect();
        lines.sort_unstable();
        lines.dedup();
        lines
    }

    /// Indices of the runs of `line`, by retrain day.
    pub fn runs_of(&self, line: Line) -> Vec<usize> {
        let mut runs: Vec<usize> = (0..self.runs.len())
            .filter(|i| {
                let run = &self.runs[*i];
                run.window == line.window && run.model == line.model && run.seed == line.seed
            })
            .collect();
        runs.sort_by_key(|i| self.runs[*i].retrain_day);
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(p_at_k: f64, base_rate: f64, rank_ic: Option<f64>) -> Option<DayMetrics> {
        Some(DayMetrics {
            p_at_k,
            base_rate,
            // The median basis reads 0.05 lower.
            median_p_at_k: p_at_k - 0.05,
            median_base_rate: base_rate,
            rank_ic,
            spread: 0.0,
            top_k_mean: 0.0,
            stocks: 10,
            k: 2,
        })
    }

    #[test]
    fn a_job_summary_averages_the_scored_ages() {
        let mut result = JobResult {
            training: TrainingSummary::default(),
            ages: vec![day(0.6, 0.5, Some(0.1)), None, day(0.4, 0.5, None), day(0.8, 0.5, Some(-0.04))],
            drift: DriftPath { training: Vec::new(), days: Vec::new() },
            rankings: Vec::new(),
            exposures: Exposures::default(),
            horizons: Vec::new(),
            importance: Importance::default(),
        };
        let (delta, rank_ic) = result.summary();
        // On the median basis: (0.1 − 0.1 + 0.3) / 3 less 0.05.
        assert!((delta.expect("ΔP@K") - ((0.1 - 0.1 + 0.3) / 3.0 - 0.05)).abs() < 1e-12);
        assert!((rank_ic.expect("RankIC") - 0.03).abs() < 1e-12);
        result.ages = vec![None, None];
        assert_eq!(result.summary(), (None, None));
    }
}
