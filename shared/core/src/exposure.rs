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

use crate::metric::{average_ranks, pearson, subset_ranks};
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
        // (name, whole column as a factor of the whole panel).
        let columns: Vec<(&str, DayFactor<'_>)> = STYLE_FACTORS
            .iter()
            .filter_map(|name| {
                let index = panel.feature_names().iter().position(|n| n == name)?;
                let factor = DayFactor { values: &panel.features()[index], ranks: panel.feature_day_ranks(index) };
                Some((*name, factor))
            })
            .collect();
        let mut values = Vec::with_capacity(days.len() * columns.len());
        let mut day_factors = Vec::with_capacity(columns.len());
        let (mut ranker, mut day) = (DayRanker::default(), Vec::with_capacity(columns.len()));
        for (index, scores) in days.zip(scores) {
            let rows = panel.rows_of_day(index);
            day_factors.clear();
            day_factors.extend(columns.iter().map(|(_, column)| DayFactor {
                values: &column.values[rows.clone()],
                ranks: column.ranks.map(|ranks| &ranks[rows.clone()]),
            }));
            day.clear();
            ranker.measure(scores, &day_factors, &mut day);
            values.extend(day.iter().copied().map(quantise));
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

/// One day's values of a factor, with their ranks within the day where known (ranks of
/// the finite values, NaN elsewhere: [`Panel::feature_day_ranks`]).
#[derive(Debug, Clone, Copy)]
pub struct DayFactor<'a> {
    pub values: &'a [f32],
    pub ranks: Option<&'a [f32]>,
}

/// The Spearman correlation of one day's `scores` with each factor of the same rows, over
/// the stocks where both are finite.
pub fn day_exposures(scores: &[f64], factors: &[DayFactor<'_>]) -> Vec<Option<f64>> {
    let mut out = Vec::with_capacity(factors.len());
    DayRanker::default().measure(scores, factors, &mut out);
    out
}

/// [`day_exposures`] with its working space kept from day to day. The day's finite scores
/// are sorted once; the scores' ranks among the stocks a factor counts (those with a
/// finite value of it) are read off that order in one pass, once per set of stocks (the
/// factors of one look-back share their gaps). A factor's ranks given by the panel (over
/// its finite values) are used as they are where every such stock has a score, re-ranked
/// among the counted ones by [`subset_ranks`] where not. Every value equals the Spearman
/// correlation computed from scratch, bit for bit.
#[derive(Debug, Default)]
struct DayRanker {
    /// (score, row) of the finite scores, ascending.
    order: Vec<(f64, u32)>,
    /// Whether each row is counted by the factor at hand.
    member: Vec<bool>,
    /// The score ranks among the counted rows, by row.
    by_row: Vec<f64>,
    /// (counted rows, the scores' ranks among them) of the sets seen today.
    sets: Vec<(Vec<u32>, Vec<f64>)>,
    counts: Vec<(u32, u32)>,
}

impl DayRanker {
    fn measure(&mut self, scores: &[f64], factors: &[DayFactor<'_>], out: &mut Vec<Option<f64>>) {
        self.order.clear();
        self.order.extend(scores.iter().enumerate().filter(|(_, s)| s.is_finite()).map(|(row, s)| (*s, row as u32)));
        self.order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.sets.clear();
        for factor in factors {
            let values = factor.values;
            let mut counted = Vec::with_capacity(scores.len());
            let mut finite_values = 0;
            for (row, (score, value)) in scores.iter().zip(values).enumerate() {
                if value.is_finite() {
                    finite_values += 1;
                    if score.is_finite() {
                        counted.push(row as u32);
                    }
                }
            }
            if counted.len() < 2 {
                out.push(None);
                continue;
            }
            let factor_ranks: Vec<f64> = match factor.ranks {
                Some(given) if counted.len() == finite_values => {
                    counted.iter().map(|row| f64::from(given[*row as usize])).collect()
                }
                Some(given) => subset_ranks(
                    &counted.iter().map(|row| f64::from(given[*row as usize])).collect::<Vec<_>>(),
                    &mut self.counts,
                ),
                None => average_ranks(&counted.iter().map(|row| f64::from(values[*row as usize])).collect::<Vec<_>>()),
            };
            let set = match self.sets.iter().position(|(rows, _)| *rows == counted) {
                Some(set) => set,
                None => {
                    let ranks = self.score_ranks(&counted, scores.len());
                    self.sets.push((counted, ranks));
                    self.sets.len() - 1
                }
            };
            out.push(pearson(&self.sets[set].1, &factor_ranks));
        }
    }

    /// The average ranks of the scores of `counted` (rows with finite scores) among
    /// themselves, in `counted` order: a walk over the day's sorted scores, each tie of
    /// equal scores ranked by how many counted rows it holds.
    fn score_ranks(&mut self, counted: &[u32], rows: usize) -> Vec<f64> {
        self.member.clear();
        self.member.resize(rows, false);
        for row in counted {
            self.member[*row as usize] = true;
        }
        self.by_row.clear();
        self.by_row.resize(rows, f64::NAN);
        let (mut start, mut below) = (0, 0usize);
        while start < self.order.len() {
            let mut end = start + 1;
            while end < self.order.len() && self.order[end].0 == self.order[start].0 {
                end += 1;
            }
            let tie = &self.order[start..end];
            let inside = tie.iter().filter(|(_, row)| self.member[*row as usize]).count();
            // As `average_ranks`: (start + end + 1) / 2 for the tie's places among the counted.
            let rank = (2 * below + inside + 1) as f64 / 2.0;
            for (_, row) in tie {
                if self.member[*row as usize] {
                    self.by_row[*row as usize] = rank;
                }
            }
            below += inside;
            start = end;
        }
        counted.iter().map(|row| self.by_row[*row as usize]).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::metric::spearman;

    /// The average ranks of the finite `values` among themselves, NaN for the others.
    fn finite_ranks(values: &[f32]) -> Vec<f32> {
        let finite: Vec<f64> = values.iter().filter(|v| v.is_finite()).map(|v| f64::from(*v)).collect();
        let mut ranks = average_ranks(&finite).into_iter();
        values.iter().map(|v| if v.is_finite() { ranks.next().unwrap_or(f64::NAN) as f32 } else { f32::NAN }).collect()
    }

    proptest! {
        /// Whatever the gaps and ties, each exposure is exactly the Spearman correlation
        /// over the stocks with both values, ranks given by the panel or not, factors
        /// sharing their gaps or not.
        #[test]
        fn every_exposure_is_the_spearman_correlation_of_the_counted_stocks(
            rows in proptest::collection::vec((-4i8..4, -3i8..3, 0u8..10, 0u8..10, -6i8..6, 0u8..10), 0..60),
        ) {
            let scores: Vec<f64> = rows.iter().map(|r| if r.2 == 0 { f64::NAN } else { f64::from(r.0) / 2.0 }).collect();
            let gap = |keep: bool, value: i8| if keep { f32::from(value) } else { f32::NAN };
            // Two factors with the same gaps, a third with its own.
            let columns: [Vec<f32>; 3] = [
                rows.iter().map(|r| gap(r.3 >= 2, r.1)).collect(),
                rows.iter().map(|r| gap(r.3 >= 2, r.4)).collect(),
                rows.iter().map(|r| gap(r.5 >= 3, r.4 / 2)).collect(),
            ];
            let ranks: Vec<Vec<f32>> = columns.iter().map(|c| finite_ranks(c)).collect();
            let expected: Vec<Option<f64>> = columns
                .iter()
                .map(|values| {
                    let (a, b): (Vec<f64>, Vec<f64>) = scores
                        .iter()
                        .zip(values)
                        .filter(|(s, v)| s.is_finite() && v.is_finite())
                        .map(|(s, v)| (*s, f64::from(*v)))
                        .unzip();
                    if a.len() < 2 { None } else { spearman(&a, &b) }
                })
                .collect();
            let given: Vec<DayFactor<'_>> =
                columns.iter().zip(&ranks).map(|(values, ranks)| DayFactor { values, ranks: Some(ranks) }).collect();
            let computed: Vec<DayFactor<'_>> = columns.iter().map(|values| DayFactor { values, ranks: None }).collect();
            prop_assert_eq!(day_exposures(&scores, &given), expected.clone());
            prop_assert_eq!(day_exposures(&scores, &computed), expected);
        }
    }

    #[test]
    fn a_day_of_scores_against_its_factors() {
        let scores = [0.3, -1.0, 2.0, f64::NAN, 0.5];
        let same: [f32; 5] = [3.0, -2.0, 9.0, 1.0, 4.0];
        let reversed: [f32; 5] = [-3.0, 2.0, -9.0, 0.0, -4.0];
        let with_gap: [f32; 5] = [1.0, f32::NAN, 3.0, 0.0, 2.0];
        let constant: [f32; 5] = [1.0; 5];
        fn day(values: &[f32]) -> DayFactor<'_> {
            DayFactor { values, ranks: None }
        }
        let got = day_exposures(&scores, &[day(&same), day(&reversed), day(&with_gap), day(&constant)]);
        assert_eq!(got[0], Some(1.0));
        assert_eq!(got[1], Some(-1.0));
        // Rows 0, 2, 4 only: scores 0.3, 2.0, 0.5 against 1, 3, 2: ranks (1, 3, 2) both.
        assert_eq!(got[2], Some(1.0));
        assert_eq!(got[3], None, "a constant factor has no correlation");
        // Ties: average ranks, as RankIC.
        let tied: [f32; 5] = [1.0, 1.0, 2.0, 5.0, 1.0];
        let expected = spearman(&[0.3, -1.0, 2.0, 0.5], &[1.0, 1.0, 2.0, 1.0]);
        assert_eq!(day_exposures(&scores, &[day(&tied)])[0], expected);
        assert!(expected.is_some_and(|rho| rho > 0.0 && rho < 1.0));
    }

    /// Ranks given with the factor (the panel's, over the day's finite values) give the
    /// same correlation as ranking the factor here, and are ignored where a score is missing.
    #[test]
    fn given_ranks_give_the_same_exposure() {
        let values: [f32; 6] = [0.5, -1.0, 2.0, 2.0, f32::NAN, 0.1];
        let ranks: Vec<f32> = {
            let finite = [0.5, -1.0, 2.0, 2.0, 0.1];
            let r: Vec<f32> = average_ranks(&finite).into_iter().map(|r| r as f32).collect();
            vec![r[0], r[1], r[2], r[3], f32::NAN, r[4]]
        };
        let given = DayFactor { values: &values, ranks: Some(&ranks) };
        let computed = DayFactor { values: &values, ranks: None };
        // A gap in the factor: the subset path either way.
        let scores = [0.2, 0.1, 0.9, 0.3, 0.4, -0.5];
        assert_eq!(day_exposures(&scores, &[given]), day_exposures(&scores, &[computed]));
        // Every row finite: the given ranks are read.
        let full: [f32; 5] = [0.5, -1.0, 2.0, 2.0, 0.1];
        let full_ranks: Vec<f32> = average_ranks(&[0.5, -1.0, 2.0, 2.0, 0.1]).into_iter().map(|r| r as f32).collect();
        let scores = [0.2, 0.1, 0.9, 0.3, -0.5];
        let with = day_exposures(&scores, &[DayFactor { values: &full, ranks: Some(&full_ranks) }]);
        assert_eq!(with, day_exposures(&scores, &[DayFactor { values: &full, ranks: None }]));
        assert!(with[0].is_some_and(|rho| rho > 0.5));
        // A missing score: ranks over fewer rows, so the given ones are not used.
        let scores = [0.2, f64::NAN, 0.9, 0.3, -0.5];
        let with = day_exposures(&scores, &[DayFactor { values: &full, ranks: Some(&full_ranks) }]);
        assert_eq!(with, day_exposures(&scores, &[DayFactor { values: &full, ranks: None }]));
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
