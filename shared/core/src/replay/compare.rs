//! Comparing schedules of one line: quality, cost, the paired difference against the
//! best fixed cadence, and the cost/quality frontier.

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
    pub on_frontier: bool,
}

impl ScheduleOutcome {
    pub fn retrains(&self) -> usize {
        self.retrain_days.len()
    }
}

/// Marks the points not dominated in (lower cost, higher quality).
pub fn frontier(points: &[(f64, f64)]) -> Vec<bool> {
    points
        .iter()
        .map(|(cost, quality)| !points.iter().any(|(c, q)| (c <= cost && q >= quality) && (c < cost || q > quality)))
        .collect()
}

/// Replays the fixed cadences and the policies of `line` and compares them. Intervals
/// are computed for the fixed cadences, the frontier and the `top` best policies among
/// those scored on as many days as the fixed cadences (the bootstrap dominates the cost
/// of a large grid).
pub fn compare_line(
    matrix: &AgeMatrix,
    line: Line,
    fixed: &[(Cadence, Vec<usize>)],
    policies: &[Policy],
    candidates: &[usize],
    bootstrap: Bootstrap,
    top: usize,
) -> Vec<ScheduleOutcome> {
    let Some(replayer) = LineReplayer::new(matrix, line) else { return Vec::new() };
    let mut replays: Vec<(String, bool, Replay)> =
        fixed.iter().map(|(cadence, days)| (cadence.to_string(), false, replayer.fixed(days))).collect();
    replays.extend(policies.iter().map(|p| (p.to_string(), true, replayer.adaptive(p, candidates))));

    let series: Vec<Vec<f64>> = replays.iter().map(|(_, _, r)| r.series(matrix, Metric::DeltaPAtK)).collect();
    let summaries: Vec<Summary> = series.iter().map(|s| Summary::of(s)).collect();
    let seconds: Vec<f64> = replays
        .iter()
        .map(|(_, _, r)| {
            r.retrain_days.iter().filter_map(|d| replayer.run_at(*d)).map(|run| matrix.runs[run].train_seconds).sum()
        })
        .collect();
    let on_frontier = frontier(
        &replays.iter().zip(&summaries).map(|((_, _, r), s)| (r.retrain_days.len() as f64, s.mean)).collect::<Vec<_>>(),
    );
    let best_fixed = (0..fixed.len())
        .filter(|i| summaries[*i].mean.is_finite())
        .max_by(|a, b| summaries[*a].mean.total_cmp(&summaries[*b].mean));
    // A policy that lets its model age past max_age leaves days unscored; its mean over
    // fewer (earlier) days is not comparable, so fully covered policies rank first.
    let covered = summaries[..fixed.len()].iter().map(|s| s.n).max().unwrap_or(0);
    let mut ranked: Vec<usize> = (fixed.len()..replays.len()).collect();
    ranked.sort_by(|a, b| {
        (summaries[*b].n >= covered)
            .cmp(&(summaries[*a].n >= covered))
            .then(summaries[*b].mean.total_cmp(&summaries[*a].mean))
    });
    let detailed =
        |index: usize| index < fixed.len() || on_frontier[index] || ranked.iter().take(top).any(|r| *r == index);

    replays
        .iter()
        .enumerate()
        .map(|(index, (name, adaptive, replay))| {
            let with_interval = detailed(index);
            let difference = best_fixed.filter(|best| *best != index).map(|best| Difference {
                against: replays[best].0.clone(),
                mean: Summary::of(&series[index].iter().zip(&series[best]).map(|(a, b)| a - b).collect::<Vec<_>>())
                    .mean,
                interval: if with_interval {
                    bootstrap.paired_difference_interval(&series[index], &series[best])
                } else {
                    None
                },
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
            }
        })
        .collect()
}
