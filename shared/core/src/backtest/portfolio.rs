//! The portfolio simulation of `docs/ANALYTICS.md` ("Backtest"): holdings that drift
//! between rebalances, the buffer, `max_replace` and `min_trade` rules at a rebalance,
//! costs in basis points plus square-root impact, and the equal-weight benchmark.
//!
//! Everything is a fraction of the portfolio's value (NAV) except `capital`, which turns
//! a fraction into currency for the impact term.

use chrono::{Datelike, NaiveDate};

use super::{PortfolioSetting, Rebalance};

/// The market the portfolio trades in, by day and universe index.
#[derive(Debug, Clone, Default)]
pub struct Market {
    /// `r(i, t)`: the return from the close of day `t` to the next close; `NaN`: missing.
    pub returns: Vec<Vec<f64>>,
    /// The stock's daily volatility on day `t` (`vol_20`); `NaN`: missing.
    pub vol: Vec<Vec<f64>>,
    /// Its mean traded value over the 20 days to `t`, in currency; `NaN`: missing.
    pub adv: Vec<Vec<f64>>,
}

/// One day of a schedule: what its live model ranked, and which model that was.
#[derive(Debug, Clone, Copy)]
pub struct Day<'a> {
    /// Universe indices, best first.
    pub ranking: &'a [u32],
    /// The live model, to tell turnover caused by a retrain from rank drift.
    pub model: usize,
}

/// The days of a replayed schedule for [`simulate`]: each day's live model (its run)
/// and that run's ranking at the day's age; a day without a live row ranks nothing (a
/// rebalance then sells everything).
pub fn schedule_days<'a>(replay: &crate::replay::Replay, matrix: &'a crate::age::AgeMatrix) -> Vec<Day<'a>> {
    replay
        .live
        .iter()
        .map(|cell| match *cell {
            Some((run, age)) => Day {
                ranking: matrix.runs.get(run).and_then(|r| r.rankings.get(age)).map_or(&[][..], Vec::as_slice),
                model: run,
            },
            None => Day { ranking: &[], model: usize::MAX },
        })
        .collect()
}

/// What a portfolio did, day by day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Path {
    /// Return from the close of `t` to the next close, before costs.
    pub gross: Vec<f64>,
    /// The same after the costs of day `t`'s rebalance: `(1 − cost)(1 + gross) − 1`.
    pub net: Vec<f64>,
    /// Costs paid at day `t`'s close, as a fraction of NAV.
    pub costs: Vec<f64>,
    /// One-sided traded value at day `t`'s close, as a fraction of NAV.
    pub turnover: Vec<f64>,
    /// The part of `turnover` traded at rebalances whose live model differs from the
    /// previous rebalance's.
    pub switch_turnover: f64,
}

/// Which days of `dates` are rebalance days: the first always, then every `N`-th, or
/// the first trading day of each calendar week or month.
pub fn rebalance_days(dates: &[NaiveDate], rebalance: Rebalance) -> Vec<bool> {
    dates
        .iter()
        .enumerate()
        .map(|(index, date)| {
            index == 0
                || match rebalance {
                    Rebalance::Days(n) => index % n.max(1) as usize == 0,
                    Rebalance::Weekly => date.iso_week() != dates[index - 1].iso_week(),
                    Rebalance::Monthly => {
                        (date.year(), date.month()) != (dates[index - 1].year(), dates[index - 1].month())
                    }
                }
        })
        .collect()
}

/// The held stocks and their weights, in the order they were bought.
type Holdings = Vec<(u32, f64)>;

/// Dense per-stock lookups a rebalance uses, cleared after each use (hash maps keyed by
/// stock cost more than the rest of a simulation together).
#[derive(Debug, Default)]
struct Scratch {
    /// Rank (1 = best) in the day's ranking; 0: unranked.
    rank: Vec<usize>,
    /// Weight held before the rebalance; `NaN`: not held.
    weight: Vec<f64>,
    /// In the new portfolio.
    chosen: Vec<bool>,
}

impl Scratch {
    fn fit(&mut self, stock: u32) -> usize {
        let index = stock as usize;
        if index >= self.rank.len() {
            self.rank.resize(index + 1, 0);
            self.weight.resize(index + 1, f64::NAN);
            self.chosen.resize(index + 1, false);
        }
        index
    }
}

/// The new portfolio of a rebalance under `setting`: the stayers and the entrants.
fn select(held: &Holdings, ranking: &[u32], setting: &PortfolioSetting, scratch: &mut Scratch) -> Vec<u32> {
    let k = setting.k as usize;
    for (r, &stock) in ranking.iter().enumerate() {
        let index = scratch.fit(stock);
        scratch.rank[index] = r + 1;
    }
    let keep_within = k + setting.buffer as usize;
    let mut stayers = Vec::new();
    let mut candidates = Vec::new();
    for &(stock, _) in held {
        let index = scratch.fit(stock);
        match scratch.rank[index] {
            r if r > 0 && r <= keep_within => stayers.push(stock),
            0 => candidates.push((None, stock)),
            r => candidates.push((Some(r), stock)),
        }
    }
    // Worst first: unranked (by stock index), then by rank descending.
    candidates.sort_by_key(|&(rank, stock)| (rank.map_or(0, |r: usize| usize::MAX - r), stock));
    let sold = setting.max_replace.map_or(candidates.len(), |limit| (limit as usize).min(candidates.len()));
    stayers.extend(candidates[sold..].iter().map(|&(_, stock)| stock));
    for &stock in &stayers {
        scratch.chosen[stock as usize] = true;
    }
    let free = k.saturating_sub(stayers.len());
    let entrants: Vec<u32> =
        ranking.iter().copied().filter(|stock| !scratch.chosen[*stock as usize]).take(free).collect();
    for &stock in &stayers {
        scratch.chosen[stock as usize] = false;
    }
    for &stock in ranking {
        scratch.rank[stock as usize] = 0;
    }
    stayers.extend(entrants);
    stayers
}

/// Trades `held` to `portfolio` at equal weights (with `min_trade`); returns the new
/// holdings and the trades `Δ(i)`.
fn trade(held: &Holdings, portfolio: &[u32], min_trade: f64, scratch: &mut Scratch) -> (Holdings, Vec<(u32, f64)>) {
    let n = portfolio.len();
    if n == 0 {
        return (Vec::new(), held.iter().map(|&(stock, w)| (stock, -w)).collect());
    }
    for &(stock, w) in held {
        let index = scratch.fit(stock);
        scratch.weight[index] = w;
    }
    for &stock in portfolio {
        scratch.fit(stock);
    }
    let weight_of = |stock: u32| Some(scratch.weight[stock as usize]).filter(|w| !w.is_nan());
    let target = 1.0 / n as f64;
    // Resizes of stayers below min_trade are skipped: those keep their weight.
    let skipped: Vec<bool> =
        portfolio.iter().map(|stock| weight_of(*stock).is_some_and(|w| (target - w).abs() < min_trade)).collect();
    let kept_weight: f64 =
        portfolio.iter().zip(&skipped).filter(|(_, s)| **s).filter_map(|(stock, _)| weight_of(*stock)).sum();
    let trading = skipped.iter().filter(|s| !**s).count();
    let mut holdings = Vec::with_capacity(n);
    for (stock, skip) in portfolio.iter().zip(&skipped) {
        let weight = if *skip {
            let held = weight_of(*stock).unwrap_or(0.0);
            if trading == 0 { held / kept_weight.max(f64::MIN_POSITIVE) } else { held }
        } else {
            (1.0 - kept_weight).max(0.0) / trading as f64
        };
        holdings.push((*stock, weight));
    }
    let mut trades: Vec<(u32, f64)> =
        holdings.iter().map(|&(stock, w)| (stock, w - weight_of(stock).unwrap_or(0.0))).collect();
    for &(stock, _) in &holdings {
        scratch.chosen[stock as usize] = true;
    }
    trades.extend(held.iter().filter(|(stock, _)| !scratch.chosen[*stock as usize]).map(|&(stock, w)| (stock, -w)));
    for &(stock, _) in &holdings {
        scratch.chosen[stock as usize] = false;
    }
    for &(stock, _) in held {
        scratch.weight[stock as usize] = f64::NAN;
    }
    trades.retain(|&(_, delta)| delta != 0.0);
    (holdings, trades)
}

/// The cost of `trades` on day `t` as a fraction of NAV (`nav`: NAV in units of the
/// starting value).
fn cost(trades: &[(u32, f64)], t: usize, nav: f64, setting: &PortfolioSetting, market: &Market) -> f64 {
    let mut cost = 0.0;
    for &(_, delta) in trades {
        let bps = if delta > 0.0 { setting.buy_bps } else { setting.sell_bps };
        cost += delta.abs() * bps / 1e4;
    }
    if setting.impact > 0.0 {
        // Impact per unit traded: impact × σ × sqrt(traded value / ADV).
        let rates: Vec<Option<f64>> = trades
            .iter()
            .map(|&(stock, delta)| {
                let sigma = market.vol.get(t).and_then(|v| v.get(stock as usize)).copied().unwrap_or(f64::NAN);
                let adv = market.adv.get(t).and_then(|v| v.get(stock as usize)).copied().unwrap_or(f64::NAN);
                let traded = delta.abs() * nav * setting.capital;
                let rate = setting.impact * sigma * (traded / adv).sqrt();
                (rate.is_finite() && adv > 0.0).then_some(rate)
            })
            .collect();
        let worst = rates.iter().flatten().copied().fold(0.0, f64::max);
        for (&(_, delta), rate) in trades.iter().zip(&rates) {
            cost += delta.abs() * rate.unwrap_or(worst);
        }
    }
    cost.min(1.0)
}

/// Simulates `setting` over `days` (one per market day, in order) with rebalances on
/// the days `rebalance` marks.
pub fn simulate(days: &[Day<'_>], rebalance: &[bool], setting: &PortfolioSetting, market: &Market) -> Path {
    simulate_all(std::slice::from_ref(&days), rebalance, setting, market).pop().unwrap_or_default()
}

/// [`simulate`] for several schedules at once, day by day in lockstep: each day's returns
/// are read from memory once for all of them (one at a time, the random reads of a day's
/// row dominate a simulation). Paths in the order of `schedules`.
pub fn simulate_all<'a, D: AsRef<[Day<'a>]>>(
    schedules: &[D],
    rebalance: &[bool],
    setting: &PortfolioSetting,
    market: &Market,
) -> Vec<Path> {
    let days = schedules.iter().map(|d| d.as_ref().len()).max().unwrap_or(0);
    let mut scratch = Scratch::default();
    let mut portfolios: Vec<Portfolio> = schedules.iter().map(|_| Portfolio::new(days)).collect();
    for t in 0..days {
        let rebalancing = rebalance.get(t).copied().unwrap_or(t == 0);
        for (portfolio, schedule) in portfolios.iter_mut().zip(schedules) {
            let Some(day) = schedule.as_ref().get(t) else { continue };
            portfolio.step(t, rebalancing, setting, market, &mut scratch, |held, scratch| {
                (select(held, day.ranking, setting, scratch), day.model)
            });
        }
    }
    portfolios.into_iter().map(|p| p.path).collect()
}

/// The benchmark: every stock of `universe[t]` at equal weight, rebalanced on the same
/// days with the same costs (`k`, `buffer` and `max_replace` of `setting` unused).
pub fn benchmark(universe: &[Vec<u32>], rebalance: &[bool], setting: &PortfolioSetting, market: &Market) -> Path {
    let mut scratch = Scratch::default();
    let mut portfolio = Portfolio::new(universe.len());
    for (t, stocks) in universe.iter().enumerate() {
        let rebalancing = rebalance.get(t).copied().unwrap_or(t == 0);
        portfolio.step(t, rebalancing, setting, market, &mut scratch, |_, _| (stocks.clone(), 0));
    }
    portfolio.path
}

/// A portfolio being simulated, one day at a time.
struct Portfolio {
    held: Holdings,
    /// NAV in units of the starting value.
    nav: f64,
    last_model: Option<usize>,
    path: Path,
}

impl Portfolio {
    fn new(days: usize) -> Self {
        let path = Path {
            gross: Vec::with_capacity(days),
            net: Vec::with_capacity(days),
            costs: Vec::with_capacity(days),
            turnover: Vec::with_capacity(days),
            switch_turnover: 0.0,
        };
        Self { held: Vec::new(), nav: 1.0, last_model: None, path }
    }

    /// Day `t`: a rebalance to what `choose` picks (and the live model), if `rebalancing`,
    /// then the day's returns.
    fn step(
        &mut self,
        t: usize,
        rebalancing: bool,
        setting: &PortfolioSetting,
        market: &Market,
        scratch: &mut Scratch,
        choose: impl FnOnce(&Holdings, &mut Scratch) -> (Vec<u32>, usize),
    ) {
        let (mut day_cost, mut day_turnover) = (0.0, 0.0);
        if rebalancing {
            let (portfolio, model) = choose(&self.held, scratch);
            let (holdings, trades) = trade(&self.held, &portfolio, setting.min_trade, scratch);
            day_cost = cost(&trades, t, self.nav, setting, market);
            day_turnover = trades.iter().map(|(_, d)| d.abs()).sum::<f64>() / 2.0;
            if self.last_model.is_some_and(|last| last != model) {
                self.path.switch_turnover += day_turnover;
            }
            self.last_model = Some(model);
            self.held = holdings;
        }
        let returns = market.returns.get(t);
        let r =
            |stock: u32| returns.and_then(|r| r.get(stock as usize)).copied().filter(|v| v.is_finite()).unwrap_or(0.0);
        // Uninvested value (no stock to hold) earns nothing; weights drift with prices.
        let gross: f64 = self.held.iter().map(|&(stock, w)| w * r(stock)).sum();
        let growth = 1.0 + gross;
        if growth > 0.0 {
            for (stock, w) in &mut self.held {
                *w *= (1.0 + r(*stock)) / growth;
            }
        }
        // (1 − cost)(1 + gross) − 1, written so that no cost leaves the gross return exact.
        let net = gross - day_cost * growth;
        self.nav *= 1.0 + net;
        self.path.gross.push(gross);
        self.path.net.push(net);
        self.path.costs.push(day_cost);
        self.path.turnover.push(day_turnover);
    }
}

#[cfg(test)]
mod tests;
