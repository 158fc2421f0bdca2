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

/// The running sums a trailing statistic carries from one day to the next (up to five
/// sums and a count of values). Saved after a series' last day, they continue it with
/// later days exactly as one pass over the whole series would: the same additions and
/// subtractions, in the same order.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sums {
    pub values: [f64; 5],
    pub count: u32,
}

/// The running sums of one pass's trailing statistics, in the order the pass computes
/// them, and the first position it computes (the positions before are a tail of
/// already-computed days the statistics read but do not add again).
#[derive(Debug, Clone, Default)]
pub(crate) struct Carry {
    sums: Vec<Sums>,
    next: usize,
    from: usize,
}

impl Carry {
    /// A pass over a whole series from its first day.
    pub(crate) fn fresh() -> Self {
        Self::default()
    }

    /// A pass that continues a series: `sums` as saved after the day before position
    /// `from`, the positions before `from` being the saved tail.
    pub(crate) fn resume(sums: Vec<Sums>, from: usize) -> Self {
        Self { sums, next: 0, from }
    }

    pub(crate) fn from(&self) -> usize {
        self.from
    }

    fn take(&self) -> Sums {
        self.sums.get(self.next).copied().unwrap_or_default()
    }

    fn keep(&mut self, sums: Sums) {
        match self.sums.get_mut(self.next) {
            Some(slot) => *slot = sums,
            None => self.sums.push(sums),
        }
        self.next += 1;
    }

    /// The sums after the pass's last day, in call order.
    pub(crate) fn into_sums(self) -> Vec<Sums> {
        self.sums
    }
}

/// Sliding sums of the non-null values in each window and their count.
struct Window {
    sum: f64,
    sum_squares: f64,
    count: usize,
}

/// Positions before `carry.from()` are not computed (null).
fn rolling_moments(
    x: &[f64],
    window: usize,
    min_valid: usize,
    carry: &mut Carry,
    finish: impl Fn(&Window) -> f64,
) -> Vec<f64> {
    let saved = carry.take();
    let mut state = Window { sum: saved.values[0], sum_squares: saved.values[1], count: saved.count as usize };
    let from = carry.from().min(x.len());
    let mut out = vec![f64::NAN; from];
    out.reserve(x.len() - from);
    for t in from..x.len() {
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
    carry.keep(Sums { values: [state.sum, state.sum_squares, 0.0, 0.0, 0.0], count: state.count as u32 });
    out
}

pub(crate) fn rolling_mean(x: &[f64], window: usize, min_valid: usize, carry: &mut Carry) -> Vec<f64> {
    rolling_moments(x, window, min_valid, carry, |w| w.sum / w.count as f64)
}

pub(crate) fn rolling_sum(x: &[f64], window: usize, min_valid: usize, carry: &mut Carry) -> Vec<f64> {
    rolling_moments(x, window, min_valid, carry, |w| w.sum)
}

/// Sample standard deviation (n − 1).
pub(crate) fn rolling_std(x: &[f64], window: usize, min_valid: usize, carry: &mut Carry) -> Vec<f64> {
    rolling_moments(x, window, min_valid.max(2), carry, |w| {
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
/// returns (beta, residual variance) per day (null before `carry.from()`).
pub(crate) fn rolling_beta(
    y: &[f64],
    x: &[f64],
    window: usize,
    min_valid: usize,
    carry: &mut Carry,
) -> (Vec<f64>, Vec<f64>) {
    let saved = carry.take();
    let [mut sx, mut sy, mut sxx, mut syy, mut sxy] = saved.values;
    let mut count = saved.count as usize;
    let from = carry.from().min(y.len());
    let mut beta = vec![f64::NAN; from];
    let mut residual = vec![f64::NAN; from];
    let valid = |t: usize| y[t].is_finite() && x[t].is_finite();
    for t in from..y.len() {
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
    carry.keep(Sums { values: [sx, sy, sxx, syy, sxy], count: count as u32 });
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
        assert!(same(&rolling_mean(&x, 2, 1, &mut Carry::fresh()), &[1.0, 1.0, 3.0, 4.0]));
        assert!(same(&rolling_mean(&x, 2, 2, &mut Carry::fresh()), &[NAN, NAN, NAN, 4.0]));
        assert!(same(&rolling_sum(&x, 3, 2, &mut Carry::fresh()), &[NAN, NAN, 4.0, 8.0]));
    }

    #[test]
    fn std_matches_direct_formula() {
        let x = [1.0, 2.0, 4.0, 8.0];
        let expected = {
            let window = [2.0f64, 4.0, 8.0];
            let mean = window.iter().sum::<f64>() / 3.0;
            (window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt()
        };
        assert!((rolling_std(&x, 3, 3, &mut Carry::fresh())[3] - expected).abs() < 1e-12);
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
        let (beta, residual) = rolling_beta(&y, &x, 20, 10, &mut Carry::fresh());
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
