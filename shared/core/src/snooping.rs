//! Corrections for the number of schedules tried: a line's report compares dozens to
//! hundreds of schedules on one history, and the best of them looks good by chance.
//!
//! | part | answers | reference |
//! |---|---|---|
//! | [`StationaryBootstrap`] | resamples of dependent daily series | Politis & Romano (1994) |
//! | [`superior`] | "does any policy beat the benchmark?" (SPA) and "which ones?" (StepM) | Hansen (2005); Romano & Wolf (2005) |
//! | [`sharpe`] | the best Sharpe ratio deflated for the trials behind it | Bailey & López de Prado (2014) |
//! | [`overfitting`] | the probability that the in-sample best is below the median out of sample | Bailey, Borwein, López de Prado & Zhu (2017) |
//!
//! Every function takes aligned series (one value per common day, all finite) and is
//! deterministic for a seed. `docs/ANALYTICS.md` ("Corrections for the number tried")
//! writes out each formula.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub mod overfitting;
pub mod sharpe;
pub mod superior;

/// Wall time this process spent in the verdict's statistics (SPA, StepM, selectors, both
/// bases; the backtest's DSR, PBO and selectors), read by the backtest bench to state
/// their share of a report build directly rather than as the difference of two builds.
/// Summed over threads: the bench reads it from a one-thread pool.
pub mod spent {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    /// The parts timed, each on its own total.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Part {
        /// A line's verdict: SPA, StepM, the selectors and their intervals.
        Verdict,
        /// A line's best fixed cadence on both bases and its return spread.
        Bases,
        /// A backtest setting's deflated Sharpe ratio (with the effective trials).
        Deflated,
        /// A backtest setting's PBO.
        Overfitting,
        /// A backtest setting's out-of-sample selectors on net returns.
        Selectors,
    }

    impl Part {
        pub const ALL: [Part; 5] = [Part::Verdict, Part::Bases, Part::Deflated, Part::Overfitting, Part::Selectors];

        pub fn name(self) -> &'static str {
            match self {
                Part::Verdict => "line verdicts (SPA, StepM, selectors)",
                Part::Bases => "both bases",
                Part::Deflated => "backtest DSR",
                Part::Overfitting => "backtest PBO",
                Part::Selectors => "backtest selectors",
            }
        }
    }

    static NANOS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

    /// Runs `work`, adding its wall time to `part`'s total.
    pub fn timed<T>(part: Part, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let value = work();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        NANOS[part as usize].fetch_add(nanos, Ordering::Relaxed);
        value
    }

    /// Seconds spent in `part` since the last [`reset`].
    pub fn seconds(part: Part) -> f64 {
        NANOS[part as usize].load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Seconds spent in every part since the last [`reset`].
    pub fn total() -> f64 {
        Part::ALL.iter().map(|p| seconds(*p)).sum()
    }

    pub fn reset() {
        for total in &NANOS {
            total.store(0, Ordering::Relaxed);
        }
    }
}

/// The stationary bootstrap of Politis & Romano (1994): each resample of `n` positions is
/// a chain of blocks, each starting at a uniform position and continuing (circularly)
/// with probability `1 − 1/mean_block` at every step, so block lengths are geometric with
/// mean `mean_block` and the resampled series is stationary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StationaryBootstrap {
    pub mean_block: f64,
    pub samples: u32,
    pub seed: u64,
}

/// One block of a resample: `length` consecutive positions from `start` (never wrapping:
/// a circular block is split in two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub length: usize,
}

impl StationaryBootstrap {
    /// The resamples of `n` positions, each as its segments (their lengths sum to `n`).
    pub fn resamples(&self, n: usize) -> Vec<Vec<Segment>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let p = (1.0 / self.mean_block.max(1.0)).clamp(0.0, 1.0);
        (0..self.samples)
            .map(|_| {
                let mut segments = Vec::new();
                let mut taken = 0;
                while taken < n {
                    let start = rng.random_range(0..n);
                    // Geometric length: the number of steps until a new block starts.
                    let mut length = 1;
                    while taken + length < n && rng.random::<f64>() >= p {
                        length += 1;
                    }
                    let first = length.min(n - start);
                    segments.push(Segment { start, length: first });
                    if first < length {
                        segments.push(Segment { start: 0, length: length - first });
                    }
                    taken += length;
                }
                segments
            })
            .collect()
    }
}

/// Prefix sums of a series, so any segment's sum is two lookups.
#[derive(Debug, Clone)]
pub struct PrefixSums(Vec<f64>);

impl PrefixSums {
    pub fn new(values: &[f64]) -> Self {
        let mut prefix = Vec::with_capacity(values.len() + 1);
        prefix.push(0.0);
        let mut sum = 0.0;
        for value in values {
            sum += value;
            prefix.push(sum);
        }
        Self(prefix)
    }

    /// The mean of the resampled series.
    pub fn resampled_mean(&self, segments: &[Segment]) -> f64 {
        let n = self.0.len() - 1;
        let sum: f64 = segments.iter().map(|s| self.0[s.start + s.length] - self.0[s.start]).sum();
        sum / n as f64
    }
}

/// Mean of the values.
pub(crate) fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The `q` quantile of the values: the `⌈q·B⌉`-th smallest of `B`.
pub(crate) fn upper_quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    // Less a hair, so that q·B landing a rounding step above an integer keeps its rank.
    let rank = ((q * values.len() as f64 - 1e-9).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_spent_adds_up_by_part_and_resets() {
        // Each test runs in its own process under nextest; the totals start at zero.
        spent::reset();
        let value = spent::timed(spent::Part::Overfitting, || {
            std::thread::sleep(std::time::Duration::from_millis(3));
            7
        });
        assert_eq!(value, 7);
        assert!(spent::seconds(spent::Part::Overfitting) >= 0.003);
        assert_eq!(spent::seconds(spent::Part::Verdict), 0.0);
        assert_eq!(spent::total(), spent::seconds(spent::Part::Overfitting));
        spent::reset();
        assert_eq!(spent::total(), 0.0);
    }

    #[test]
    fn resamples_cover_n_positions_in_blocks_of_the_stated_mean_length() {
        let bootstrap = StationaryBootstrap { mean_block: 8.0, samples: 400, seed: 3 };
        let resamples = bootstrap.resamples(500);
        assert_eq!(resamples.len(), 400);
        let mut blocks = 0usize;
        for segments in &resamples {
            assert_eq!(segments.iter().map(|s| s.length).sum::<usize>(), 500);
            assert!(segments.iter().all(|s| s.length >= 1 && s.start + s.length <= 500));
            // A wrapped block is two segments, the second starting at 0.
            blocks += segments.len()
                - segments.windows(2).filter(|w| w[1].start == 0 && w[0].start + w[0].length == 500).count();
        }
        let mean_length = (400 * 500) as f64 / blocks as f64;
        assert!((mean_length - 8.0).abs() < 0.5, "mean block length {mean_length}");
        assert_eq!(bootstrap.resamples(500), resamples, "deterministic for a seed");
    }

    #[test]
    fn a_resampled_mean_is_the_mean_of_the_resampled_values() {
        let values: Vec<f64> = (0..50).map(|i| ((i * 7) % 11) as f64).collect();
        let prefix = PrefixSums::new(&values);
        let segments =
            [Segment { start: 45, length: 5 }, Segment { start: 0, length: 20 }, Segment { start: 10, length: 25 }];
        let direct: f64 = segments.iter().flat_map(|s| &values[s.start..s.start + s.length]).sum::<f64>() / 50.0;
        assert!((prefix.resampled_mean(&segments) - direct).abs() < 1e-12);
    }

    #[test]
    fn the_upper_quantile_is_an_order_statistic() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(upper_quantile(&mut values, 0.95), 95.0);
        assert_eq!(upper_quantile(&mut values, 0.951), 96.0);
    }
}
