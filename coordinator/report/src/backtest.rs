//! The report's backtest section: every schedule and policy of every line under every
//! portfolio setting of the spec's `[backtest]` grid (`docs/ANALYTICS.md`, "Backtest"),
//! and its tables.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use wf_shared::Panel;
use wf_shared::age::{AgeMatrix, Line};
use wf_shared::backtest::lines::{LineBacktest, LineInput, Schedule, backtest_line};
use wf_shared::backtest::portfolio::Market;
use wf_shared::backtest::{BacktestGrid, PortfolioSetting};
use wf_shared::replay::{LineReplayer, Replay, ScheduleOutcome};

use super::cells::{field, number, truncate};

/// The backtest of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestReport {
    pub settings: Vec<PortfolioSetting>,
    /// Currency per training added to the frontier's cost.
    pub retrain_cost: f64,
    pub lines: Vec<LineBacktestReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineBacktestReport {
    pub window: u32,
    pub model: String,
    pub seed: u64,
    /// The schedule whose curves stand for the adaptive policies: the best fully covered
    /// one by ΔP@K, as in the rest of the report.
    pub best_adaptive: Option<String>,
    #[serde(flatten)]
    pub backtest: LineBacktest,
}

/// What the backtest of a sweep reads.
#[derive(Debug)]
pub struct BacktestInput<'a> {
    pub grid: &'a BacktestGrid,
    pub market: &'a Market,
    pub panel: &'a Panel,
    pub matrix: &'a AgeMatrix,
    /// Per line: its key, model name, and compared schedules (fixed cadences first).
    pub lines: Vec<(Line, String, &'a [ScheduleOutcome])>,
    pub samples: u32,
    pub seed: u64,
    pub selection: &'a wf_shared::spec::SelectionConfig,
    /// The DSR, PBO and selectors per setting (`ReportInput::statistics`).
    pub statistics: bool,
}

/// Backtests every schedule and policy of every line.
pub fn build(input: BacktestInput<'_>) -> BacktestReport {
    let settings = input.grid.settings();
    let dates = input.panel.calendar().dates();
    let universe = Market::universe(input.panel, 0, dates.len());
    let mut lines = Vec::new();
    for (line, model, outcomes) in &input.lines {
        let Some(replayer) = LineReplayer::new(input.matrix, *line) else { continue };
        let best = outcomes
            .iter()
            .filter(|s| s.adaptive && s.full_coverage())
            .max_by(|a, b| a.delta.mean.total_cmp(&b.delta.mean))
            .map(|s| s.name.clone());
        let replays: Vec<Replay> = outcomes.iter().map(|s| replayer.fixed(&s.retrain_days)).collect();
        let schedules: Vec<Schedule<'_>> = outcomes
            .iter()
            .zip(&replays)
            .map(|(s, replay)| Schedule {
                name: &s.name,
                adaptive: s.adaptive,
                replay,
                curves: !s.adaptive || best.as_deref() == Some(s.name.as_str()),
            })
            .collect();
        let backtest = backtest_line(LineInput {
            matrix: input.matrix,
            schedules: &schedules,
            grid: input.grid,
            settings: &settings,
            market: input.market,
            dates,
            universe: &universe,
            samples: input.samples,
            seed: input.seed,
            selection: input.selection,
            statistics: input.statistics,
        });
        lines.push(LineBacktestReport {
            window: line.window,
            model: model.clone(),
            seed: line.seed,
            best_adaptive: best,
            backtest,
        });
    }
    BacktestReport { settings, retrain_cost: input.grid.retrain_cost, lines }
}

/// A single-precision value at its shortest (empty when not finite).
fn single(value: f32) -> String {
    if value.is_finite() { value.to_string() } else { String::new() }
}

/// The backtest's part of a line's verdict: per setting, the best net schedule's deflated
/// Sharpe ratio (with the number of schedules tried and their effective number) and the
/// line's PBO.
pub fn overfitting_sentences(report: &BacktestReport, line: &LineBacktestReport) -> Vec<String> {
    line.backtest
        .overfitting
        .iter()
        .map(|o| {
            let setting = report.settings.get(o.setting).map_or_else(String::new, short);
            let deflated = match (&o.best, &o.deflated) {
                (Some(best), Some(d)) => format!(
                    "best net schedule {best} (Sharpe {:.2} a year), deflated Sharpe ratio {} over {} tried, {} over \
                     {:.1} effective",
                    d.moments.sharpe * 252f64.sqrt(),
                    d.dsr.map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
                    d.trials,
                    d.dsr_effective.map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
                    d.effective_trials
                ),
                _ => "no schedule with a Sharpe ratio".to_string(),
            };
            let pbo = o.pbo.as_ref().map_or_else(
                || "PBO not computed (too few days or schedules)".to_string(),
                |p| format!("PBO {:.2} ({} blocks)", p.pbo, p.blocks),
            );
            let chosen: Vec<String> =
                o.out_of_sample
                    .iter()
                    .map(|c| {
                        let against = c.vs_best_fixed.as_ref().map_or_else(String::new, |(name, d)| {
                            format!(", {:+.1}% a year against {name}", d * 100.0)
                        });
                        format!(
                            "chosen out of sample (lookback {}d): {:+.1}% a year net{against}, {} switches",
                            c.lookback,
                            c.annual_net * 100.0,
                            c.switches
                        )
                    })
                    .collect();
            let chosen = if chosen.is_empty() { String::new() } else { format!("; {}", chosen.join("; ")) };
            format!("backtest {setting}: {deflated}; {pbo}{chosen}")
        })
        .collect()
}

/// `backtest.csv`: one row per (line, schedule or benchmark, setting).
pub fn backtest_csv(report: &BacktestReport) -> String {
    let mut out = String::from(
        "window,model,seed,schedule,adaptive,k,rebalance,buffer,max_replace,min_trade,buy_bps,sell_bps,impact,\
         capital,days,retrains,annual_gross,annual_net,annual_excess,excess_low,excess_high,volatility,sharpe,\
         max_drawdown,turnover_per_year,costs,total_cost,switch_share,hit_rate,vs_best_fixed,difference,\
         difference_low,difference_high,on_frontier\n",
    );
    for line in &report.lines {
        let rows = line
            .backtest
            .benchmark
            .iter()
            .enumerate()
            .map(|(setting, metrics)| (None, setting, metrics))
            .chain(line.backtest.outcomes.iter().map(|o| (Some(o), o.setting, &o.metrics)));
        for (outcome, setting, m) in rows {
            let Some(s) = report.settings.get(setting) else { continue };
            let difference = outcome.and_then(|o| o.vs_best_fixed.as_ref());
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                line.window,
                field(&line.model),
                line.seed,
                field(outcome.map_or("benchmark", |o| o.schedule.as_str())),
                outcome.map_or(String::new(), |o| u8::from(o.adaptive).to_string()),
                s.k,
                s.rebalance,
                s.buffer,
                s.max_replace.map_or(String::new(), |n| n.to_string()),
                s.min_trade,
                s.buy_bps,
                s.sell_bps,
                s.impact,
                s.capital,
                m.days,
                outcome.map_or(String::new(), |o| o.retrains.to_string()),
                number(Some(m.annual_gross)),
                number(Some(m.annual_net)),
                number(Some(m.annual_excess)),
                number(m.excess_interval.map(|i| i.low)),
                number(m.excess_interval.map(|i| i.high)),
                number(Some(m.volatility)),
                number(m.sharpe),
                number(Some(m.max_drawdown)),
                number(Some(m.turnover_per_year)),
                number(Some(m.costs)),
                number(outcome.map(|o| o.total_cost)),
                number(m.switch_share),
                number(Some(m.hit_rate)),
                field(difference.map_or("", |d| d.against.as_str())),
                number(difference.map(|d| d.annual)),
                number(difference.and_then(|d| d.interval).map(|i| i.low)),
                number(difference.and_then(|d| d.interval).map(|i| i.high)),
                outcome.map_or(String::new(), |o| u8::from(o.on_frontier).to_string()),
            );
        }
    }
    out
}

/// `equity.csv`: one row per (line, curve, setting, date).
pub fn equity_csv(report: &BacktestReport) -> String {
    let mut out = String::from("window,model,seed,schedule,setting,date,nav_gross,nav_net\n");
    for line in &report.lines {
        for curve in &line.backtest.curves {
            let schedule = field(curve.schedule.as_deref().unwrap_or("benchmark"));
            let setting = report.settings.get(curve.setting).map_or_else(String::new, |s| field(&s.to_string()));
            for ((date, gross), net) in line.backtest.dates.iter().zip(&curve.gross).zip(&curve.net) {
                let _ = writeln!(
                    out,
                    "{},{},{},{schedule},{setting},{date},{},{}",
                    line.window,
                    field(&line.model),
                    line.seed,
                    single(*gross),
                    single(*net)
                );
            }
        }
    }
    out
}

/// The setting in a few characters: K, rebalance, buffer and `max_replace` (costs are
/// in the report).
pub fn short(setting: &PortfolioSetting) -> String {
    let mut text = format!("K{} {} b{}", setting.k, setting.rebalance, setting.buffer);
    if let Some(limit) = setting.max_replace {
        text += &format!(" ≤{limit}");
    }
    text
}

/// The lines `wf run` prints: per line and setting, the benchmark's net return, then the
/// best fixed cadence (by net return) and the report's best adaptive policy: net return,
/// excess over the benchmark with its interval, and costs over the period.
pub fn summary_table(report: &BacktestReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<10} {:<22} {:>7}  {:<12} {:>7} {:>7} {:<17} {:>6}  {:>7} {:>7} {:>6}",
        "window",
        "model",
        "portfolio",
        "bench",
        "best fixed",
        "net",
        "excess",
        "95% interval",
        "costs",
        "adapt.",
        "excess",
        "costs"
    );
    for line in &report.lines {
        for (index, setting) in report.settings.iter().enumerate() {
            let of_setting = || line.backtest.outcomes.iter().filter(move |o| o.setting == index);
            let best_fixed = of_setting()
                .filter(|o| !o.adaptive)
                .max_by(|a, b| a.metrics.annual_net.total_cmp(&b.metrics.annual_net));
            let best_adaptive = of_setting().find(|o| line.best_adaptive.as_deref() == Some(o.schedule.as_str()));
            let bench =
                line.backtest.benchmark.get(index).map_or_else(String::new, |b| format!("{:+.3}", b.annual_net));
            let fixed = best_fixed.map_or_else(String::new, |o| {
                let m = &o.metrics;
                let interval =
                    m.excess_interval.map_or_else(String::new, |i| format!("[{:+.3}, {:+.3}]", i.low, i.high));
                format!(
                    "{:<12} {:>+7.3} {:>+7.3} {:<17} {:>5.0}%",
                    truncate(&o.schedule, 12),
                    m.annual_net,
                    m.annual_excess,
                    interval,
                    m.costs * 100.0
                )
            });
            let adaptive = best_adaptive.map_or_else(String::new, |o| {
                let m = &o.metrics;
                format!("{:>+7.3} {:>+7.3} {:>5.0}%", m.annual_net, m.annual_excess, m.costs * 100.0)
            });
            let _ = writeln!(
                out,
                "{:>6}  {:<10} {:<22} {:>7}  {fixed}  {adaptive}",
                line.window,
                truncate(&line.model, 10),
                truncate(&short(setting), 22),
                bench
            );
        }
        if !line.backtest.skipped.is_empty() {
            let _ = writeln!(
                out,
                "{:>6}  {:<10} {} policies left out: on some day they had no live model",
                line.window,
                truncate(&line.model, 10),
                line.backtest.skipped.len()
            );
        }
    }
    out
}
