//! Decay curves: a metric's mean over all models at each age, per window length and
//! model, with block-bootstrap intervals; the decay rate and, where an exponential fits,
//! the half-life.
//!
//! The bootstrap resamples blocks of models in retrain order (block length = the
//! horizon), since models retrained close together share test days. The decay rate is
//! the least-squares slope of the mean curve, per 21 trading days. The half-life comes
//! from a log-linear fit of 10-day bucket means up to the first non-positive bucket; it
//! "holds" when at least 3 buckets are positive, the slope is negative and R² ≥ 0.5.

use serde::{Deserialize, Serialize};

use crate::age::{AgeMatrix, Metric};
use crate::bootstrap::{Bootstrap, Interval};

/// Ages per bucket for the half-life fit.
pub const HALF_LIFE_BUCKET: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecayPoint {
    pub age: u32,
    pub mean: f64,
    pub interval: Option<Interval>,
    /// Models with a value at this age.
    pub models: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecayCurve {
    pub window: u32,
    pub model: usize,
    pub metric: Metric,
    pub points: Vec<DecayPoint>,
    /// Slope of the mean curve per 21 trading days of age.
    pub slope_per_21d: f64,
    /// Ages for the metric to halve, where an exponential fit holds.
    pub half_life_days: Option<f64>,
}

/// Curves of `metric` for every (window, model) of the matrix.
pub fn decay_curves(matrix: &AgeMatrix, metric: Metric, samples: u32, seed: u64) -> Vec<DecayCurve> {
    let mut groups: Vec<(u32, usize)> = matrix.runs.iter().map(|r| (r.window, r.model)).collect();
    groups.sort_unstable();
    groups.dedup();
    groups.into_iter().map(|(window, model)| decay_curve(matrix, window, model, metric, samples, seed)).collect()
}

/// The curve of one (window, model), pooling seeds.
pub fn decay_curve(
    matrix: &AgeMatrix,
    window: u32,
    model: usize,
    metric: Metric,
    samples: u32,
    seed: u64,
) -> DecayCurve {
    let mut runs: Vec<_> = matrix.runs.iter().filter(|r| r.window == window && r.model == model).collect();
    runs.sort_by_key(|r| (r.retrain_day, r.seed));
    let bootstrap = Bootstrap { block: matrix.horizon.max(1) as usize, samples, seed };
    let ages = runs.iter().map(|r| r.ages.len()).max().unwrap_or(0).min(matrix.max_age as usize);
    let points: Vec<DecayPoint> = (0..ages)
        .map(|age| {
            let values: Vec<f64> = runs.iter().map(|r| metric.value(r.at(age))).collect();
            let present: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            let mean = if present.is_empty() { f64::NAN } else { present.iter().sum::<f64>() / present.len() as f64 };
            DecayPoint { age: age as u32, mean, interval: bootstrap.mean_interval(&values), models: present.len() }
        })
        .collect();
    let means: Vec<f64> = points.iter().map(|p| p.mean).collect();
    DecayCurve { window, model, metric, slope_per_21d: slope(&means) * 21.0, half_life_days: half_life(&means), points }
}

/// Least-squares slope of `values` against their index, skipping missing values.
pub fn slope(values: &[f64]) -> f64 {
    let points: Vec<(f64, f64)> =
        values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| (i as f64, *v)).collect();
    fit_line(&points).map_or(f64::NAN, |(slope, _, _)| slope)
}

/// (slope, intercept, R²) of a least-squares line.
fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mean_x, mean_y) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 { sxy * sxy / (sxx * syy) } else { 1.0 };
    Some((slope, mean_y - slope * mean_x, r2))
}

/// Half-life in ages, where an exponential decay fits the bucketed curve.
pub fn half_life(curve: &[f64]) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = curve
        .chunks(HALF_LIFE_BUCKET)
        .enumerate()
        .map(|(index, chunk)| {
            let present: Vec<f64> = chunk.iter().copied().filter(|v| v.is_finite()).collect();
            let mean = if present.is_empty() { f64::NAN } else { present.iter().sum::<f64>() / present.len() as f64 };
            // Bucket centre age.
            ((index * HALF_LIFE_BUCKET) as f64 + (chunk.len() as f64 - 1.0) / 2.0, mean)
        })
        .take_while(|(_, mean)| *mean > 0.0)
        .map(|(age, mean)| (age, mean.ln()))
        .collect();
    if buckets.len() < 3 {
        return None;
    }
    let (slope, _, r2) = fit_line(&buckets)?;
    (slope < 0.0 && r2 >= 0.5).then(|| std::f64::consts::LN_2 / -slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_decay_has_its_half_life() {
        let curve: Vec<f64> =
            (0..120).map(|age| 0.08 * (-(age as f64) * std::f64::consts::LN_2 / 30.0).exp()).collect();
        let fitted = half_life(&curve).expect("exponential fits");
        assert!((fitted - 30.0).abs() < 0.5, "{fitted}");
        assert!(slope(&curve) < 0.0);
    }

    #[test]
    fn flat_or_negative_curves_have_no_half_life() {
        assert_eq!(half_life(&[0.05; 100]), None, "no decay");
        assert_eq!(half_life(&[-0.01; 100]), None, "never positive");
        let rising: Vec<f64> = (0..100).map(|a| 0.01 + a as f64 * 0.001).collect();
        assert_eq!(half_life(&rising), None);
    }
}
