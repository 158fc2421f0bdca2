//! Scoring a trained model into its age-matrix rows: for each test day, the model's
//! scores for that day's stocks against the primary horizon's targets.

use std::ops::Range;

use crate::metric::{DayMetrics, day_metrics};
use crate::panel::Panel;
use crate::spec::TopK;

/// Metrics of `score_days` (index = age), scoring each panel row with `score`.
/// `None` when the panel has no target for `horizon`.
pub fn score_days(
    panel: &Panel,
    score_days: Range<usize>,
    horizon: u32,
    k: TopK,
    mut score: impl FnMut(usize) -> f64,
) -> Option<Vec<Option<DayMetrics>>> {
    let target = panel.target(horizon)?;
    let ages = score_days
        .map(|day| {
            let rows = panel.rows_of_day(day);
            let scores: Vec<f64> = rows.clone().map(&mut score).collect();
            day_metrics(&scores, &target[rows], k)
        })
        .collect();
    Some(ages)
}
