//! A portfolio path's metrics against its benchmark (`docs/ANALYTICS.md`, "Backtest",
//! Metrics): returns, excess with a block-bootstrap interval, volatility, Sharpe, drawdown,
//! turnover, costs, the turnover caused by model switches, hit rate.

use serde::{Deserialize, Serialize};

use super::portfolio::Path;
use crate::bootstrap::{Bootstrap, Interval};
use crate::metric::Summary;

/// Trading days in a year, for annualising.
pub const YEAR: f64 = 252.0;

/// Block length (trading days) of the bootstrap of daily excess returns.
pub const EXCESS_BLOCK: usize = 21;

/// The metrics of one (schedule or policy) × portfolio setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestMetrics {
    /// Days in the period.
    pub days: usize,
    /// `(NAV_end / NAV_start)^(252 / n) − 1`, before and after costs.
    pub annual_gross: f64,
    pub annual_net: f64,
    /// `252 × mean(net − benchmark net)`, with its 95% interval.
    pub annual_excess: f64,
    pub excess_interval: Option<Interval>,
    /// `std(net) × √252`.
    pub volatility: f64,
    /// `mean(net) / std(net) × √252`; `None` for a constant series.
    pub sharpe: Option<f64>,
    /// The largest fall of net NAV from a running peak, as a fraction of the peak.
    pub max_drawdown: f64,
    /// One-sided traded value per year, as a fraction of NAV.
    pub turnover_per_year: f64,
    /// Costs over the period: the sum of every rebalance's cost (fractions of NAV then).
    pub costs: f64,
    /// Share of turnover traded at rebalances where the live model had changed; `None`
    /// without turnover.
    pub switch_share: Option<f64>,
    /// Share of days whose net return beat the benchmark's.
    pub hit_rate: f64,
}

pub(crate) fn annualised(returns: &[f64]) -> f64 {
    if returns.is_empty() {
        return 0.0;
    }
    let growth: f64 = returns.iter().map(|r| 1.0 + r).product();
    growth.max(0.0).powf(YEAR / returns.len() as f64) - 1.0
}

/// The largest fall of `returns`' compounded value from its running peak.
pub fn max_drawdown(returns: &[f64]) -> f64 {
    let (mut nav, mut peak, mut worst) = (1.0f64, 1.0f64, 0.0f64);
    for r in returns {
        nav *= 1.0 + r;
        peak = peak.max(nav);
        worst = worst.max(1.0 - nav / peak);
    }
    worst
}

/// The daily excess returns of `path` over `benchmark` (both net), day by day.
pub fn excess(path: &Path, benchmark: &Path) -> Vec<f64> {
    path.net.iter().zip(&benchmark.net).map(|(a, b)| a - b).collect()
}

/// The 95% interval of the annualised mean daily excess of `path` over `benchmark`: a
/// moving-block bootstrap (block [`EXCESS_BLOCK`]); `None` with no samples.
pub fn excess_interval(path: &Path, benchmark: &Path, samples: u32, seed: u64) -> Option<Interval> {
    let bootstrap = Bootstrap { block: EXCESS_BLOCK, samples, seed };
    bootstrap.mean_interval(&excess(path, benchmark)).map(|i| Interval { low: i.low * YEAR, high: i.high * YEAR })
}

/// The metrics of `path` against `benchmark` (same days); `samples` and `seed` drive the
/// excess interval's bootstrap (block [`EXCESS_BLOCK`]; 0 samples: no interval).
pub fn summarise(path: &Path, benchmark: &Path, samples: u32, seed: u64) -> BacktestMetrics {
    let days = path.net.len();
    let excess = excess(path, benchmark);
    // A path too short for a mean (no day) or a spread (one day) counts as flat.
    let or_zero = |value: f64| if value.is_finite() { value } else { 0.0 };
    let (net, excess_summary) = (Summary::of(&path.net), Summary::of(&excess));
    let volatility = or_zero(net.std);
    let turnover: f64 = path.turnover.iter().sum();
    BacktestMetrics {
        days,
        annual_gross: annualised(&path.gross),
        annual_net: annualised(&path.net),
        annual_excess: YEAR * or_zero(excess_summary.mean),
        excess_interval: excess_interval(path, benchmark, samples, seed),
        volatility: volatility * YEAR.sqrt(),
        sharpe: (volatility > 0.0).then(|| net.mean / volatility * YEAR.sqrt()),
        max_drawdown: max_drawdown(&path.net),
        turnover_per_year: if days == 0 { 0.0 } else { turnover * YEAR / days as f64 },
        costs: path.costs.iter().sum(),
        switch_share: (turnover > 0.0).then(|| path.switch_turnover / turnover),
        hit_rate: or_zero(excess_summary.hit_rate),
    }
}

/// The annualised paired difference of daily net returns `a − b` (same days), with its
/// 95% interval: how much one schedule's portfolio earned over another's.
pub fn paired_difference(a: &Path, b: &Path, samples: u32, seed: u64) -> (f64, Option<Interval>) {
    let differences: Vec<f64> = a.net.iter().zip(&b.net).map(|(x, y)| x - y).collect();
    let bootstrap = Bootstrap { block: EXCESS_BLOCK, samples, seed };
    let interval = bootstrap.mean_interval(&differences).map(|i| Interval { low: i.low * YEAR, high: i.high * YEAR });
    (YEAR * Summary::of(&differences).mean, interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(net: &[f64], costs: &[f64], turnover: &[f64], switch: f64) -> Path {
        let gross = net.iter().zip(costs).map(|(n, c)| (n + c) / (1.0 - c)).collect();
        Path { gross, net: net.to_vec(), costs: costs.to_vec(), turnover: turnover.to_vec(), switch_turnover: switch }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_metrics_of_a_three_day_path() {
        let p = path(&[0.01, -0.02, 0.03], &[0.001, 0.0, 0.0], &[0.5, 0.0, 0.25], 0.25);
        let b = path(&[0.0, -0.01, 0.01], &[0.0; 3], &[0.0; 3], 0.0);
        let m = summarise(&p, &b, 200, 1);
        assert_eq!(m.days, 3);
        assert!(close(m.annual_net, (1.01f64 * 0.98 * 1.03).powf(84.0) - 1.0));
        assert!(close(m.annual_excess, 252.0 * (0.01 - 0.01 + 0.02) / 3.0));
        // Peak 1.01, trough 1.01 × 0.98: a 2% drawdown.
        assert!(close(m.max_drawdown, 0.02));
        assert!(close(m.turnover_per_year, 0.75 * 84.0));
        assert!(close(m.costs, 0.001));
        assert_eq!(m.switch_share, Some(0.25 / 0.75));
        assert!(close(m.hit_rate, 2.0 / 3.0), "excess 0.01, -0.01, 0.02");
        let std = (((0.01f64 - 0.02 / 3.0).powi(2) + (-0.02f64 - 0.02 / 3.0).powi(2) + (0.03f64 - 0.02 / 3.0).powi(2))
            / 2.0)
            .sqrt();
        assert!(close(m.volatility, std * 252f64.sqrt()));
        assert!(close(m.sharpe.expect("varies"), 0.02 / 3.0 / std * 252f64.sqrt()));
        assert!(m.excess_interval.is_some());
    }

    #[test]
    fn a_path_against_itself_has_no_excess_and_a_flat_path_no_sharpe() {
        let p = path(&[0.01, -0.02, 0.03, 0.0], &[0.0; 4], &[0.5, 0.0, 0.0, 0.0], 0.0);
        let m = summarise(&p, &p, 100, 1);
        assert_eq!((m.annual_excess, m.hit_rate), (0.0, 0.0));
        let flat = path(&[0.0; 4], &[0.0; 4], &[0.0; 4], 0.0);
        let m = summarise(&flat, &p, 100, 1);
        assert_eq!((m.sharpe, m.switch_share, m.max_drawdown), (None, None, 0.0));
        let (difference, interval) = paired_difference(&p, &p, 100, 1);
        assert_eq!(difference, 0.0);
        assert!(interval.is_some_and(|i| i.low == 0.0 && i.high == 0.0));
    }
}
