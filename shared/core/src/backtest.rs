//! The portfolio backtest's settings: the `[backtest]` grid of a sweep spec and the
//! settings it expands to. The rules themselves are in `docs/ANALYTICS.md` ("Backtest").

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod lines;
pub mod market;
pub mod metrics;
pub mod portfolio;

/// Ranking depth kept by default for every scored day: enough for `k + buffer ≤ 128`.
pub const DEFAULT_DEPTH: u32 = 128;

/// The ranks a result keeps per scored day for `grid` (none: the default depth).
pub fn ranks_kept(grid: Option<&BacktestGrid>) -> usize {
    match grid.map(|grid| grid.depth) {
        None => DEFAULT_DEPTH as usize,
        Some(Depth::Top(depth)) => depth as usize,
        Some(Depth::All) => usize::MAX,
    }
}

/// The universe indices of the `depth` best-scored stocks of a day, best first: `scores`
/// and `stocks` are the day's rows; a score that is not finite is not ranked; equal
/// scores go in universe order.
pub fn top_ranked(scores: &[f64], stocks: &[u32], depth: usize) -> Vec<u32> {
    // `+ 0.0` makes -0.0 equal 0.0 in the ordering too (as for the day's metrics).
    let mut ranked: Vec<(f64, u32)> =
        scores.iter().zip(stocks).filter(|(score, _)| score.is_finite()).map(|(s, i)| (*s + 0.0, *i)).collect();
    let order = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if depth < ranked.len() {
        ranked.select_nth_unstable_by(depth, order);
        ranked.truncate(depth);
    }
    ranked.sort_unstable_by(order);
    ranked.into_iter().map(|(_, stock)| stock).collect()
}

/// The most portfolio settings one grid may expand to.
pub const MAX_SETTINGS: usize = 10_000;

/// When the portfolio is rebalanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rebalance {
    /// Every N-th trading day from the first day of the period.
    Days(u32),
    /// The first trading day of each calendar week.
    Weekly,
    /// The first trading day of each calendar month.
    Monthly,
}

impl fmt::Display for Rebalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(days) => write!(f, "{days}d"),
            Self::Weekly => f.write_str("weekly"),
            Self::Monthly => f.write_str("monthly"),
        }
    }
}

impl std::str::FromStr for Rebalance {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "weekly" => Ok(Self::Weekly),
            "monthly" => Ok(Self::Monthly),
            other => match other.strip_suffix('d').unwrap_or(other).parse::<u32>() {
                Ok(days) if days >= 1 => Ok(Self::Days(days)),
                _ => Err(format!("expected \"weekly\", \"monthly\", N or \"Nd\" (N >= 1), got {other:?}")),
            },
        }
    }
}

/// How many ranks of each scored day a result keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Depth {
    Top(u32),
    All,
}

/// The `[backtest]` grid: each axis a list, the settings their product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestGrid {
    pub k: Vec<u32>,
    pub rebalance: Vec<Rebalance>,
    pub buffer: Vec<u32>,
    /// `None`: no limit on names replaced per rebalance.
    pub max_replace: Vec<Option<u32>>,
    pub min_trade: Vec<f64>,
    pub buy_bps: Vec<f64>,
    pub sell_bps: Vec<f64>,
    pub impact: Vec<f64>,
    pub capital: Vec<f64>,
    /// Currency per training: the frontier's total cost adds `retrains × retrain_cost /
    /// capital` to the trading costs (0: trading costs only).
    #[serde(default)]
    pub retrain_cost: f64,
    pub depth: Depth,
}

/// One portfolio setting of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PortfolioSetting {
    pub k: u32,
    pub rebalance: Rebalance,
    pub buffer: u32,
    pub max_replace: Option<u32>,
    pub min_trade: f64,
    pub buy_bps: f64,
    pub sell_bps: f64,
    pub impact: f64,
    pub capital: f64,
}

impl PortfolioSetting {
    /// Top `k` rebalanced at `rebalance`, every other field at the spec's default: no
    /// buffer, unlimited replacements, no minimum trade, 10 bps a side, no impact,
    /// capital 10⁸.
    pub fn new(k: u32, rebalance: Rebalance) -> Self {
        Self {
            k,
            rebalance,
            buffer: 0,
            max_replace: None,
            min_trade: 0.0,
            buy_bps: 10.0,
            sell_bps: 10.0,
            impact: 0.0,
            capital: 1e8,
        }
    }
}

impl fmt::Display for PortfolioSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "K{} {} buffer {}", self.k, self.rebalance, self.buffer)?;
        if let Some(limit) = self.max_replace {
            write!(f, " replace ≤{limit}")?;
        }
        if self.min_trade > 0.0 {
            write!(f, " min trade {}", self.min_trade)?;
        }
        write!(f, " {}/{} bps", self.buy_bps, self.sell_bps)?;
        if self.impact > 0.0 {
            write!(f, " impact {} at {:.0}", self.impact, self.capital)?;
        }
        Ok(())
    }
}

impl BacktestGrid {
    /// The grid of one setting, at the default depth and no retrain cost.
    pub fn single(setting: &PortfolioSetting) -> Self {
        Self {
            k: vec![setting.k],
            rebalance: vec![setting.rebalance],
            buffer: vec![setting.buffer],
            max_replace: vec![setting.max_replace],
            min_trade: vec![setting.min_trade],
            buy_bps: vec![setting.buy_bps],
            sell_bps: vec![setting.sell_bps],
            impact: vec![setting.impact],
            capital: vec![setting.capital],
            retrain_cost: 0.0,
            depth: Depth::Top(DEFAULT_DEPTH),
        }
    }

    /// The number of settings, without expanding them (saturating).
    pub fn len(&self) -> usize {
        [
            self.k.len(),
            self.rebalance.len(),
            self.buffer.len(),
            self.max_replace.len(),
            self.min_trade.len(),
            self.buy_bps.len(),
            self.sell_bps.len(),
            self.impact.len(),
            self.capital.len(),
        ]
        .iter()
        .fold(1usize, |n, &len| n.saturating_mul(len))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The deepest rank any setting may look at: `k + buffer`, at its largest.
    pub fn ranks_needed(&self) -> u32 {
        let k = self.k.iter().copied().max().unwrap_or(0);
        let buffer = self.buffer.iter().copied().max().unwrap_or(0);
        k.saturating_add(buffer)
    }

    /// Every setting, `k` varying slowest and `capital` fastest.
    pub fn settings(&self) -> Vec<PortfolioSetting> {
        /// Each setting of `settings` once per value of one axis, the axis varying fastest.
        fn axis<T: Copy>(
            settings: Vec<PortfolioSetting>,
            values: &[T],
            set: impl Fn(&mut PortfolioSetting, T),
        ) -> Vec<PortfolioSetting> {
            let mut out = Vec::with_capacity(settings.len() * values.len());
            for setting in settings {
                for &value in values {
                    let mut next = setting;
                    set(&mut next, value);
                    out.push(next);
                }
            }
            out
        }
        let start = PortfolioSetting {
            k: 0,
            rebalance: Rebalance::Days(1),
            buffer: 0,
            max_replace: None,
            min_trade: 0.0,
            buy_bps: 0.0,
            sell_bps: 0.0,
            impact: 0.0,
            capital: 0.0,
        };
        let settings = axis(vec![start], &self.k, |s, v| s.k = v);
        let settings = axis(settings, &self.rebalance, |s, v| s.rebalance = v);
        let settings = axis(settings, &self.buffer, |s, v| s.buffer = v);
        let settings = axis(settings, &self.max_replace, |s, v| s.max_replace = v);
        let settings = axis(settings, &self.min_trade, |s, v| s.min_trade = v);
        let settings = axis(settings, &self.buy_bps, |s, v| s.buy_bps = v);
        let settings = axis(settings, &self.sell_bps, |s, v| s.sell_bps = v);
        let settings = axis(settings, &self.impact, |s, v| s.impact = v);
        axis(settings, &self.capital, |s, v| s.capital = v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_ranked_are_the_best_scores_first_ties_in_universe_order() {
        let scores = [0.1, f64::NAN, 0.5, 0.5, -1.0, 0.3];
        let stocks = [10, 11, 13, 12, 14, 15];
        assert_eq!(top_ranked(&scores, &stocks, 3), vec![12, 13, 15]);
        assert_eq!(top_ranked(&scores, &stocks, 100), vec![12, 13, 15, 10, 14], "the NaN is not ranked");
        assert_eq!(top_ranked(&scores, &stocks, 0), Vec::<u32>::new());
        assert_eq!(top_ranked(&[-0.0, 0.0], &[1, 2], 2), vec![1, 2], "-0.0 and 0.0 are equal: universe order");
        assert_eq!(ranks_kept(None), 128);
    }

    #[test]
    fn rebalance_reads_calendar_names_and_day_counts() {
        assert_eq!("weekly".parse(), Ok(Rebalance::Weekly));
        assert_eq!("monthly".parse(), Ok(Rebalance::Monthly));
        assert_eq!("5d".parse(), Ok(Rebalance::Days(5)));
        assert_eq!("21".parse(), Ok(Rebalance::Days(21)));
        assert!("0d".parse::<Rebalance>().is_err());
        assert!("daily".parse::<Rebalance>().is_err());
        assert_eq!(Rebalance::Days(5).to_string(), "5d");
    }

    #[test]
    fn the_grid_is_the_product_of_its_axes() {
        let grid = BacktestGrid {
            k: vec![30, 50],
            rebalance: vec![Rebalance::Weekly, Rebalance::Monthly],
            buffer: vec![0, 20],
            max_replace: vec![None],
            min_trade: vec![0.0],
            buy_bps: vec![10.0],
            sell_bps: vec![10.0],
            impact: vec![0.0, 0.1],
            capital: vec![1e8],
            retrain_cost: 0.0,
            depth: Depth::Top(DEFAULT_DEPTH),
        };
        assert_eq!(grid.len(), 16);
        let settings = grid.settings();
        assert_eq!(settings.len(), 16);
        assert_eq!(settings[0].k, 30);
        assert_eq!(settings[15].k, 50);
        assert_eq!((settings[1].k, settings[1].impact), (30, 0.1), "the last axis varies fastest");
        assert_eq!(grid.ranks_needed(), 70);
        let distinct: std::collections::BTreeSet<String> = settings.iter().map(|s| s.to_string()).collect();
        assert_eq!(distinct.len(), 16, "every setting reads differently");
        assert_eq!(BacktestGrid::single(&settings[5]).settings(), vec![settings[5]], "a grid of one setting");
    }
}
