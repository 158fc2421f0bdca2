//! Trailing-window statistics over one stock's dense daily series.
//!
//! Every function here computes the value at `t` from `x[t + 1 - w ..= t]` only, in one
//! forward pass, so a value never depends on later data: truncating the series after
//! `t` leaves it bit-for-bit unchanged. `NaN` is a null; a window with fewer than
//! `min_valid` non-null values gives a null.

use std::collections::VecDeque;

/// `x[t] / x[t - lag] - 1`.
pub(crate) fn change(x: &[f64], lag: usize) -> Vec<f64> {
    (0..x.len()).map(|t| if t < lag { f64::NAN } else { x[t] / x[t - lag] - 1.0 }).collect()
}

/// `ln(x[t] / x[t - 1])`.
pub(crate) fn log_return(x: &[f64]) -> Vec<f64> {
    (0..x.len()).map(|t| if t == 0 { f64::NAN } else { (x[t] / x[t - 1]).ln() }).collect()
}

/// Sliding sums of the non-null values in each window and their count.
struct Window {
    sum: f64,
    sum_squares: f64,
    count: usize,
}

fn rolling_moments(x: &[f64], window: usize, min_valid: usize, finish: impl Fn(&Window) -> f64) -> Vec<f64> {
    let mut state = Window { sum: 0.0, sum_squares: 0.0, count: 0 };
    let mut out = Vec::with_capacity(x.len());
    for t in 0..x.len() {
        if x[t].is_finite() {
            state.sum += x[t];
            state.sum_squares += x[t] * x[t];
            state.count += 1;
        }
        if t >= window && x[t - window].is_finite() {
            let old = x[t - window];
            state.sum -= old;
            state.sum_squares -= old * old;
            state.count -= 1;
        }
        out.push(if state.count >= min_valid.max(1) { finish(&state) } else { f64::NAN });
    }
    out
}

pub(crate) fn rolling_mean(x: &[f64], window: usize, min_valid: usize) -> Vec<f64> {
    rolling_moments(x, window, min_valid, |w| w.sum / w.count as f64)
}

pub(crate) fn rolling_sum(x: &[f64], window: usize, min_valid: usize) -> Vec<f64> {
    rolling_moments(x, window, min_valid, |w| w.sum)
}

/// Sample standard deviation (n − 1).
pub(crate) fn rolling_std(x: &[f64], window: usize, min_valid: usize) -> Vec<f64> {
    rolling_moments(x, window, min_valid.max(2), |w| {
        let n = w.count as f64;
        ((w.sum_squares - w.sum * w.sum / n) / (n - 1.0)).max(0.0).sqrt()
    })
}

/// Trailing maximum (`largest = true`) or minimum with a monotonic queue.
pub(crate) fn rolling_extreme(x: &[f64], window: usize, min_valid: usize, largest: bool) -> Vec<f64> {
    let better = |a: f64, b: f64| if largest { a >= b } else { a <= b };
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut count = 0usize;
    let mut out = Vec::with_capacity(x.len());
    for t in 0..x.len() {
        if x[t].is_finite() {
            count += 1;
            while queue.back().is_some_and(|&last| better(x[t], x[last])) {
                queue.pop_back();
            }
            queue.push_back(t);
        }
        if t >= window && x[t - window].is_finite() {
            count -= 1;
        }
        while queue.front().is_some_and(|&first| first + window <= t) {
            queue.pop_front();
        }
        let value = queue.front().map_or(f64::NAN, |&first| x[first]);
        out.push(if count >= min_valid.max(1) { value } else { f64::NAN });
    }
    out
}

/// Trailing regression of `y` on `x` over pairs where both are non-null:
/// returns (beta, residual variance) per day.
pub(crate) fn rolling_beta(y: &[f64], x: &[f64], window: usize, min_valid: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut sx, mut sy, mut sxx, mut syy, mut sxy, mut count) = (0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
    let mut beta = Vec::with_capacity(y.len());
    let mut residual = Vec::with_capacity(y.len());
    let valid = |t: usize| y[t].is_finite() && x[t].is_finite();
    for t in 0..y.len() {
        if valid(t) {
            sx += x[t];
            sy += y[t];
            sxx += x[t] * x[t];
            syy += y[t] * y[t];
            sxy += x[t] * y[t];
            count += 1;
        }
        if t >= window && valid(t - window) {
            let old = t - window;
            sx -= x[old];
            sy -= y[old];
            sxx -= x[old] * x[old];
            syy -= y[old] * y[old];
            sxy -= x[old] * y[old];
            count -= 1;
        }
        let n = count as f64;
        let var_x = (sxx - sx * sx / n) / (n - 1.0);
        if count < min_valid.max(3) || var_x <= 0.0 {
            beta.push(f64::NAN);
            residual.push(f64::NAN);
            continue;
        }
        let var_y = (syy - sy * sy / n) / (n - 1.0);
        let cov = (sxy - sx * sy / n) / (n - 1.0);
        let b = cov / var_x;
        beta.push(b);
        residual.push((var_y - b * cov).max(0.0));
    }
    (beta, residual)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x.is_nan() && y.is_nan()) || (x - y).abs() < 1e-12)
    }

    #[test]
    fn mean_skips_nulls_and_needs_enough_values() {
        let x = [1.0, NAN, 3.0, 5.0];
        assert!(same(&rolling_mean(&x, 2, 1), &[1.0, 1.0, 3.0, 4.0]));
        assert!(same(&rolling_mean(&x, 2, 2), &[NAN, NAN, NAN, 4.0]));
        assert!(same(&rolling_sum(&x, 3, 2), &[NAN, NAN, 4.0, 8.0]));
    }

    #[test]
    fn std_matches_direct_formula() {
        let x = [1.0, 2.0, 4.0, 8.0];
        let expected = {
            let window = [2.0f64, 4.0, 8.0];
            let mean = window.iter().sum::<f64>() / 3.0;
            (window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt()
        };
        assert!((rolling_std(&x, 3, 3)[3] - expected).abs() < 1e-12);
    }

    #[test]
    fn extremes_follow_the_window() {
        let x = [3.0, 1.0, NAN, 2.0, 0.5];
        assert!(same(&rolling_extreme(&x, 2, 1, true), &[3.0, 3.0, 1.0, 2.0, 2.0]));
        assert!(same(&rolling_extreme(&x, 3, 2, false), &[NAN, 1.0, 1.0, 1.0, 0.5]));
    }

    #[test]
    fn beta_recovers_a_linear_relation() {
        let x: Vec<f64> = (0..30).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
        let y: Vec<f64> = x.iter().map(|v| 1.5 * v + 0.2).collect();
        let (beta, residual) = rolling_beta(&y, &x, 20, 10);
        assert!((beta[29] - 1.5).abs() < 1e-9);
        assert!(residual[29].abs() < 1e-9);
        assert!(beta[5].is_nan());
    }

    #[test]
    fn changes_look_back_exactly_lag_days() {
        assert!(same(&change(&[1.0, 2.0, 4.0], 2), &[NAN, NAN, 3.0]));
        assert!(same(&log_return(&[1.0, NAN, 4.0]), &[NAN, NAN, NAN]));
    }
}
