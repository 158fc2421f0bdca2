//! A ridge least-squares scorer: the closed-form stand-in for trained models in tests
//! and analytics checks (no Candle needed).
//!
//! It regresses the day-demeaned target of one horizon on the panel's features over a
//! range of training days; a null feature is read as 0, the cross-sectional median of a
//! normalised feature. Rows with a null target are skipped.

use std::ops::Range;

use crate::panel::Panel;

/// A fitted linear scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearScorer {
    pub intercept: f64,
    pub weights: Vec<f64>,
}

impl LinearScorer {
    /// Score of panel row `row`.
    pub fn score_row(&self, panel: &Panel, row: usize) -> f64 {
        let features = panel.features();
        self.intercept
            + self.weights.iter().zip(features).map(|(w, column)| w * finite_or_zero(column[row])).sum::<f64>()
    }
}

fn finite_or_zero(x: f32) -> f64 {
    if x.is_finite() { f64::from(x) } else { 0.0 }
}

/// Fits `target(horizon) − day mean` on the features of trading days `days`, with ridge
/// penalty `lambda` (per row). `None` when there is no target or no usable row.
pub fn fit_ridge(panel: &Panel, days: Range<usize>, horizon: u32, lambda: f64) -> Option<LinearScorer> {
    let target = panel.target(horizon)?;
    let p = panel.features().len() + 1;
    let mut gram = vec![0.0; p * p];
    let mut moment = vec![0.0; p];
    let mut rows_used = 0usize;
    let mut x = vec![0.0; p];
    for day in days {
        let rows = panel.rows_of_day(day);
        let valid: Vec<usize> = rows.filter(|row| target[*row].is_finite()).collect();
        if valid.is_empty() {
            continue;
        }
        let mean = valid.iter().map(|row| target[*row]).sum::<f64>() / valid.len() as f64;
        for row in valid {
            x[0] = 1.0;
            for (slot, column) in x[1..].iter_mut().zip(panel.features()) {
                *slot = finite_or_zero(column[row]);
            }
            let y = target[row] - mean;
            for i in 0..p {
                moment[i] += x[i] * y;
                for j in 0..=i {
                    gram[i * p + j] += x[i] * x[j];
                }
            }
            rows_used += 1;
        }
    }
    if rows_used == 0 {
        return None;
    }
    for i in 0..p {
        for j in 0..i {
            gram[j * p + i] = gram[i * p + j];
        }
        if i > 0 {
            gram[i * p + i] += lambda * rows_used as f64;
        }
    }
    let solution = solve_symmetric(&mut gram, &moment, p)?;
    Some(LinearScorer { intercept: solution[0], weights: solution[1..].to_vec() })
}

/// Solves `a · x = b` for a symmetric positive-definite `a` by Cholesky decomposition.
fn solve_symmetric(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let diagonal = a[j * n + j] - (0..j).map(|k| a[j * n + k] * a[j * n + k]).sum::<f64>();
        if diagonal <= 0.0 || !diagonal.is_finite() {
            return None;
        }
        let pivot = diagonal.sqrt();
        a[j * n + j] = pivot;
        for i in j + 1..n {
            let value = a[i * n + j] - (0..j).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
            a[i * n + j] = value / pivot;
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| a[i * n + k] * y[k]).sum::<f64>()) / a[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| a[k * n + i] * x[k]).sum::<f64>()) / a[i * n + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = solve_symmetric(&mut a, &[2.0, 1.0], 2).expect("positive definite");
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        let mut singular = vec![1.0, 1.0, 1.0, 1.0];
        assert!(solve_symmetric(&mut singular, &[1.0, 1.0], 2).is_none());
    }
}
