//! What may never be a feature: a label. A panel's features are declared (by `wf data
//! prepare` in the file's metadata, or by the spec's `dataset.features`), never guessed
//! from whatever numeric columns a file has; and a declared feature is refused, naming
//! it, when its name reads like a label or its values copy a target.
//!
//! - Names: `fwd_*`, `target*`, `label*`, `ret_fwd*`, `next_*` and `y`, in any case.
//! - Values: equal to a target's (the feature as stored, the target rounded to the
//!   feature's f32) on more than 99% of the rows where the target is known.
//! - Transforms: a rank correlation (Spearman's ρ) with a target of at least 0.99, on an
//!   evenly spaced sample of at most 20,000 rows (those where both are known). Any
//!   increasing (or decreasing) function of a label has |ρ| = 1 on every sample, however
//!   it is scaled or shifted. Real features reach a small fraction of that: the largest
//!   |ρ| on jp_tse1000 is 0.039, on the null market 0.022
//!   (`cargo run --release -p wf-data --example label_guard -- URI`).

use crate::metric::{average_ranks, pearson, spearman};
use crate::panel::{Panel, target_name};

/// Name prefixes of columns that are labels, lower case.
const LABEL_PREFIXES: [&str; 5] = ["fwd_", "target", "label", "ret_fwd", "next_"];

/// Percentage of rows above which a feature equal to a target is a copy of it.
pub const COPY_PERCENT: usize = 99;

/// |Spearman's ρ| with a target at or above which a feature is a transform of it.
pub const TRANSFORM_RHO: f64 = 0.99;

/// Rows the rank correlation reads at most: evenly spaced over the panel, those where
/// both the feature and the target are known (a sample: the check costs about the same
/// on any panel).
pub const RANK_SAMPLE_ROWS: usize = 20_000;

/// |Mean same-day RankIC| with a target at or above which a feature is named a look-ahead
/// suspect: a feature that ranks stocks today the way their returns from today on rank
/// them has most likely read those returns. Real features reach a third of it at most: the
/// largest on jp_tse1000 is 0.099 (`beta_60` with `fwd_ret_5`, over 57 sampled days), on the
/// null market 0.019, and on the planted-momentum synthetic market, whose features are
/// built to predict, 0.116 (`cargo run --release -p wf-data --example label_guard --
/// URI`, 2026-12-08). What it catches: a feature that mixes the target itself (or most of
/// it) into its value. What it does not: a past return shifted by a day onto the target's
/// window shares only part of it (`ret_5` one day late against `fwd_ret_5` share one day of
/// five: a correlation near 0.2 by that arithmetic, not measured) and stays under the bound. Not a refusal: a suspect is named, with its
/// figure, in `wf plan` and in the report.
pub const LOOKAHEAD_RANK_IC: f64 = 0.3;

/// Days the same-day RankIC reads at most, evenly spaced over the panel (the figure is a
/// mean over days; 60 of them make it precise to about ±0.02 for a real feature).
pub const LOOKAHEAD_SAMPLE_DAYS: usize = 60;

/// A feature whose mean same-day RankIC with a target is implausibly high.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LookaheadSuspect {
    pub feature: String,
    pub target: String,
    /// The mean over the sampled days of the day's Spearman ρ between feature and target.
    pub rank_ic: f64,
    /// Days it was measured on.
    pub days: usize,
}

impl std::fmt::Display for LookaheadSuspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "feature {:?} has mean same-day RankIC {:+.3} with {} over {} days (a real feature stays far below \
             {LOOKAHEAD_RANK_IC}): does it read future prices?",
            self.feature, self.rank_ic, self.target, self.days
        )
    }
}

/// The mean same-day RankIC of feature `feature` with target `target` (indices), over
/// at most [`LOOKAHEAD_SAMPLE_DAYS`] evenly spaced days with at least 10 stocks where
/// both are known; with the days read. `None` without such a day.
pub fn same_day_rank_ic(panel: &Panel, feature: usize, target: usize) -> Option<(f64, usize)> {
    let (values, labels) = (panel.features().get(feature)?, panel.targets().get(target)?);
    let days = panel.calendar().len();
    let mut ics = Vec::new();
    for day in (0..days).step_by(days.div_ceil(LOOKAHEAD_SAMPLE_DAYS).max(1)) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for row in panel.rows_of_day(day) {
            if values[row].is_finite() && labels[row].is_finite() {
                a.push(f64::from(values[row]));
                b.push(labels[row]);
            }
        }
        if a.len() >= 10
            && let Some(ic) = spearman(&a, &b)
        {
            ics.push(ic);
        }
    }
    (!ics.is_empty()).then(|| (ics.iter().sum::<f64>() / ics.len() as f64, ics.len()))
}

/// Every (feature, target) pair's mean same-day RankIC, largest |value| first.
pub fn same_day_rank_ics(panel: &Panel) -> Vec<LookaheadSuspect> {
    use rayon::prelude::*;
    let pairs: Vec<(usize, usize)> =
        (0..panel.feature_names().len()).flat_map(|f| (0..panel.horizons().len()).map(move |t| (f, t))).collect();
    let mut all: Vec<LookaheadSuspect> = pairs
        .into_par_iter()
        .filter_map(|(f, t)| {
            let (rank_ic, days) = same_day_rank_ic(panel, f, t)?;
            let feature = panel.feature_names()[f].clone();
            Some(LookaheadSuspect { feature, target: target_name(panel.horizons()[t]), rank_ic, days })
        })
        .collect();
    all.sort_by(|a, b| b.rank_ic.abs().total_cmp(&a.rank_ic.abs()));
    all
}

/// The look-ahead suspects of `panel`: pairs at or above [`LOOKAHEAD_RANK_IC`].
pub fn lookahead_suspects(panel: &Panel) -> Vec<LookaheadSuspect> {
    same_day_rank_ics(panel).into_iter().filter(|s| s.rank_ic.abs() >= LOOKAHEAD_RANK_IC).collect()
}

/// Why a column is refused as a feature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelRefusal {
    #[error("column {column:?} reads like a label (name matches {pattern:?}) and is refused as a feature")]
    Name { column: String, pattern: String },
    #[error(
        "feature {column:?} equals target {target} on {:.1}% of rows: a copy of a label is refused as a feature",
        share * 100.0
    )]
    Copy { column: String, target: String, share: f64 },
    #[error(
        "feature {column:?} has rank correlation {rho:.4} with target {target} (on {rows} rows): a transform of a \
         label is refused as a feature"
    )]
    Transform { column: String, target: String, rho: f64, rows: usize },
}

/// The pattern a label-like column name matches, if any.
pub fn label_like_name(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if lower == "y" {
        return Some("y".into());
    }
    LABEL_PREFIXES.iter().find(|prefix| lower.starts_with(*prefix)).map(|prefix| format!("{prefix}*"))
}

/// Refuses a feature name that reads like a label.
pub fn check_feature_name(name: &str) -> Result<(), LabelRefusal> {
    match label_like_name(name) {
        Some(pattern) => Err(LabelRefusal::Name { column: name.to_string(), pattern }),
        None => Ok(()),
    }
}

/// The share of rows where `feature` equals `target`, among rows where the target is
/// known, when it exceeds [`COPY_PERCENT`]%. Stops early once that share is out of reach.
pub fn copy_share(feature: &[f32], target: &[f64]) -> Option<f64> {
    let known = target.iter().filter(|t| t.is_finite()).count();
    if known == 0 {
        return None;
    }
    // Above COPY_PERCENT% equal means fewer than (100 - COPY_PERCENT)% different.
    let out_of_reach = |different: usize| different * 100 >= known * (100 - COPY_PERCENT);
    let (mut equal, mut different) = (0usize, 0usize);
    for (f, t) in feature.iter().zip(target).filter(|(_, t)| t.is_finite()) {
        if *f == *t as f32 {
            equal += 1;
        } else {
            different += 1;
            if out_of_reach(different) {
                return None;
            }
        }
    }
    Some(equal as f64 / known as f64)
}

/// Spearman's ρ between `feature` and `target` on an evenly spaced sample of at most
/// [`RANK_SAMPLE_ROWS`] rows, those where both are finite, with the rows it read; `None`
/// with fewer than 30 such rows or a constant side.
pub fn rank_correlation(feature: &[f32], target: &[f64]) -> Option<(f64, usize)> {
    let n = feature.len().min(target.len());
    let rows: Vec<usize> = (0..n)
        .step_by(n.div_ceil(RANK_SAMPLE_ROWS).max(1))
        .filter(|&row| feature[row].is_finite() && target[row].is_finite())
        .collect();
    if rows.len() < 30 {
        return None;
    }
    let features: Vec<f64> = rows.iter().map(|&row| f64::from(feature[row])).collect();
    let targets: Vec<f64> = rows.iter().map(|&row| target[row]).collect();
    pearson(&average_ranks(&features), &average_ranks(&targets)).map(|rho| (rho, rows.len()))
}

/// Refuses a panel any of whose features copies one of its targets, or is a monotone
/// transform of one.
pub fn check_panel(panel: &Panel) -> Result<(), LabelRefusal> {
    for (column, feature) in panel.feature_names().iter().zip(panel.features()) {
        check_feature_name(column)?;
        for (horizon, target) in panel.horizons().iter().zip(panel.targets()) {
            if let Some(share) = copy_share(feature, target) {
                return Err(LabelRefusal::Copy { column: column.clone(), target: target_name(*horizon), share });
            }
            if let Some((rho, rows)) = rank_correlation(feature, target).filter(|(rho, _)| rho.abs() >= TRANSFORM_RHO) {
                return Err(LabelRefusal::Transform {
                    column: column.clone(),
                    target: target_name(*horizon),
                    rho,
                    rows,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_like_names_are_refused_with_their_pattern() {
        for (name, pattern) in [
            ("fwd_ret_5", "fwd_*"),
            ("Target_5d", "target*"),
            ("label5", "label*"),
            ("y", "y"),
            ("Y", "y"),
            ("ret_fwd_10", "ret_fwd*"),
            ("next_close", "next_*"),
        ] {
            assert_eq!(label_like_name(name).as_deref(), Some(pattern), "{name}");
            let refusal = check_feature_name(name).expect_err("a label name");
            assert!(refusal.to_string().contains(&format!("{name:?}")), "{refusal}");
        }
        for name in ["ret_5", "mom_60_5", "vol_20", "yield", "my_label", "beta_60"] {
            assert_eq!(label_like_name(name), None, "{name} is not a label name");
        }
    }

    #[test]
    fn a_transform_of_a_target_is_found_and_a_correlated_feature_is_not() {
        let target: Vec<f64> =
            (0..5000).map(|i| (f64::from(i) * 0.37).sin() * 0.02 + f64::from(i % 7) * 1e-4).collect();
        let scaled: Vec<f32> = target.iter().map(|t| (1.0001 * t + 1e-9) as f32).collect();
        let exp: Vec<f32> = target.iter().map(|t| t.exp() as f32).collect();
        let negated: Vec<f32> = target.iter().map(|t| (-3.0 * t) as f32).collect();
        for transform in [&scaled, &exp, &negated] {
            let (rho, rows) = rank_correlation(transform, &target).expect("enough rows");
            assert!(rho.abs() >= TRANSFORM_RHO && rows == 5000, "{rho}");
        }
        // Strongly related but not a transform: a feature with noise of its own.
        let noisy: Vec<f32> =
            target.iter().enumerate().map(|(i, t)| (t + (f64::from(i as u32) * 1.7).cos() * 0.01) as f32).collect();
        let (rho, _) = rank_correlation(&noisy, &target).expect("enough rows");
        assert!(rho.abs() < TRANSFORM_RHO && rho > 0.5, "{rho}");
        // A large panel is sampled: at most RANK_SAMPLE_ROWS rows are read.
        let long: Vec<f64> = (0..100_000).map(|i| (f64::from(i) * 0.11).sin()).collect();
        let long_copy: Vec<f32> = long.iter().map(|t| (2.0 * t) as f32).collect();
        let (rho, rows) = rank_correlation(&long_copy, &long).expect("enough rows");
        assert!(rho > 0.999 && rows <= RANK_SAMPLE_ROWS, "{rho} on {rows}");
    }

    #[test]
    fn a_copy_of_a_target_is_found_and_a_feature_is_not() {
        let target: Vec<f64> = (0..1000).map(|i| (f64::from(i) * 0.37).sin() * 0.02).collect();
        let copy: Vec<f32> = target.iter().map(|t| *t as f32).collect();
        assert_eq!(copy_share(&copy, &target), Some(1.0));
        // 0.5% of rows changed is still a copy; exactly 1% (99% equal) or 2% is not.
        let mut nearly = copy.clone();
        nearly.iter_mut().take(5).for_each(|v| *v += 1.0);
        assert_eq!(copy_share(&nearly, &target), Some(0.995));
        let mut boundary = copy.clone();
        boundary.iter_mut().take(10).for_each(|v| *v += 1.0);
        assert_eq!(copy_share(&boundary, &target), None, "99% equal is not more than 99%");
        let mut different = copy.clone();
        different.iter_mut().take(20).for_each(|v| *v += 1.0);
        assert_eq!(copy_share(&different, &target), None);
        // Rows whose target is unknown (a stock's last h days) do not count.
        let mut with_nulls = target.clone();
        with_nulls.iter_mut().skip(990).for_each(|t| *t = f64::NAN);
        let mut shifted = copy.clone();
        shifted.iter_mut().skip(990).for_each(|v| *v = 7.0);
        assert_eq!(copy_share(&shifted, &with_nulls), Some(1.0));
    }
}
