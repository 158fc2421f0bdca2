//! What may never be a feature: a label. A panel's features are declared (by `wf data
//! prepare` in the file's metadata, or by the spec's `dataset.features`), never guessed
//! from whatever numeric columns a file has; and a declared feature is refused, naming
//! it, when its name reads like a label or its values copy a target.
//!
//! - Names: `fwd_*`, `target*`, `label*`, `ret_fwd*`, `next_*` and `y`, in any case.
//! - Values: equal to a target's (the feature as stored, the target rounded to the
//!   feature's f32) on more than 99% of the rows where the target is known.

use crate::panel::{Panel, target_name};

/// Name prefixes of columns that are labels, lower case.
const LABEL_PREFIXES: [&str; 5] = ["fwd_", "target", "label", "ret_fwd", "next_"];

/// Percentage of rows above which a feature equal to a target is a copy of it.
pub const COPY_PERCENT: usize = 99;

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

/// Refuses a panel any of whose features copies one of its targets.
pub fn check_panel(panel: &Panel) -> Result<(), LabelRefusal> {
    for (column, feature) in panel.feature_names().iter().zip(panel.features()) {
        check_feature_name(column)?;
        for (horizon, target) in panel.horizons().iter().zip(panel.targets()) {
            if let Some(share) = copy_share(feature, target) {
                return Err(LabelRefusal::Copy { column: column.clone(), target: target_name(*horizon), share });
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
