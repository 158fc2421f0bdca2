//! The backtest of one line (window, model, seed): every schedule and policy replayed on
//! the line's period, simulated under every portfolio setting of the grid, against the
//! equal-weight benchmark (`docs/ANALYTICS.md`, "Backtest", Report).

use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::metrics::{BacktestMetrics, YEAR, annualised, excess_interval, paired_difference, summarise};
use super::portfolio::{Market, Path, benchmark, rebalance_days, schedule_days, simulate_all};
use super::{BacktestGrid, PortfolioSetting};
use crate::age::AgeMatrix;
use crate::bootstrap::Interval;
use crate::replay::Replay;
use crate::replay::frontier;
use crate::replay::select::Selector;
use crate::snooping::overfitting::{Overfitting, probability};
use crate::snooping::sharpe::{Deflated, deflate};
use crate::snooping::spent::{self, Part};
use crate::spec::{Among, SelectionConfig};

/// Adaptive policies per setting that get intervals for their net excess besides the
/// fixed cadences, the report's best policy and the frontier: the best by net excess
/// (the bootstrap would otherwise dominate the cost of a large grid).
pub const TOP_POLICIES: usize = 5;

/// A schedule to backtest.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    pub name: &'a str,
    pub adaptive: bool,
    pub replay: &'a Replay,
    /// Keep its equity curves (the report plots fixed cadences and the best policy).
    pub curves: bool,
}

/// A schedule's net returns against another's on the same days, annualised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetDifference {
    pub against: String,
    pub annual: f64,
    pub interval: Option<Interval>,
}

/// One (schedule, setting) of a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestOutcome {
    pub schedule: String,
    pub adaptive: bool,
    /// Index into the report's settings.
    pub setting: usize,
    /// Trainings the schedule used on the period, the first model's included.
    pub retrains: usize,
    pub metrics: BacktestMetrics,
    /// Trading costs plus `retrains × retrain_cost / capital`: the frontier's cost.
    pub total_cost: f64,
    /// Against the fixed cadence with the highest net return under the same setting.
    pub vs_best_fixed: Option<NetDifference>,
    /// Not dominated in (lower total cost, higher annual excess) under its setting.
    pub on_frontier: bool,
}

/// A net and gross value path (1 at the start, before the first day's costs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// A schedule's name, or `None` for the benchmark.
    pub schedule: Option<String>,
    pub setting: usize,
    /// Value at the close of each day of the period, after that day's return (single
    /// precision: for plots and tables; the metrics are computed in double).
    pub net: Vec<f32>,
    pub gross: Vec<f32>,
}

/// The backtest of one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineBacktest {
    pub first_date: Option<NaiveDate>,
    pub dates: Vec<NaiveDate>,
    /// The benchmark's metrics per setting (its excess is 0 by definition).
    pub benchmark: Vec<BacktestMetrics>,
    /// Every fully covered schedule × setting, schedules in the given order, settings
    /// fastest.
    pub outcomes: Vec<BacktestOutcome>,
    pub curves: Vec<Curve>,
    /// Schedules left out: some day of the period had no live model row.
    pub skipped: Vec<String>,
    /// Per setting: the best net schedule's deflated Sharpe ratio and the probability of
    /// backtest overfitting over the line's schedules.
    #[serde(default)]
    pub overfitting: Vec<SettingOverfitting>,
}

/// How much of a setting's best net result the number of schedules tried explains
/// (`docs/ANALYTICS.md`, "Corrections for the number tried").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingOverfitting {
    pub setting: usize,
    /// The schedule with the highest Sharpe ratio of net daily returns, and its deflated
    /// Sharpe ratio against every fully covered schedule of the line as trials.
    pub best: Option<String>,
    pub deflated: Option<Deflated>,
    /// PBO by CSCV over the same schedules' net daily returns.
    pub pbo: Option<Overfitting>,
    /// A schedule chosen out of sample at each rebalance, per `[selection]` lookback.
    #[serde(default)]
    pub out_of_sample: Vec<NetSelection>,
}

/// A selector over the setting's net returns (`wf_shared::replay::select`, horizon 0: a
/// day's net return is known at the next close, before the next rebalance): at each
/// rebalance it follows the schedule of its pool with the highest mean net return over
/// the last `lookback` days. It follows that schedule's net returns as they are; a real
/// switch of portfolio would trade, and those costs are not counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetSelection {
    pub lookback: u32,
    /// Annualised net return of the series followed.
    pub annual_net: f64,
    /// The best fixed cadence (by annualised net return) and `252 × mean(y − y_best)`.
    pub vs_best_fixed: Option<(String, f64)>,
    pub switches: usize,
}

/// Blocks of the CSCV behind a backtest's PBO.
pub const PBO_BLOCKS: usize = 16;

/// What the line's backtest reads.
#[derive(Debug, Clone, Copy)]
pub struct LineInput<'a> {
    pub matrix: &'a AgeMatrix,
    pub schedules: &'a [Schedule<'a>],
    pub grid: &'a BacktestGrid,
    pub settings: &'a [PortfolioSetting],
    /// The whole calendar's market, and the dates and stocks of each trading day.
    pub market: &'a Market,
    pub dates: &'a [NaiveDate],
    pub universe: &'a [Vec<u32>],
    pub samples: u32,
    pub seed: u64,
    /// The out-of-sample selectors: a lookback each, and their pool.
    pub selection: &'a SelectionConfig,
    /// With the DSR, PBO and selectors per setting (`overfitting`); off only to measure
    /// their cost.
    pub statistics: bool,
}

fn nav(returns: &[f64]) -> Vec<f32> {
    returns
        .iter()
        .scan(1.0f64, |value, r| {
            *value *= 1.0 + r;
            Some(*value as f32)
        })
        .collect()
}

/// Backtests every schedule of a line under every setting. All schedules share the
/// period of the first one (a line's replays all span the line's period).
pub fn backtest_line(input: LineInput<'_>) -> LineBacktest {
    let LineInput { matrix, schedules, grid, settings, market, dates, universe, samples, seed, selection, statistics } =
        input;
    let Some(first) = schedules.first() else {
        return LineBacktest {
            first_date: None,
            dates: Vec::new(),
            benchmark: Vec::new(),
            outcomes: Vec::new(),
            curves: Vec::new(),
            skipped: Vec::new(),
            overfitting: Vec::new(),
        };
    };
    let (start, len) = (first.replay.first_day, first.replay.live.len());
    let period_dates: Vec<NaiveDate> =
        (start..start + len).map(|d| dates.get(d).copied().unwrap_or_default()).collect();
    let market = market.days(start, len);
    let universe: Vec<Vec<u32>> = (start..start + len).map(|d| universe.get(d).cloned().unwrap_or_default()).collect();
    let (full, skipped): (Vec<&Schedule>, Vec<&Schedule>) =
        schedules.iter().partition(|s| s.replay.live.len() == len && s.replay.live.iter().all(Option::is_some));
    let days: Vec<_> = full.iter().map(|s| schedule_days(s.replay, matrix)).collect();
    let retrains: Vec<usize> = full.iter().map(|s| s.replay.retrain_days.len()).collect();

    // The benchmark ignores k, buffer and max_replace: one per distinct rest of a setting.
    let mut distinct: Vec<PortfolioSetting> = Vec::new();
    let bench_of: Vec<usize> = settings
        .iter()
        .map(|setting| {
            let key = PortfolioSetting { k: 0, buffer: 0, max_replace: None, ..*setting };
            distinct.iter().position(|d| *d == key).unwrap_or_else(|| {
                distinct.push(key);
                distinct.len() - 1
            })
        })
        .collect();
    let benches: Vec<(Path, BacktestMetrics)> = distinct
        .par_iter()
        .map(|setting| {
            let rebalance = rebalance_days(&period_dates, setting.rebalance);
            let bench = benchmark(&universe, &rebalance, setting, &market);
            // Against itself: no excess, so no interval to draw.
            let metrics = summarise(&bench, &bench, 0, 0);
            (bench, metrics)
        })
        .collect();

    type PerSetting = (BacktestMetrics, Vec<BacktestOutcome>, Vec<Curve>, Option<SettingOverfitting>);
    let per_setting: Vec<PerSetting> = settings
        .par_iter()
        .enumerate()
        .map(|(index, setting)| {
            let rebalance = rebalance_days(&period_dates, setting.rebalance);
            let (bench, bench_metrics) = &benches[bench_of[index]];
            // One lockstep group per thread.
            let group = days.len().div_ceil(rayon::current_num_threads().max(1)).max(1);
            let paths: Vec<Path> = days
                .par_chunks(group)
                .flat_map_iter(|chunk| simulate_all(chunk, &rebalance, setting, &market))
                .collect();
            let stream = |i: usize| seed.wrapping_add((index * full.len() + i) as u64);
            // Intervals come later, for the outcomes that get them.
            let mut metrics: Vec<BacktestMetrics> = paths.iter().map(|path| summarise(path, bench, 0, 0)).collect();
            let best_fixed = (0..full.len())
                .filter(|i| !full[*i].adaptive)
                .max_by(|a, b| metrics[*a].annual_net.total_cmp(&metrics[*b].annual_net));
            let total_cost: Vec<f64> = (0..full.len())
                .map(|i| metrics[i].costs + retrains[i] as f64 * grid.retrain_cost / setting.capital)
                .collect();
            let points: Vec<(f64, f64)> = (0..full.len()).map(|i| (total_cost[i], metrics[i].annual_excess)).collect();
            let on_frontier = frontier(&points);
            let mut by_excess: Vec<usize> = (0..full.len()).filter(|i| full[*i].adaptive).collect();
            by_excess.sort_by(|a, b| metrics[*b].annual_excess.total_cmp(&metrics[*a].annual_excess));
            let detailed: Vec<bool> = (0..full.len())
                .map(|i| {
                    !full[i].adaptive
                        || full[i].curves
                        || on_frontier[i]
                        || by_excess.iter().take(TOP_POLICIES).any(|b| *b == i)
                })
                .collect();
            for i in (0..full.len()).filter(|i| detailed[*i]) {
                metrics[i].excess_interval = excess_interval(&paths[i], bench, samples, stream(i));
            }
            let outcomes = (0..full.len())
                .map(|i| BacktestOutcome {
                    schedule: full[i].name.to_string(),
                    adaptive: full[i].adaptive,
                    setting: index,
                    retrains: retrains[i],
                    metrics: metrics[i].clone(),
                    total_cost: total_cost[i],
                    vs_best_fixed: best_fixed.filter(|best| *best != i).map(|best| {
                        let samples = if detailed[i] { samples } else { 0 };
                        let (annual, interval) = paired_difference(&paths[i], &paths[best], samples, stream(i));
                        NetDifference { against: full[best].name.to_string(), annual, interval }
                    }),
                    on_frontier: on_frontier[i],
                })
                .collect();
            let mut curves =
                vec![Curve { schedule: None, setting: index, net: nav(&bench.net), gross: nav(&bench.gross) }];
            curves.extend((0..full.len()).filter(|i| full[*i].curves).map(|i| Curve {
                schedule: Some(full[i].name.to_string()),
                setting: index,
                net: nav(&paths[i].net),
                gross: nav(&paths[i].gross),
            }));
            if !statistics {
                return (bench_metrics.clone(), outcomes, curves, None);
            }
            let net: Vec<&[f64]> = paths.iter().map(|p| p.net.as_slice()).collect();
            let deflated = spent::timed(Part::Deflated, || {
                // Net returns share the market's moves: their correlation is near 1 whatever
                // the ranking. The excess over the benchmark tells schedules apart.
                // Summed over non-overlapping weeks of 5 days: the correlations cost a fifth.
                let excess: Vec<Vec<f64>> = paths
                    .iter()
                    .map(|p| {
                        let daily: Vec<f64> = p.net.iter().zip(&bench.net).map(|(y, b)| y - b).collect();
                        daily.chunks(5).map(|week| week.iter().sum()).collect()
                    })
                    .collect();
                let excess: Vec<&[f64]> = excess.iter().map(Vec::as_slice).collect();
                deflate(&net, &excess)
            });
            let out_of_sample = spent::timed(Part::Selectors, || {
                let decisions: Vec<usize> = (0..rebalance.len()).filter(|d| rebalance[*d]).collect();
                let pool: Vec<usize> =
                    (0..full.len()).filter(|i| selection.among == Among::All || full[*i].adaptive).collect();
                let pool_net: Vec<&[f64]> = pool.iter().map(|i| net[*i]).collect();
                if pool.is_empty() {
                    return Vec::new();
                }
                let selector = Selector::new(&pool_net, &decisions);
                selection
                    .lookbacks
                    .iter()
                    .map(|lookback| {
                        let chosen = selector.select(0, *lookback as usize);
                        NetSelection {
                            lookback: *lookback,
                            annual_net: annualised(&chosen.series),
                            vs_best_fixed: best_fixed.map(|b| {
                                let difference: f64 = chosen.series.iter().zip(net[b]).map(|(y, z)| y - z).sum::<f64>();
                                (full[b].name.to_string(), YEAR * difference / chosen.series.len().max(1) as f64)
                            }),
                            switches: chosen.choices.len().saturating_sub(1),
                        }
                    })
                    .collect()
            });
            let overfitting = SettingOverfitting {
                setting: index,
                best: deflated.map(|d| full[d.best].name.to_string()),
                deflated,
                pbo: spent::timed(Part::Overfitting, || probability(&net, PBO_BLOCKS)),
                out_of_sample,
            };
            (bench_metrics.clone(), outcomes, curves, Some(overfitting))
        })
        .collect();

    // Schedule-major order: all settings of the first schedule, then the next.
    let mut outcomes: Vec<BacktestOutcome> = Vec::with_capacity(full.len() * settings.len());
    let mut benchmark_metrics = Vec::with_capacity(settings.len());
    let mut curves = Vec::new();
    let mut by_setting: Vec<std::vec::IntoIter<BacktestOutcome>> = Vec::new();
    let mut overfitting = Vec::with_capacity(settings.len());
    for (bench, setting_outcomes, setting_curves, setting_overfitting) in per_setting {
        overfitting.extend(setting_overfitting);
        benchmark_metrics.push(bench);
        by_setting.push(setting_outcomes.into_iter());
        curves.extend(setting_curves);
    }
    for _ in 0..full.len() {
        for setting in &mut by_setting {
            outcomes.extend(setting.next());
        }
    }
    LineBacktest {
        first_date: period_dates.first().copied(),
        dates: period_dates,
        benchmark: benchmark_metrics,
        outcomes,
        curves,
        skipped: skipped.iter().map(|s| s.name.to_string()).collect(),
        overfitting,
    }
}

#[cfg(test)]
mod tests;
