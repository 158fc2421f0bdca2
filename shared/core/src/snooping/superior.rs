//! Does any candidate beat the benchmark, once the number of candidates is counted?
//!
//! With `d_k(t) = x_k(t) − b(t)` the daily advantage of candidate `k` over the benchmark
//! on the `n` common days and `d̄_k` its mean:
//!
//! - **SPA** (Hansen 2005, "A Test for Superior Predictive Ability", JBES 23(4)): the
//!   p-value of `H₀: max_k E[d_k] ≤ 0`, with the studentised statistic
//!   `T = max(0, max_k √n d̄_k / ω̂_k)` and Hansen's consistent recentring, which keeps a
//!   clearly poor candidate at its own (negative) mean so it does not inflate the null.
//! - **StepM** (Romano & Wolf 2005, "Stepwise Multiple Testing as Formalized Data
//!   Snooping", Econometrica 73(4)): the candidates whose advantage is positive at
//!   familywise level `α`, found by stepping down the studentised statistics.
//!
//! Both use one set of stationary-bootstrap resamples; `ω̂_k² = n · Var*(d̄*_k)` is the
//! bootstrap variance of the resampled means.

use serde::{Deserialize, Serialize};

use super::{PrefixSums, StationaryBootstrap, mean, upper_quantile};

/// The outcome of [`test`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Superiority {
    /// Hansen's consistent SPA p-value.
    pub spa_p: f64,
    /// The studentised statistic `T`.
    pub statistic: f64,
    /// Candidates (by index) that StepM finds better than the benchmark at `alpha`.
    pub stepm: Vec<usize>,
    pub alpha: f64,
    /// Candidates tested (those whose advantage varies; one equal to the benchmark on
    /// every day cannot beat it).
    pub candidates: usize,
    /// Common days.
    pub days: usize,
    /// The stationary bootstrap's mean block length and resamples.
    pub mean_block: f64,
    pub samples: u32,
}

/// Tests every candidate against the benchmark. Series are aligned day by day and finite;
/// `None` with fewer than 10 days or no candidate.
pub fn test(
    benchmark: &[f64],
    candidates: &[&[f64]],
    bootstrap: StationaryBootstrap,
    alpha: f64,
) -> Option<Superiority> {
    let n = benchmark.len();
    if n < 10 || candidates.is_empty() || bootstrap.samples == 0 {
        return None;
    }
    let advantages: Vec<Vec<f64>> =
        candidates.iter().map(|x| x.iter().zip(benchmark).map(|(a, b)| a - b).collect()).collect();
    let resamples = bootstrap.resamples(n);
    let root_n = (n as f64).sqrt();
    // Per candidate: its mean, its resampled means and ω̂.
    struct Candidate {
        index: usize,
        mean: f64,
        resampled: Vec<f64>,
        omega: f64,
    }
    let tested: Vec<Candidate> = advantages
        .iter()
        .enumerate()
        .filter_map(|(index, d)| {
            let prefix = PrefixSums::new(d);
            let resampled: Vec<f64> = resamples.iter().map(|segments| prefix.resampled_mean(segments)).collect();
            let centre = mean(&resampled);
            let variance =
                resampled.iter().map(|m| (m - centre).powi(2)).sum::<f64>() / (resampled.len().max(2) - 1) as f64;
            let omega = (n as f64 * variance).sqrt();
            // A candidate equal to the benchmark up to rounding has nothing to test.
            (omega > 1e-12).then(|| Candidate { index, mean: mean(d), resampled, omega })
        })
        .collect();
    let statistic_of = |c: &Candidate| root_n * c.mean / c.omega;
    let statistic = tested.iter().map(statistic_of).fold(0.0, f64::max);
    // Hansen's g_c: a candidate whose mean is below −ω̂ √(2 ln ln n / n) is recentred at
    // its own mean (it stays poor in the null world), the others at 0.
    let threshold = (2.0 * (n as f64).ln().ln().max(0.0) / n as f64).sqrt();
    let recentre: Vec<f64> = tested.iter().map(|c| if c.mean >= -c.omega * threshold { c.mean } else { 0.0 }).collect();
    let samples = resamples.len();
    let exceed = (0..samples)
        .filter(|b| {
            let bootstrap_statistic =
                tested.iter().zip(&recentre).map(|(c, g)| root_n * (c.resampled[*b] - g) / c.omega).fold(0.0, f64::max);
            bootstrap_statistic >= statistic
        })
        .count();

    // StepM: reject every candidate above the (1 − α) quantile of the largest recentred
    // statistic among those not yet rejected; repeat until none is added.
    let mut rejected = vec![false; tested.len()];
    loop {
        let active: Vec<usize> = (0..tested.len()).filter(|i| !rejected[*i]).collect();
        if active.is_empty() {
            break;
        }
        let mut maxima: Vec<f64> = (0..samples)
            .map(|b| {
                active
                    .iter()
                    .map(|i| root_n * (tested[*i].resampled[b] - tested[*i].mean) / tested[*i].omega)
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        let critical = upper_quantile(&mut maxima, 1.0 - alpha);
        let added: Vec<usize> = active.into_iter().filter(|i| statistic_of(&tested[*i]) > critical).collect();
        if added.is_empty() {
            break;
        }
        for i in added {
            rejected[i] = true;
        }
    }
    Some(Superiority {
        spa_p: exceed as f64 / samples as f64,
        statistic,
        stepm: tested.iter().zip(&rejected).filter(|(_, r)| **r).map(|(c, _)| c.index).collect(),
        alpha,
        candidates: tested.len(),
        days: n,
        mean_block: bootstrap.mean_block,
        samples: bootstrap.samples,
    })
}

#[cfg(test)]
mod tests;
