//! The Sharpe ratio of the best of many schedules, deflated for the trials behind it
//! (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio: Correcting for Selection
//! Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5)).
//!
//! All Sharpe ratios here are per period (daily), not annualised: `SR = mean / std` with
//! the sample standard deviation.
//!
//! - **PSR** (probabilistic Sharpe ratio) of an observed `SR` against a threshold `SR*`
//!   over `T` returns with skewness `γ₃` and kurtosis `γ₄` (not excess):
//!   `PSR(SR*) = Φ((SR − SR*) √(T − 1) / √(1 − γ₃ SR + (γ₄ − 1)/4 · SR²))`.
//! - **Expected maximum** of `N` independent trials' Sharpe ratios with variance `V`
//!   under no skill: `SR₀ = √V ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N e)))`, `γ` the
//!   Euler–Mascheroni constant; 0 for `N ≤ 1` and never below 0.
//! - **DSR** = `PSR(SR₀)` of the best trial.
//! - **Effective number of trials** of correlated schedules: the participation ratio of
//!   their correlation matrix `C`, `N_eff = (tr C)² / tr(C²) = N² / Σᵢⱼ ρᵢⱼ²` (`N` for
//!   uncorrelated schedules, 1 for identical ones).

use serde::{Deserialize, Serialize};
use statrs::function::erf::{erfc, erfc_inv};

/// The Euler–Mascheroni constant.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Standard normal distribution function.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal quantile, `p` in (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    -std::f64::consts::SQRT_2 * erfc_inv(2.0 * p)
}

/// Sample moments of a return series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: usize,
    /// Per-period Sharpe ratio `mean / std` (sample std).
    pub sharpe: f64,
    /// `m₃ / m₂^1.5` (central moments over `n`).
    pub skewness: f64,
    /// `m₄ / m₂²` (3 for a normal distribution).
    pub kurtosis: f64,
}

impl Moments {
    /// `None` with fewer than 3 values, a value that is not finite, or no variance beyond
    /// rounding.
    pub fn of(returns: &[f64]) -> Option<Self> {
        let n = returns.len();
        if n < 3 || returns.iter().any(|r| !r.is_finite()) {
            return None;
        }
        let mean = returns.iter().sum::<f64>() / n as f64;
        let (mut m2, mut m3, mut m4) = (0.0, 0.0, 0.0);
        for r in returns {
            let d = r - mean;
            m2 += d * d;
            m3 += d * d * d;
            m4 += d * d * d * d;
        }
        let (m2, m3, m4) = (m2 / n as f64, m3 / n as f64, m4 / n as f64);
        // No variance beyond rounding: a constant series has no Sharpe ratio.
        let scale = returns.iter().fold(0.0_f64, |m, r| m.max(r.abs()));
        if !m2.is_finite() || m2.sqrt() <= 64.0 * f64::EPSILON * scale {
            return None;
        }
        let sample_std = (m2 * n as f64 / (n - 1) as f64).sqrt();
        Some(Self { n, sharpe: mean / sample_std, skewness: m3 / m2.powf(1.5), kurtosis: m4 / (m2 * m2) })
    }
}

/// The probabilistic Sharpe ratio of `moments` against the threshold `threshold`; `None`
/// where the variance term is not positive (impossible for sample moments, whose
/// kurtosis is at least 1 + skewness²).
pub fn probabilistic_sharpe(moments: &Moments, threshold: f64) -> Option<f64> {
    let sr = moments.sharpe;
    let denominator = 1.0 - moments.skewness * sr + (moments.kurtosis - 1.0) / 4.0 * sr * sr;
    (denominator > 0.0).then(|| normal_cdf((sr - threshold) * ((moments.n - 1) as f64).sqrt() / denominator.sqrt()))
}

/// The expected maximum Sharpe ratio of `trials` unskilled trials whose Sharpe ratios
/// vary with `variance`.
pub fn expected_maximum_sharpe(variance: f64, trials: f64) -> f64 {
    if trials <= 1.0 || variance <= 0.0 {
        return 0.0;
    }
    let z = (1.0 - EULER_GAMMA) * normal_quantile(1.0 - 1.0 / trials)
        + EULER_GAMMA * normal_quantile(1.0 - 1.0 / (trials * std::f64::consts::E));
    variance.sqrt() * z.max(0.0)
}

/// The participation ratio of the series' correlation matrix; series are aligned and of
/// equal length. A constant series counts as uncorrelated with the others.
pub fn effective_trials(series: &[&[f64]]) -> f64 {
    let n = series.len();
    if n == 0 {
        return 0.0;
    }
    // Rows of one flat matrix, each centred and of unit norm (empty for a series without
    // variance, which then counts once, on the diagonal, and correlates with nothing).
    let length = series.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut standardised = vec![0.0; n * length];
    let mut varies = vec![false; n];
    for (i, s) in series.iter().enumerate() {
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        let norm = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>().sqrt();
        if norm > 0.0 && s.len() == length {
            varies[i] = true;
            for (cell, v) in standardised[i * length..(i + 1) * length].iter_mut().zip(*s) {
                *cell = (v - mean) / norm;
            }
        }
    }
    let row = |i: usize| &standardised[i * length..(i + 1) * length];
    let mut squares = n as f64;
    for i in (0..n).filter(|i| varies[*i]) {
        for j in ((i + 1)..n).filter(|j| varies[*j]) {
            let rho = dot(row(i), row(j));
            squares += 2.0 * rho * rho;
        }
    }
    (n * n) as f64 / squares
}

/// `a · b` over eight running sums, which the compiler keeps in vector registers.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0; 8];
    let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// The deflated Sharpe ratio of the best of `trials`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Deflated {
    /// The index of the trial with the highest Sharpe ratio.
    pub best: usize,
    pub moments: Moments,
    /// Trials, and their effective number from their correlation.
    pub trials: usize,
    pub effective_trials: f64,
    /// Variance of the trials' Sharpe ratios.
    pub sharpe_variance: f64,
    /// `SR₀` and the DSR with the number of trials, and with the effective number.
    pub expected_maximum: f64,
    pub dsr: Option<f64>,
    pub expected_maximum_effective: f64,
    pub dsr_effective: Option<f64>,
}

/// Deflates the best Sharpe ratio among `series` (aligned, finite, of one length). `None`
/// with fewer than 3 days, a value that is not finite, series of different lengths, or no
/// series with variance. Every series counts as a trial; the variance of the Sharpe
/// ratios is over those with one. The effective number of trials is taken from the
/// correlation of `correlated` (one per trial, e.g. excess returns over a benchmark,
/// whose correlation a common market factor does not dominate), all of one length, which
/// need not be the returns' (weekly sums, say).
pub fn deflate(series: &[&[f64]], correlated: &[&[f64]]) -> Option<Deflated> {
    let length = series.first()?.len();
    if series.iter().any(|s| s.len() != length || s.iter().any(|v| !v.is_finite())) {
        return None;
    }
    let correlated_length = correlated.first().map_or(0, |s| s.len());
    if correlated.len() != series.len()
        || correlated.iter().any(|s| s.len() != correlated_length || s.iter().any(|v| !v.is_finite()))
    {
        return None;
    }
    let moments: Vec<Option<Moments>> = series.iter().map(|s| Moments::of(s)).collect();
    let sharpes: Vec<f64> = moments.iter().flatten().map(|m| m.sharpe).collect();
    let (best, best_moments) = moments
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.map(|m| (i, m)))
        .max_by(|a, b| a.1.sharpe.total_cmp(&b.1.sharpe))?;
    let count = sharpes.len();
    let mean = sharpes.iter().sum::<f64>() / count as f64;
    let variance =
        if count > 1 { sharpes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (count - 1) as f64 } else { 0.0 };
    let effective = effective_trials(correlated);
    let expected_maximum = expected_maximum_sharpe(variance, series.len() as f64);
    let expected_maximum_effective = expected_maximum_sharpe(variance, effective);
    Some(Deflated {
        best,
        moments: best_moments,
        trials: series.len(),
        effective_trials: effective,
        sharpe_variance: variance,
        expected_maximum,
        dsr: probabilistic_sharpe(&best_moments, expected_maximum),
        expected_maximum_effective,
        dsr_effective: probabilistic_sharpe(&best_moments, expected_maximum_effective),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_worked_example_deflates_to_0_9004() {
        // Bailey & López de Prado (2014), section 4: an annualised SR of 2.5 over 5 years
        // of daily returns (T = 1,250, 250 days a year), N = 100 trials whose annualised
        // Sharpe ratios have variance 1/2, skewness −3 and kurtosis 10: SR₀ = 0.1132
        // (daily) and DSR = 0.9004.
        let days_a_year = 250.0_f64;
        let variance = 0.5 / days_a_year;
        let expected = expected_maximum_sharpe(variance, 100.0);
        assert!((expected - 0.1132).abs() < 5e-5, "SR0 {expected}");
        let moments = Moments { n: 1250, sharpe: 2.5 / days_a_year.sqrt(), skewness: -3.0, kurtosis: 10.0 };
        let dsr = probabilistic_sharpe(&moments, expected).expect("dsr");
        assert!((dsr - 0.9004).abs() < 5e-5, "DSR {dsr}");
    }

    #[test]
    fn the_normal_functions_invert_each_other() {
        assert!((normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-9, "{}", normal_cdf(1.959_963_984_540_054));
        assert!((normal_quantile(0.99) - 2.326_347_874_040_841).abs() < 1e-9);
        for p in [0.001, 0.2, 0.5, 0.77, 0.999] {
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-9);
        }
    }

    #[test]
    fn moments_match_a_hand_computation() {
        // Returns 1, 2, 3, 10: mean 4, deviations −3, −2, −1, 6.
        let m = Moments::of(&[1.0, 2.0, 3.0, 10.0]).expect("moments");
        let (m2, m3, m4) = (50.0 / 4.0, (-27.0 - 8.0 - 1.0 + 216.0) / 4.0, (81.0 + 16.0 + 1.0 + 1296.0) / 4.0);
        assert!((m.sharpe - 4.0 / (50.0_f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m.skewness - m3 / f64::powf(m2, 1.5)).abs() < 1e-12);
        assert!((m.kurtosis - m4 / (m2 * m2)).abs() < 1e-12);
        assert_eq!(Moments::of(&[1.0, 1.0, 1.0]), None);
        // 0.1 three times does not sum to exactly 0.3: still no variance.
        assert_eq!(Moments::of(&[0.1, 0.1, 0.1]), None);
        assert_eq!(Moments::of(&[0.1, f64::NAN, 0.3]), None);
    }

    #[test]
    fn a_hand_computed_psr_and_dsr() {
        // Normal moments (skew 0, kurtosis 3): PSR(0) = Φ(SR √(T−1) / √(1 + SR²/2)).
        let m = Moments { n: 101, sharpe: 0.1, skewness: 0.0, kurtosis: 3.0 };
        let by_hand = normal_cdf(0.1 * 10.0 / (1.0_f64 + 0.005).sqrt());
        assert!((probabilistic_sharpe(&m, 0.0).expect("psr") - by_hand).abs() < 1e-12);
        // Two trials: SR₀ = σ ((1 − γ) Φ⁻¹(1/2) + γ Φ⁻¹(1 − 1/(2e))) = σ γ Φ⁻¹(0.81606).
        let expected = expected_maximum_sharpe(0.04, 2.0);
        assert!(
            (expected - 0.2 * EULER_GAMMA * normal_quantile(1.0 - 1.0 / (2.0 * std::f64::consts::E))).abs() < 1e-12
        );
        assert_eq!(expected_maximum_sharpe(0.04, 1.0), 0.0);
    }

    #[test]
    fn effective_trials_run_from_one_for_copies_to_n_for_orthogonal_series() {
        let a = [1.0, -1.0, 1.0, -1.0];
        let b = [1.0, 1.0, -1.0, -1.0];
        let c = [1.0, -1.0, -1.0, 1.0];
        assert!((effective_trials(&[&a, &b, &c]) - 3.0).abs() < 1e-12, "orthogonal");
        assert!((effective_trials(&[&a, &a, &a]) - 1.0).abs() < 1e-12, "copies");
        // Two series with ρ = 0.5 and one orthogonal to both is not possible here; a pair
        // with ρ: N² / (2 + 2ρ²).
        let d = [2.0, 0.0, 1.0, -3.0];
        let rho = {
            let (ma, md) = (0.0, 0.0);
            let cov: f64 = a.iter().zip(&d).map(|(x, y)| (x - ma) * (y - md)).sum();
            cov / (4.0_f64.sqrt() * 14.0_f64.sqrt())
        };
        assert!((effective_trials(&[&a, &d]) - 4.0 / (2.0 + 2.0 * rho * rho)).abs() < 1e-12);
    }

    #[test]
    fn deflation_names_the_best_and_shrinks_its_probability_as_trials_grow() {
        let series: Vec<Vec<f64>> = (0..20)
            .map(|k| {
                (0..300).map(|t| (((t * (k + 3) * 7919) % 101) as f64 - 50.0) / 1000.0 + 0.0005 * k as f64).collect()
            })
            .collect();
        let refs: Vec<&[f64]> = series.iter().map(Vec::as_slice).collect();
        let deflated = deflate(&refs, &refs).expect("deflated");
        let best = (0..20)
            .max_by(|a, b| {
                Moments::of(&series[*a]).expect("m").sharpe.total_cmp(&Moments::of(&series[*b]).expect("m").sharpe)
            })
            .expect("best");
        assert_eq!(deflated.best, best);
        assert_eq!(deflated.trials, 20);
        assert!(deflated.effective_trials > 1.0 && deflated.effective_trials <= 20.0 + 1e-9);
        let alone = probabilistic_sharpe(&deflated.moments, 0.0).expect("psr");
        let (dsr, dsr_effective) = (deflated.dsr.expect("dsr"), deflated.dsr_effective.expect("dsr"));
        assert!(dsr < alone, "{dsr} < {alone}");
        assert!(dsr_effective >= dsr, "fewer effective trials deflate less");
        // A constant series is a trial without a Sharpe ratio; it is never the best.
        let mut with_constant = refs.clone();
        let constant = [0.1; 300];
        with_constant.push(&constant);
        let deflated = deflate(&with_constant, &with_constant).expect("deflated");
        assert_eq!((deflated.best, deflated.trials), (best, 21));
    }
}
