//! Comparing schedules of one line: quality, cost, the paired difference against the
//! best fixed cadence, and the cost/quality frontier.
//!
//! **Coverage.** A schedule covers a day of its line's period (the line's first retrain
//! day to the last day any of its models scores) when its live model has a row that day;
//! one whose model ages past `max_age` leaves days uncovered. Only schedules with full
//! coverage are ranked as "best", placed on the frontier, or chosen as the best fixed
//! cadence (if no fixed cadence covers the period, the one that covers most); paired
//! differences are taken on the days both series have a value, and say how many.

use serde::{Deserialize, Serialize};

use super::{LineReplayer, Policy, Replay};
use crate::age::{AgeMatrix, Line, Metric};
use crate::bootstrap::{Bootstrap, Interval};
use crate::cadence::Cadence;
use crate::metric::Summary;

/// The paired ΔP@K difference of a schedule against a reference schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub against: String,
    pub mean: f64,
    pub interval: Option<Interval>,
    /// Days both series have a value: the days the difference is taken on.
    #[serde(default)]
    pub common_days: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleOutcome {
    pub line: Line,
    pub name: String,
    pub adaptive: bool,
    pub retrain_days: Vec<usize>,
    pub train_seconds: f64,
    pub delta: Summary,
    pub delta_interval: Option<Interval>,
    /// RankIC series; `rank_ic.ratio()` is the ICIR.
    pub rank_ic: Summary,
    pub difference_vs_best_fixed: Option<Difference>,
    /// On the cost/quality frontier (schedules with full coverage only).
    pub on_frontier: bool,
    /// Days of the line's period on which the schedule has a live model with a row.
    #[serde(default)]
    pub covered_days: usize,
    /// Days of the line's period.
    #[serde(default)]
    pub period_days: usize,
}

impl ScheduleOutcome {
    pub fn retrains(&self) -> usize {
        self.retrain_days.len()
    }

    /// Share of the line's period the schedule covers.
    pub fn coverage(&self) -> f64 {
        if self.period_days == 0 { 1.0 } else { self.covered_days as f64 / self.period_days as f64 }
    }

    pub fn full_coverage(&self) -> bool {
        self.covered_days >= self.period_days
    }
}

/// Marks the points not dominated in (lower cost, higher quality).
pub fn frontier(points: &[(f64, f64)]) -> Vec<bool> {
    points
        .iter()
        .map(|(cost, quality)| !points.iter().any(|(c, q)| (c <= cost && q >= quality) && (c < cost || q > quality)))
        .collect()
}

/// A line's schedules compared, with what the verdict reads next: each schedule's daily
/// ΔP@K over the line's period (`NaN` where it has no live row), the period's first day
/// and the best fixed cadence.
#[derive(Debug, Clone, PartialEq)]
pub struct LineComparison {
    pub outcomes: Vec<ScheduleOutcome>,
    pub series: Vec<Vec<f64>>,
    pub first_day: usize,
    /// Index into `outcomes` of the best fixed cadence.
    pub best_fixed: Option<usize>,
}

/// Replays the fixed cadences and the policies of `line` and compares them. Intervals
/// are computed for the fixed cadences, the frontier and the `top` best policies among
/// those scored on as many days as the fixed cadences (the bootstrap dominates the cost
/// of a large grid).
/// `None` when the line has no run.
pub fn compare_line(
    matrix: &AgeMatrix,
    line: Line,
    fixed: &[(Cadence, Vec<usize>)],
    policies: &[Policy],
    candidates: &[usize],
    bootstrap: Bootstrap,
    top: usize,
) -> Option<LineComparison> {
    let replayer = LineReplayer::new(matrix, line)?;
    let mut replays: Vec<(String, bool, Replay)> =
        fixed.iter().map(|(cadence, days)| (cadence.to_string(), false, replayer.fixed(days))).collect();
    replays.extend(policies.iter().map(|p| (p.to_string(), true, replayer.adaptive(p, candidates))));

    let series: Vec<Vec<f64>> = replays.iter().map(|(_, _, r)| r.series(matrix, matrix.basis.delta())).collect();
    let summaries: Vec<Summary> = series.iter().map(|s| Summary::of(s)).collect();
    let covered: Vec<usize> = replays.iter().map(|(_, _, r)| r.live.iter().filter(|c| c.is_some()).count()).collect();
    let period = replays.iter().map(|(_, _, r)| r.live.len()).max().unwrap_or(0);
    let full: Vec<bool> = covered.iter().map(|c| *c >= period).collect();
    let seconds: Vec<f64> = replays
        .iter()
        .map(|(_, _, r)| {
            r.retrain_days.iter().filter_map(|d| replayer.run_at(*d)).map(|run| matrix.runs[run].train_seconds).sum()
        })
        .collect();
    // The frontier among fully covered schedules; a partial one is never on it.
    let points: Vec<(f64, f64)> = replays
        .iter()
        .zip(&summaries)
        .zip(&full)
        .filter(|(_, full)| **full)
        .map(|(((_, _, r), s), _)| (r.retrain_days.len() as f64, s.mean))
        .collect();
    let mut frontier_of_full = frontier(&points).into_iter();
    let on_frontier: Vec<bool> = full.iter().map(|full| *full && frontier_of_full.next().unwrap_or(false)).collect();
    // The best fixed cadence: the most covered days first (all of them, if any covers
    // the period), then the higher mean. Policies rank fully covered first.
    let best_fixed = (0..fixed.len())
        .filter(|i| summaries[*i].mean.is_finite())
        .max_by(|a, b| covered[*a].cmp(&covered[*b]).then(summaries[*a].mean.total_cmp(&summaries[*b].mean)));
    let mut ranked: Vec<usize> = (fixed.len()..replays.len()).collect();
    ranked.sort_by(|a, b| full[*b].cmp(&full[*a]).then(summaries[*b].mean.total_cmp(&summaries[*a].mean)));
    let detailed =
        |index: usize| index < fixed.len() || on_frontier[index] || ranked.iter().take(top).any(|r| *r == index);

    let outcomes = replays
        .iter()
        .enumerate()
        .map(|(index, (name, adaptive, replay))| {
            let with_interval = detailed(index);
            let difference = best_fixed.filter(|best| *best != index).map(|best| {
                let paired =
                    Summary::of(&series[index].iter().zip(&series[best]).map(|(a, b)| a - b).collect::<Vec<_>>());
                Difference {
                    against: replays[best].0.clone(),
                    mean: paired.mean,
                    interval: if with_interval {
                        bootstrap.paired_difference_interval(&series[index], &series[best])
                    } else {
                        None
                    },
                    common_days: paired.n,
                }
            });
            ScheduleOutcome {
                line,
                name: name.clone(),
                adaptive: *adaptive,
                retrain_days: replay.retrain_days.clone(),
                train_seconds: seconds[index],
                delta: summaries[index],
                delta_interval: if with_interval { bootstrap.mean_interval(&series[index]) } else { None },
                rank_ic: Summary::of(&replay.series(matrix, Metric::RankIc)),
                difference_vs_best_fixed: difference,
                on_frontier: on_frontier[index],
                covered_days: covered[index],
                period_days: period,
            }
        })
        .collect();
    let first_day = replays.first().map_or(0, |(_, _, r)| r.first_day);
    Some(LineComparison { outcomes, series, first_day, best_fixed })
}
