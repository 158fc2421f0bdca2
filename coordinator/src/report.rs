//! A sweep's report, aggregated from its committed results with the analytics core:
//! the age matrix → decay curves per (window, model), and per line the replays of the
//! fixed cadences and the adaptive policies, compared.
//!
//! A report is built from whatever is committed: jobs without a result (still running,
//! dead-lettered, cancelled) are listed as missing, and every figure says how many
//! models it rests on.

use serde::Serialize;
use wf_shared::age::{AgeMatrix, Line, Metric};
use wf_shared::bootstrap::Bootstrap;
use wf_shared::decay::{DecayCurve, decay_curves};
use wf_shared::plan::Plan;
use wf_shared::replay::{ScheduleOutcome, compare_line, expand_policies};
use wf_shared::spec::{SweepConfig, TopK};

/// Best adaptive policies per line that get bootstrap intervals.
const TOP_POLICIES: usize = 5;

/// The schedules of one (window, model, seed) line.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LineReport {
    pub window: u32,
    pub model: String,
    pub seed: u64,
    /// Fixed cadences first, in spec order, then the adaptive policies in grid order.
    pub schedules: Vec<ScheduleOutcome>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SweepReport {
    pub sweep_id: String,
    pub name: String,
    pub dataset_hash: String,
    /// The horizon and K the metrics are measured at.
    pub horizon: u32,
    pub k: TopK,
    pub jobs: usize,
    pub results: usize,
    /// Job keys without a committed result.
    pub missing: Vec<String>,
    pub decay: Vec<DecayCurve>,
    pub lines: Vec<LineReport>,
}

/// Builds the report of `plan` (of `config`) from the runs in `matrix`.
pub fn build(
    sweep_id: &str,
    config: &SweepConfig,
    plan: &Plan,
    dataset_hash: String,
    matrix: &AgeMatrix,
    missing: Vec<String>,
) -> SweepReport {
    let bootstrap = Bootstrap {
        block: config.primary_horizon as usize,
        samples: config.bootstrap_samples,
        seed: config.bootstrap_seed,
    };
    let policies = expand_policies(&config.triggers);
    let candidates: &[usize] =
        plan.retrain_days.iter().max_by_key(|(_, days)| days.len()).map(|(_, days)| days.as_slice()).unwrap_or(&[]);
    let model_name =
        |index: usize| config.models.get(index).map_or_else(|| format!("model {index}"), |m| m.name.clone());
    let lines = matrix
        .lines()
        .into_iter()
        .map(|line: Line| LineReport {
            window: line.window,
            model: model_name(line.model),
            seed: line.seed,
            schedules: compare_line(matrix, line, &plan.retrain_days, &policies, candidates, bootstrap, TOP_POLICIES),
        })
        .collect();
    SweepReport {
        sweep_id: sweep_id.to_string(),
        name: config.name.clone(),
        dataset_hash,
        horizon: config.primary_horizon,
        k: config.k,
        jobs: plan.jobs.len(),
        results: matrix.runs.len(),
        missing,
        decay: decay_curves(matrix, Metric::DeltaPAtK, config.bootstrap_samples, config.bootstrap_seed),
        lines,
    }
}

impl SweepReport {
    /// The compact summary `wf run` prints: per window × model × fixed cadence, mean
    /// ΔP@K with its interval, RankIC, ICIR and retrains; then each line's best adaptive
    /// policy among those scored on as many days as the fixed cadences.
    pub fn summary_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>6}  {:<10} {:<34} {:>8}  {:<19} {:>7} {:>6} {:>8}",
            "window", "model", "schedule", "ΔP@K", "95% interval", "RankIC", "ICIR", "retrains"
        );
        for line in &self.lines {
            // A policy that lets its model age past max_age has unscored days; its mean over
            // fewer (earlier) days is not comparable, so only full-coverage policies compete.
            let covered = line.schedules.iter().filter(|s| !s.adaptive).map(|s| s.delta.n).max().unwrap_or(0);
            let best_adaptive = line
                .schedules
                .iter()
                .filter(|s| s.adaptive && s.delta.n >= covered)
                .max_by(|a, b| a.delta.mean.total_cmp(&b.delta.mean));
            for schedule in line.schedules.iter().filter(|s| !s.adaptive).chain(best_adaptive) {
                let interval = schedule
                    .delta_interval
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |i| format!("[{:+.4}, {:+.4}]", i.low, i.high));
                let name =
                    if schedule.adaptive { format!("best adaptive: {}", schedule.name) } else { schedule.name.clone() };
                let _ = writeln!(
                    out,
                    "{:>6}  {:<10} {:<34} {:>+8.4}  {:<19} {:>7.4} {:>6.2} {:>8}",
                    line.window,
                    line.model,
                    truncate(&name, 34),
                    schedule.delta.mean,
                    interval,
                    schedule.rank_ic.mean,
                    schedule.rank_ic.ratio(),
                    schedule.retrains()
                );
            }
        }
        if !self.missing.is_empty() {
            let _ = writeln!(
                out,
                "{} of {} jobs have no result (failed, cancelled or still running)",
                self.missing.len(),
                self.jobs
            );
        }
        out
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut short: String = text.chars().take(width - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use wf_shared::metric::Summary;

    use super::*;

    fn schedule(name: &str, adaptive: bool, deltas: &[f64]) -> ScheduleOutcome {
        ScheduleOutcome {
            line: Line { window: 126, model: 0, seed: 0 },
            name: name.into(),
            adaptive,
            retrain_days: vec![0],
            train_seconds: 1.0,
            delta: Summary::of(deltas),
            delta_interval: None,
            rank_ic: Summary::of(deltas),
            difference_vs_best_fixed: None,
            on_frontier: false,
        }
    }

    #[test]
    fn the_best_adaptive_policy_is_chosen_among_those_scored_on_every_day() {
        let report = SweepReport {
            sweep_id: "sw-000000000001".into(),
            name: "t".into(),
            dataset_hash: String::new(),
            horizon: 5,
            k: TopK::Count(10),
            jobs: 3,
            results: 3,
            missing: Vec::new(),
            decay: Vec::new(),
            lines: vec![LineReport {
                window: 126,
                model: "mlp".into(),
                seed: 0,
                schedules: vec![
                    schedule("weekly", false, &[0.02; 100]),
                    schedule("full coverage", true, &[0.03; 100]),
                    schedule("aged out early", true, &[0.09; 20]),
                ],
            }],
        };
        let table = report.summary_table();
        assert!(table.contains("best adaptive: full coverage"), "{table}");
        assert!(!table.contains("aged out early"), "{table}");
    }
}
