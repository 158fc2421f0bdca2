//! The probability of backtest overfitting, by combinatorially symmetric
//! cross-validation (Bailey, Borwein, López de Prado & Zhu 2017, "The Probability of
//! Backtest Overfitting", Journal of Computational Finance 20(4)).
//!
//! The `T × N` matrix of `N` schedules' daily values is cut by rows into `S` contiguous
//! blocks of `⌊T/S⌋` days (the first `T mod S` days are left out). For each of the
//! `C(S, S/2)` ways to pick half the blocks as the in-sample set `J` (its complement `J̄`
//! out of sample): the schedule `n*` with the highest Sharpe ratio (`mean / std`, sample
//! std) on `J`; its out-of-sample relative rank `ω = r / (N + 1)`, `r` its rank among the
//! `N` Sharpe ratios on `J̄` (1 = lowest, ties averaged); the logit `λ = ln(ω / (1 − ω))`.
//! `PBO = #{λ ≤ 0} / C(S, S/2)` (at most [`MAX_COMBINATIONS`] of them, sampled): how often the in-sample best is at or below the median
//! out of sample.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The outcome of [`probability`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overfitting {
    pub pbo: f64,
    /// Mean logit over the combinations (negative: the in-sample best tends to fall
    /// below the median).
    pub mean_logit: f64,
    pub blocks: usize,
    /// Combinations evaluated: all `C(S, S/2)` of them, or [`MAX_COMBINATIONS`] drawn
    /// uniformly without replacement (seeded) when there are more.
    pub combinations: usize,
    #[serde(default)]
    pub all_combinations: usize,
    pub schedules: usize,
    /// Days used: `S ⌊T/S⌋`.
    pub days: usize,
}

/// The most blocks: `C(20, 10)` = 184,756 combinations.
pub const MAX_BLOCKS: usize = 20;

/// The most combinations evaluated (16 blocks have 12,870): a sample of 1,000 estimates
/// PBO with a standard error of at most 0.016, at a thirteenth of the cost.
pub const MAX_COMBINATIONS: usize = 1_000;

/// The seed of the sample of combinations.
const SAMPLE_SEED: u64 = 0x0c5c_f000;

/// PBO of `series` (aligned, finite, equal length) over `blocks` blocks (even,
/// 2..=[`MAX_BLOCKS`]). `None` with fewer than 2 series, an odd or out-of-range block
/// count, fewer than 2 days a block, series of different lengths or a value that is not
/// finite. A half on which a schedule has no variance gives it a Sharpe ratio of 0.
pub fn probability(series: &[&[f64]], blocks: usize) -> Option<Overfitting> {
    let schedules = series.len();
    let total = series.first()?.len();
    if schedules < 2 || blocks < 2 || !blocks.is_multiple_of(2) || blocks > MAX_BLOCKS || total / blocks < 2 {
        return None;
    }
    if series.iter().any(|s| s.len() != total || s.iter().any(|v| !v.is_finite())) {
        return None;
    }
    let size = total / blocks;
    let skip = total - size * blocks;
    // Per schedule and block: Σx, Σx² of the values less the schedule's mean over the
    // days used (the Sharpe ratio of a half adds it back), so the variance does not
    // cancel; and the largest value's size, for what counts as no variance.
    let centres: Vec<f64> = series.iter().map(|s| s[skip..].iter().sum::<f64>() / (total - skip) as f64).collect();
    let sums: Vec<Vec<(f64, f64)>> = series
        .iter()
        .zip(&centres)
        .map(|(s, centre)| {
            (0..blocks)
                .map(|b| {
                    let values = &s[skip + b * size..skip + (b + 1) * size];
                    (values.iter().map(|v| v - centre).sum(), values.iter().map(|v| (v - centre).powi(2)).sum())
                })
                .collect()
        })
        .collect();
    let scales: Vec<f64> = series.iter().map(|s| s[skip..].iter().fold(0.0_f64, |m, v| m.max(v.abs()))).collect();
    // Each schedule's sums over every block used: a half's complement is their difference.
    let totals: Vec<(f64, f64)> =
        sums.iter().map(|blocks| blocks.iter().fold((0.0, 0.0), |(s, q), (bs, bq)| (s + bs, q + bq))).collect();
    let n = (size * blocks / 2) as f64;
    let sharpe = |schedule: usize, sum: f64, squares: f64| -> f64 {
        let mean = sum / n;
        let variance = ((squares - n * mean * mean) / (n - 1.0)).max(0.0);
        // A half without variance beyond rounding has a Sharpe ratio of 0.
        if variance.sqrt() > 64.0 * f64::EPSILON * scales[schedule] {
            (mean + centres[schedule]) / variance.sqrt()
        } else {
            0.0
        }
    };
    let mut masks: Vec<u32> = (0u32..(1 << blocks)).filter(|m| m.count_ones() as usize == blocks / 2).collect();
    let all_combinations = masks.len();
    if masks.len() > MAX_COMBINATIONS {
        // A uniform sample without replacement, the same every time.
        let mut rng = ChaCha8Rng::seed_from_u64(SAMPLE_SEED);
        for i in 0..MAX_COMBINATIONS {
            let j = rng.random_range(i..masks.len());
            masks.swap(i, j);
        }
        masks.truncate(MAX_COMBINATIONS);
    }
    let (mut overfit, mut logits, mut combinations) = (0usize, 0.0, 0usize);
    let (mut inside, mut outside) = (vec![0.0; schedules], vec![0.0; schedules]);
    for mask in masks {
        combinations += 1;
        // In one pass: each schedule's sums over the blocks in the mask (in sample), and
        // the rest of its totals (out of sample).
        for schedule in 0..schedules {
            let (mut sum, mut squares) = (0.0, 0.0);
            for (b, (s, q)) in sums[schedule].iter().enumerate() {
                if mask >> b & 1 == 1 {
                    sum += s;
                    squares += q;
                }
            }
            let (total, total_squares) = totals[schedule];
            inside[schedule] = sharpe(schedule, sum, squares);
            outside[schedule] = sharpe(schedule, total - sum, total_squares - squares);
        }
        let best = (0..schedules).max_by(|a, b| inside[*a].total_cmp(&inside[*b]).then(b.cmp(a))).unwrap_or(0);
        let value = outside[best];
        let below = outside.iter().filter(|v| **v < value).count() as f64;
        let equal = outside.iter().filter(|v| **v == value).count() as f64;
        let rank = below + (equal + 1.0) / 2.0;
        let omega = rank / (schedules as f64 + 1.0);
        let logit = (omega / (1.0 - omega)).ln();
        logits += logit;
        if logit <= 0.0 {
            overfit += 1;
        }
    }
    Some(Overfitting {
        pbo: overfit as f64 / combinations as f64,
        mean_logit: logits / combinations as f64,
        blocks,
        combinations,
        all_combinations,
        schedules,
        days: size * blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_case_with_four_blocks() {
        // Two schedules, four blocks of two days. `a` is strong in blocks 0 and 1 and as
        // weak in 2 and 3; `b` is steadily a little positive (Sharpe ≈ 2 on any half).
        // J = {0,1}: `a` is best in sample and below `b` out of sample (overfit);
        // J = {2,3}: `b` is best in sample and below `a` out of sample (overfit);
        // the four mixed splits leave `a` near zero on both halves: `b` wins in and out.
        // PBO = 2/6; the logits are ln(1/3 / 2/3) = −ln 2 twice and +ln 2 four times.
        let a = [2.0, 2.2, 2.1, 1.9, -2.0, -2.2, -2.1, -1.9];
        let b = [0.1, 0.3, 0.2, 0.2, 0.1, 0.3, 0.3, 0.1];
        let outcome = probability(&[&a, &b], 4).expect("pbo");
        assert_eq!((outcome.combinations, outcome.all_combinations), (6, 6));
        assert_eq!((outcome.blocks, outcome.schedules, outcome.days), (4, 2, 8));
        assert!((outcome.pbo - 2.0 / 6.0).abs() < 1e-12, "{outcome:?}");
        assert!((outcome.mean_logit - std::f64::consts::LN_2 / 3.0).abs() < 1e-12, "{outcome:?}");
        // Leading days beyond S⌊T/S⌋ are left out: a ninth day in front changes nothing.
        let (a9, b9) = ([[100.0].as_slice(), &a].concat(), [[-100.0].as_slice(), &b].concat());
        assert_eq!(probability(&[&a9, &b9], 4), Some(outcome));
    }

    #[test]
    fn a_real_edge_is_never_overfit() {
        let noise = |seed: u64, t: usize| {
            let x =
                (t as u64 + 1).wrapping_mul(6364136223846793005).wrapping_add(seed.wrapping_mul(1442695040888963407));
            ((x >> 33) % 1000) as f64 / 1000.0 - 0.5
        };
        let mut series: Vec<Vec<f64>> = (0..10).map(|k| (0..800).map(|t| noise(k, t)).collect()).collect();
        series[3].iter_mut().for_each(|v| *v += 0.5);
        let refs: Vec<&[f64]> = series.iter().map(Vec::as_slice).collect();
        let edge = probability(&refs, 16).expect("pbo");
        assert_eq!((edge.combinations, edge.all_combinations), (MAX_COMBINATIONS, 12_870));
        assert_eq!(edge.pbo, 0.0, "the planted schedule wins in and out of sample");
        assert!(edge.mean_logit > 0.0);
        assert_eq!(probability(&refs, 15), None, "odd block count");
        assert_eq!(probability(&refs[..1], 16), None, "one schedule");
    }
}
