//! The backtest section of the HTML report: per line, net equity curves against the
//! benchmark, the cost drag of every setting, the frontier of net excess against total
//! cost, and the table of every setting.

use std::fmt::Write as _;

use plotters::prelude::*;
use wf_shared::backtest::lines::BacktestOutcome;
use wf_shared::replay::frontier;

use super::parts::{PALETTE, Plot, PlotError, cell, chart, draw, escape, joined, legend, slug, span};
use crate::backtest::{BacktestReport, LineBacktestReport, short};

/// The file stem of a line's plots.
fn stem(line: &LineBacktestReport) -> String {
    format!("{}_{}_{}", line.window, slug(&line.model), line.seed)
}

/// The schedules a line's curves and tables show: the fixed cadences and the best policy.
fn shown(line: &LineBacktestReport, outcome: &BacktestOutcome) -> bool {
    !outcome.adaptive || line.best_adaptive.as_deref() == Some(outcome.schedule.as_str())
}

fn label(outcome: &BacktestOutcome) -> String {
    if outcome.adaptive { format!("hindsight best: {}", outcome.schedule) } else { outcome.schedule.clone() }
}

/// Net value over the period for the first setting: the fixed cadences, the best
/// policy, and the benchmark (dashed).
fn equity_plot(report: &BacktestReport, line: &LineBacktestReport) -> Result<Option<Plot>, PlotError> {
    let curves: Vec<_> = line.backtest.curves.iter().filter(|c| c.setting == 0).collect();
    let dates = &line.backtest.dates;
    if curves.is_empty() || dates.is_empty() {
        return Ok(None);
    }
    let setting = report.settings.first().map(short).unwrap_or_default();
    let title = format!("Net value, {setting}: {}-day window, {}", line.window, line.model);
    let name = format!("equity_{}", stem(line));
    let (low, high) = span(curves.iter().flat_map(|c| c.net.iter().map(|v| f64::from(*v))).chain([1.0]));
    let days = dates.len() as f64;
    let y_title = "net value (1 at the start)";
    let plot = draw(&name, &title, |root| {
        let date_label = |x: &f64| dates.get(*x as usize).map_or_else(String::new, |d| d.format("%Y-%m").to_string());
        let mut chart = chart(root, &title, (0.0, days, "date"), (low, high, y_title), Some(&date_label))?;
        for (index, curve) in curves.iter().enumerate() {
            let points: Vec<(f64, f64)> = curve
                .net
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(x, v)| (x as f64, f64::from(*v)))
                .collect();
            match &curve.schedule {
                None => {
                    chart
                        .draw_series(DashedLineSeries::new(points, 6, 4, BLACK.stroke_width(2)))?
                        .label("equal-weight benchmark")
                        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.stroke_width(2)));
                }
                Some(schedule) => {
                    let color = PALETTE[(index - 1) % PALETTE.len()];
                    let adaptive = line.best_adaptive.as_deref() == Some(schedule.as_str());
                    let text = if adaptive { format!("hindsight best: {schedule}") } else { schedule.clone() };
                    chart
                        .draw_series(LineSeries::new(points, color.stroke_width(if adaptive { 2 } else { 1 })))?
                        .label(text)
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
                }
            }
        }
        legend(&mut chart, Some(SeriesLabelPosition::UpperLeft))?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// Cost drag (annual gross minus annual net return) of each shown schedule under each
/// setting.
fn cost_drag_plot(report: &BacktestReport, line: &LineBacktestReport) -> Result<Option<Plot>, PlotError> {
    let outcomes: Vec<&BacktestOutcome> = line.backtest.outcomes.iter().filter(|o| shown(line, o)).collect();
    if outcomes.is_empty() {
        return Ok(None);
    }
    let drag = |o: &BacktestOutcome| o.metrics.annual_gross - o.metrics.annual_net;
    let (_, high) = span(outcomes.iter().map(|o| drag(o)).chain([0.0]));
    let settings = report.settings.len() as f64;
    let title = format!("Cost drag by portfolio setting: {}-day window, {}", line.window, line.model);
    let name = format!("cost_drag_{}", stem(line));
    let mut names: Vec<&str> = Vec::new();
    for o in &outcomes {
        if !names.contains(&o.schedule.as_str()) {
            names.push(&o.schedule);
        }
    }
    let plot = draw(&name, &title, |root| {
        let setting_label = |x: &f64| {
            let index = x.round();
            if (x - index).abs() > 0.01 || index < 0.0 {
                return String::new();
            }
            report.settings.get(index as usize).map_or_else(String::new, short)
        };
        let mut chart = chart(
            root,
            &title,
            (-0.5, settings - 0.5, "portfolio setting"),
            (0.0, high, "annual gross − net return"),
            Some(&setting_label),
        )?;
        for (index, schedule) in names.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            let offset = (index as f64 - names.len() as f64 / 2.0) * 0.5 / names.len().max(1) as f64;
            let points: Vec<(f64, f64)> = outcomes
                .iter()
                .filter(|o| o.schedule == *schedule)
                .map(|o| (o.setting as f64 + offset, drag(o)))
                .collect();
            let text = outcomes.iter().find(|o| o.schedule == *schedule).map(|o| label(o)).unwrap_or_default();
            chart
                .draw_series(points.iter().map(|&(x, y)| {
                    Rectangle::new(
                        [(x - 0.2 / names.len() as f64, 0.0), (x + 0.2 / names.len() as f64, y)],
                        color.filled(),
                    )
                }))?
                .label(text)
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], color.filled()));
        }
        legend(&mut chart, Some(SeriesLabelPosition::UpperRight))?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// Net excess against total cost (trading costs plus retrains at `retrain_cost`) of
/// every schedule under every setting of a line; the non-dominated ones joined.
fn frontier_plot(report: &BacktestReport, line: &LineBacktestReport) -> Result<Option<Plot>, PlotError> {
    let outcomes = &line.backtest.outcomes;
    if outcomes.is_empty() {
        return Ok(None);
    }
    let points: Vec<(f64, f64)> = outcomes.iter().map(|o| (o.total_cost, o.metrics.annual_excess)).collect();
    let on_frontier = frontier(&points);
    let most = points.iter().map(|p| p.0).fold(0.0, f64::max) * 1.05 + 1e-6;
    let (low, high) = span(points.iter().map(|p| p.1));
    let title = format!("Net excess against total cost: {}-day window, {}", line.window, line.model);
    let name = format!("backtest_frontier_{}", stem(line));
    let x_title = if report.retrain_cost > 0.0 {
        format!("trading costs + retrains × {} (share of capital)", report.retrain_cost)
    } else {
        "trading costs over the period (share of capital)".to_string()
    };
    let plot = draw(&name, &title, |root| {
        let mut chart = chart(root, &title, (0.0, most, x_title.as_str()), (low, high, "annual net excess"), None)?;
        chart
            .draw_series(
                outcomes
                    .iter()
                    .zip(&points)
                    .filter(|(o, _)| o.adaptive)
                    .map(|(_, p)| Circle::new(*p, 2, BLACK.mix(0.25).filled())),
            )?
            .label("adaptive policy × setting")
            .legend(|(x, y)| Circle::new((x + 9, y), 3, BLACK.mix(0.25).filled()));
        chart
            .draw_series(
                outcomes
                    .iter()
                    .zip(&points)
                    .filter(|(o, _)| !o.adaptive)
                    .map(|(_, p)| Circle::new(*p, 4, PALETTE[0].filled())),
            )?
            .label("fixed cadence × setting")
            .legend(|(x, y)| Circle::new((x + 9, y), 4, PALETTE[0].filled()));
        let mut best: Vec<(f64, f64)> =
            points.iter().zip(&on_frontier).filter(|(_, on)| **on).map(|(p, _)| *p).collect();
        best.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(best.iter().map(|p| Circle::new(*p, 7, PALETTE[3].stroke_width(2))))?
            .label("non-dominated (lower cost or higher excess)")
            .legend(|(x, y)| Circle::new((x + 9, y), 6, PALETTE[3].stroke_width(2)));
        joined(&mut chart, best)?;
        chart.draw_series(LineSeries::new([(0.0, 0.0), (most, 0.0)], BLACK.mix(0.6)))?;
        legend(&mut chart, None)?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// The backtest's plots, in page order.
pub fn plots(report: &BacktestReport) -> Result<Vec<Plot>, PlotError> {
    let mut plots = Vec::new();
    for line in &report.lines {
        plots.extend(equity_plot(report, line)?);
        plots.extend(cost_drag_plot(report, line)?);
        plots.extend(frontier_plot(report, line)?);
    }
    Ok(plots)
}

fn interval(low: f64, high: f64) -> String {
    format!("[{low:+.3}, {high:+.3}]")
}

/// One row of a setting's table.
fn row(
    out: &mut String,
    name: &str,
    kind: &str,
    outcome: Option<&BacktestOutcome>,
    m: &wf_shared::backtest::metrics::BacktestMetrics,
) {
    let _ = write!(out, "<tr class=\"{kind}\" data-schedule=\"{}\"><td>{}</td>", escape(name), escape(name));
    out.push_str(&cell("annual_net", Some(m.annual_net), |v| format!("{:+.1}%", v * 100.0)));
    out.push_str(&cell("annual_gross", Some(m.annual_gross), |v| format!("{:+.1}%", v * 100.0)));
    out.push_str(&cell("annual_excess", outcome.map(|_| m.annual_excess), |v| format!("{:+.1}%", v * 100.0)));
    match (outcome, m.excess_interval) {
        (Some(_), Some(i)) => {
            let _ = write!(
                out,
                "<td class=\"num\" data-field=\"excess_low\" data-v=\"{}\" data-high=\"{}\">{}</td>",
                i.low,
                i.high,
                interval(i.low, i.high)
            );
        }
        _ => out.push_str("<td class=\"num\">–</td>"),
    }
    out.push_str(&cell("volatility", Some(m.volatility), |v| format!("{:.1}%", v * 100.0)));
    out.push_str(&cell("sharpe", m.sharpe, |v| format!("{v:.2}")));
    out.push_str(&cell("max_drawdown", Some(m.max_drawdown), |v| format!("{:.1}%", v * 100.0)));
    out.push_str(&cell("turnover", Some(m.turnover_per_year), |v| format!("{:.1}×", v)));
    out.push_str(&cell("costs", Some(m.costs), |v| format!("{:.1}%", v * 100.0)));
    out.push_str(&cell("switch_share", m.switch_share.filter(|_| outcome.is_some()), |v| format!("{:.0}%", v * 100.0)));
    out.push_str(&cell("hit_rate", outcome.map(|_| m.hit_rate), |v| format!("{:.0}%", v * 100.0)));
    out.push_str(&cell("retrains", outcome.map(|o| o.retrains as f64), |v| format!("{v:.0}")));
    match outcome.and_then(|o| o.vs_best_fixed.as_ref()) {
        Some(d) => {
            out.push_str(&cell("difference", Some(d.annual), |v| {
                format!("{:+.1}% vs {}", v * 100.0, escape(&d.against))
            }));
            match d.interval {
                Some(i) => {
                    let _ = write!(out, "<td class=\"num\">{}</td>", interval(i.low, i.high));
                }
                None => out.push_str("<td class=\"num\">–</td>"),
            }
        }
        None if outcome.is_some() => out.push_str("<td>best fixed</td><td class=\"num\">–</td>"),
        None => out.push_str("<td></td><td></td>"),
    }
    let _ = writeln!(out, "<td>{}</td></tr>", if outcome.is_some_and(|o| o.on_frontier) { "●" } else { "" });
}

fn line_tables(out: &mut String, report: &BacktestReport, line: &LineBacktestReport) {
    for (index, setting) in report.settings.iter().enumerate() {
        let outcomes: Vec<&BacktestOutcome> =
            line.backtest.outcomes.iter().filter(|o| o.setting == index && shown(line, o)).collect();
        let best = outcomes
            .iter()
            .filter(|o| !o.adaptive)
            .max_by(|a, b| a.metrics.annual_net.total_cmp(&b.metrics.annual_net));
        let headline = best.map_or_else(String::new, |o| {
            format!(
                ": best fixed {} nets {:+.1}% a year ({:+.1}% over the benchmark), costs {:.1}% of capital",
                escape(&o.schedule),
                o.metrics.annual_net * 100.0,
                o.metrics.annual_excess * 100.0,
                o.metrics.costs * 100.0
            )
        });
        let _ = writeln!(
            out,
            "<details{}><summary>{}{headline}</summary>\
             <table class=\"backtest\" data-line=\"{}|{}|{}\" data-setting=\"{index}\"><thead><tr><th>schedule</th>\
             <th>net / year</th><th>gross / year</th><th>excess / year</th><th>95% interval</th><th>volatility</th>\
             <th>Sharpe</th><th>max drawdown</th><th>turnover / year</th><th>costs</th><th>switch share</th>\
             <th>hit rate</th><th>retrains</th><th>vs best fixed (net / year)</th><th>95% interval</th><th>frontier</th>\
             </tr></thead><tbody>",
            if index == 0 { " open" } else { "" },
            escape(&setting.to_string()),
            line.window,
            escape(&line.model),
            line.seed
        );
        if let Some(bench) = line.backtest.benchmark.get(index) {
            row(out, "equal-weight benchmark", "benchmark", None, bench);
        }
        for o in outcomes {
            row(out, &label(o), if o.adaptive { "adaptive" } else { "fixed" }, Some(o), &o.metrics);
        }
        out.push_str("</tbody></table></details>\n");
    }
}

/// The section: what the backtest is, then per line its plots and tables.
pub fn section(out: &mut String, report: &BacktestReport, plots: &[Plot]) {
    out.push_str("<h2 id=\"backtest\">Backtest: what each schedule earns after trading costs</h2>\n");
    let _ = writeln!(
        out,
        "<p>Each schedule's live model ranks the stocks every day; a top-K portfolio is formed at the close and \
         earns the next day's close-to-close returns, rebalanced on the setting's days, with costs in basis points \
         plus square-root impact. The benchmark holds every stock at equal weight with the same costs. Returns are \
         annualised; excess is over the benchmark, with a 21-day block-bootstrap 95% interval; costs are the sum \
         over the period as a share of capital; switch share is the part of turnover traded when the live model \
         had changed. {} settings; every policy is in backtest.csv, every curve in equity.csv.</p>",
        report.settings.len()
    );
    for line in &report.lines {
        let _ = writeln!(out, "<h3>{}-day window, {} (seed {})</h3>", line.window, escape(&line.model), line.seed);
        let stem = stem(line);
        for prefix in ["equity", "cost_drag", "backtest_frontier"] {
            if let Some(p) = plots.iter().find(|p| p.name == format!("{prefix}_{stem}")) {
                let _ = writeln!(out, "<figure id=\"{}\">{}</figure>", p.name, p.svg);
            }
        }
        line_tables(out, report, line);
        if !line.backtest.skipped.is_empty() {
            let _ = writeln!(
                out,
                "<p class=\"note\" data-field=\"skipped\" data-v=\"{}\">{} schedules are left out: on some day of \
                 the period their model had aged past max_age, so no model ranked the stocks.</p>",
                line.backtest.skipped.len(),
                line.backtest.skipped.len()
            );
        }
    }
}
