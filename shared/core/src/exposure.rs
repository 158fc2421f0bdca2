//! Style exposures: how much of a model's ranking is a known style factor.
//!
//! On each scored day a job measures the Spearman correlation of its scores with each
//! style factor of [`STYLE_FACTORS`] the panel has, over the day's stocks with both a
//! finite score and a finite factor value, reading the scored day's own feature row only.
//! The panel stores features as per-day robust z-scores (monotone in the raw value, the
//! winsorised tails tied), so the correlation is the raw factor's up to those ties.
//! Values are kept as ρ × 10,000 rounded to an `i16` (a resolution of 0.0001).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::metric::{average_ranks, pearson, spearman};
use crate::panel::Panel;

/// The style factors exposures are measured against, in the order kept: volatility,
/// size and liquidity, momentum, short-term reversal, beta.
pub const STYLE_FACTORS: [&str; 8] =
    ["vol_20", "vol_60", "idio_vol_60", "log_value_20", "amihud_20", "mom_60_5", "ret_5", "beta_60"];

/// ρ is kept as `round(ρ × SCALE)`.
pub const SCALE: f64 = 10_000.0;

/// The kept value of a day without a correlation (fewer than 2 stocks, a constant side).
pub const MISSING: i16 = i16::MIN;

/// A model's exposures by age: for each scored day (index = age) and factor, ρ.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Exposures {
    /// The factors measured, in [`STYLE_FACTORS`] order (those the panel has).
    pub factors: Vec<String>,
    /// Age-major: `values[age * factors.len() + factor]`, ρ × [`SCALE`] rounded, or
    /// [`MISSING`].
    pub values: Vec<i16>,
}

impl Exposures {
    /// The exposures of the scores of `days` (one vector per day, in panel row order).
    pub fn measure(panel: &Panel, days: Range<usize>, scores: &[Vec<f64>]) -> Self {
        let columns: Vec<(&str, &[f32])> =
            STYLE_FACTORS.iter().filter_map(|name| panel.feature(name).map(|values| (*name, values))).collect();
        let mut values = Vec::with_capacity(days.len() * columns.len());
        let mut day_factors = Vec::with_capacity(columns.len());
        for (day, scores) in days.zip(scores) {
            let rows = panel.rows_of_day(day);
            day_factors.clear();
            day_factors.extend(columns.iter().map(|(_, column)| &column[rows.clone()]));
            values.extend(day_exposures(scores, &day_factors).into_iter().map(quantise));
        }
        Self { factors: columns.iter().map(|(name, _)| (*name).to_string()).collect(), values }
    }

    /// Ages measured.
    pub fn ages(&self) -> usize {
        self.values.len().checked_div(self.factors.len()).unwrap_or(0)
    }

    /// ρ of `factor` (an index into `factors`) at `age`.
    pub fn at(&self, age: usize, factor: usize) -> Option<f64> {
        if factor >= self.factors.len() {
            return None;
        }
        let value = *self.values.get(age * self.factors.len() + factor)?;
        (value != MISSING).then(|| f64::from(value) / SCALE)
    }
}

/// ρ as kept.
pub fn quantise(rho: Option<f64>) -> i16 {
    match rho {
        Some(rho) if rho.is_finite() => (rho.clamp(-1.0, 1.0) * SCALE).round() as i16,
        _ => MISSING,
    }
}

/// The Spearman correlation of one day's `scores` with each factor column of the same
/// rows, over the stocks where both are finite.
pub fn day_exposures(scores: &[f64], factors: &[&[f32]]) -> Vec<Option<f64>> {
    let scored: Vec<usize> = (0..scores.len()).filter(|row| scores[*row].is_finite()).collect();
    // The scores' ranks, shared by every factor with no gap on the scored rows.
    let mut score_ranks: Option<Vec<f64>> = None;
    factors
        .iter()
        .map(|factor| {
            if scored.iter().all(|row| factor[*row].is_finite()) {
                if scored.len() < 2 {
                    return None;
                }
                let ranks = score_ranks
                    .get_or_insert_with(|| average_ranks(&scored.iter().map(|row| scores[*row]).collect::<Vec<_>>()));
                let values: Vec<f64> = scored.iter().map(|row| f64::from(factor[*row])).collect();
                pearson(ranks, &average_ranks(&values))
            } else {
                let (a, b): (Vec<f64>, Vec<f64>) = scored
                    .iter()
                    .filter(|row| factor[**row].is_finite())
                    .map(|row| (scores[*row], f64::from(factor[*row])))
                    .unzip();
                spearman(&a, &b)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_scores_against_its_factors() {
        let scores = [0.3, -1.0, 2.0, f64::NAN, 0.5];
        let same: [f32; 5] = [3.0, -2.0, 9.0, 1.0, 4.0];
        let reversed: [f32; 5] = [-3.0, 2.0, -9.0, 0.0, -4.0];
        let with_gap: [f32; 5] = [1.0, f32::NAN, 3.0, 0.0, 2.0];
        let constant: [f32; 5] = [1.0; 5];
        let got = day_exposures(&scores, &[&same, &reversed, &with_gap, &constant]);
        assert_eq!(got[0], Some(1.0));
        assert_eq!(got[1], Some(-1.0));
        // Rows 0, 2, 4 only: scores 0.3, 2.0, 0.5 against 1, 3, 2: ranks (1, 3, 2) both.
        assert_eq!(got[2], Some(1.0));
        assert_eq!(got[3], None, "a constant factor has no correlation");
        // Ties: average ranks, as RankIC.
        let tied: [f32; 5] = [1.0, 1.0, 2.0, 5.0, 1.0];
        let expected = spearman(&[0.3, -1.0, 2.0, 0.5], &[1.0, 1.0, 2.0, 1.0]);
        assert_eq!(day_exposures(&scores, &[&tied])[0], expected);
        assert!(expected.is_some_and(|rho| rho > 0.0 && rho < 1.0));
    }

    #[test]
    fn kept_values_round_to_a_ten_thousandth() {
        assert_eq!(quantise(Some(0.81234)), 8123);
        assert_eq!(quantise(Some(-1.0)), -10_000);
        assert_eq!(quantise(None), MISSING);
        assert_eq!(quantise(Some(f64::NAN)), MISSING);
        let kept = Exposures { factors: vec!["vol_20".into(), "ret_5".into()], values: vec![5000, MISSING, -2500, 1] };
        assert_eq!(kept.ages(), 2);
        assert_eq!(kept.at(0, 0), Some(0.5));
        assert_eq!(kept.at(0, 1), None);
        assert_eq!(kept.at(1, 0), Some(-0.25));
        assert_eq!(kept.at(2, 0), None);
        assert_eq!(kept.at(0, 2), None);
    }
}
