//! Per-day ranking metrics, exactly as ARCHITECTURE.md defines them.
//!
//! `P@K(t)` is the share of the K highest-scored stocks whose forward return is
//! positive; `base(t)` the share of all scored stocks with a positive forward return
//! (the random-ranking expectation); `ΔP@K = P@K − base`. A stock counts as scored
//! when both its score and its target are non-null. Ties in the score are broken by
//! the lower position in the input, so a ranking is deterministic.

/// Precision at K of one day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayPrecision {
    pub precision_at_k: f64,
    pub base_rate: f64,
    /// Stocks scored (non-null score and target).
    pub stocks: usize,
    /// K actually used: the requested K, or all scored stocks when fewer.
    pub k: usize,
}

impl DayPrecision {
    pub fn delta(&self) -> f64 {
        self.precision_at_k - self.base_rate
    }
}

/// P@K and base rate of one day; `None` when no stock is scored or `k` is 0.
pub fn precision_at_k(scores: &[f64], targets: &[f64], k: usize) -> Option<DayPrecision> {
    let mut scored: Vec<(usize, f64, f64)> = scores
        .iter()
        .zip(targets)
        .enumerate()
        .filter(|(_, (s, t))| s.is_finite() && t.is_finite())
        .map(|(i, (s, t))| (i, *s, *t))
        .collect();
    if scored.is_empty() || k == 0 {
        return None;
    }
    let stocks = scored.len();
    let k = k.min(stocks);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let positive = |rows: &[(usize, f64, f64)]| rows.iter().filter(|r| r.2 > 0.0).count() as f64;
    Some(DayPrecision {
        precision_at_k: positive(&scored[..k]) / k as f64,
        base_rate: positive(&scored) / stocks as f64,
        stocks,
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_day() {
        // Scores rank stocks 3, 0, 2, 1; positive returns: stocks 0 and 1.
        let scores = [0.9, 0.1, 0.5, 1.2];
        let targets = [0.02, 0.01, -0.03, -0.01];
        let day = precision_at_k(&scores, &targets, 2).expect("scored day");
        assert_eq!(day.precision_at_k, 0.5);
        assert_eq!(day.base_rate, 0.5);
        assert_eq!(day.delta(), 0.0);
        let top1 = precision_at_k(&scores, &targets, 1).expect("scored day");
        assert_eq!(top1.precision_at_k, 0.0);
    }

    #[test]
    fn nulls_are_not_scored_and_k_is_capped() {
        let scores = [f64::NAN, 0.3, 0.2];
        let targets = [0.1, f64::NAN, 0.05];
        let day = precision_at_k(&scores, &targets, 5).expect("one stock scored");
        assert_eq!((day.stocks, day.k, day.precision_at_k, day.base_rate), (1, 1, 1.0, 1.0));
        assert_eq!(precision_at_k(&[f64::NAN], &[0.1], 1), None);
    }

    #[test]
    fn ties_break_by_input_position() {
        let day = precision_at_k(&[1.0, 1.0, 1.0], &[-0.1, 0.2, 0.3], 1).expect("scored day");
        assert_eq!(day.precision_at_k, 0.0);
    }
}
