//! Moving-block bootstrap intervals, deterministic for a seed.
//!
//! Overlapping forward returns make neighbouring days dependent, so resampling single
//! days would make intervals too narrow; resampling blocks of `block` consecutive values
//! (the horizon) keeps that dependence. Missing values (`NaN`) are dropped first; paired
//! differences keep only the positions where both series have a value.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// Settings of a bootstrap: block length, resamples, seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bootstrap {
    pub block: usize,
    pub samples: u32,
    pub seed: u64,
}

impl Bootstrap {
    /// 95% interval of the mean of `values`; `None` with fewer than 2 values.
    pub fn mean_interval(&self, values: &[f64]) -> Option<Interval> {
        let present: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = present.len();
        if n < 2 || self.samples == 0 {
            return None;
        }
        let block = self.block.clamp(1, n);
        let blocks = n.div_ceil(block);
        // Prefix sums make each block's sum O(1).
        let mut prefix = vec![0.0; n + 1];
        for (i, v) in present.iter().enumerate() {
            prefix[i + 1] = prefix[i] + v;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut means: Vec<f64> = (0..self.samples)
            .map(|_| {
                let mut sum = 0.0;
                let mut taken = 0;
                for _ in 0..blocks {
                    let start = rng.random_range(0..=n - block);
                    let length = block.min(n - taken);
                    sum += prefix[start + length] - prefix[start];
                    taken += length;
                }
                sum / n as f64
            })
            .collect();
        means.sort_by(f64::total_cmp);
        Some(Interval { low: percentile(&means, 0.025), high: percentile(&means, 0.975) })
    }

    /// 95% interval of the mean difference `a − b`, paired by position.
    pub fn paired_difference_interval(&self, a: &[f64], b: &[f64]) -> Option<Interval> {
        let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        self.mean_interval(&differences)
    }
}

/// Linear-interpolated percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_covers_the_mean_and_is_deterministic() {
        let values: Vec<f64> = (0..200).map(|i| ((i * 37) % 17) as f64 / 17.0 - 0.3).collect();
        let mean = values.iter().sum::<f64>() / 200.0;
        let bootstrap = Bootstrap { block: 5, samples: 500, seed: 3 };
        let interval = bootstrap.mean_interval(&values).expect("enough values");
        assert!(interval.low < mean && mean < interval.high, "{interval:?} vs {mean}");
        assert_eq!(bootstrap.mean_interval(&values), Some(interval));
        let other = Bootstrap { seed: 4, ..bootstrap }.mean_interval(&values).expect("enough values");
        assert_ne!(other, interval);
    }

    #[test]
    fn a_clear_positive_mean_excludes_zero_and_noise_does_not() {
        let bootstrap = Bootstrap { block: 5, samples: 1000, seed: 1 };
        let positive: Vec<f64> = (0..300).map(|i| 0.05 + ((i * 13) % 7) as f64 / 100.0 - 0.03).collect();
        assert!(bootstrap.mean_interval(&positive).expect("values").excludes_zero());
        let noise: Vec<f64> = (0..300).map(|i| if i % 2 == 0 { 0.1 } else { -0.1 }).collect();
        assert!(!bootstrap.mean_interval(&noise).expect("values").excludes_zero());
    }

    #[test]
    fn missing_values_are_dropped_and_pairs_need_both() {
        let bootstrap = Bootstrap { block: 2, samples: 100, seed: 1 };
        assert_eq!(bootstrap.mean_interval(&[f64::NAN, 1.0]), None);
        let constant = bootstrap.mean_interval(&[2.0, f64::NAN, 2.0, 2.0]).expect("values");
        assert_eq!((constant.low, constant.high), (2.0, 2.0));
        let paired =
            bootstrap.paired_difference_interval(&[3.0, 5.0, f64::NAN, 4.0], &[1.0, 3.0, 1.0, 2.0]).expect("values");
        assert_eq!((paired.low, paired.high), (2.0, 2.0));
    }
}
