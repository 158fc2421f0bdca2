//! The report's plots: decay curves, the schedules' series in calendar time, the cost
//! and earnings frontier, then the backtest's and the diagnostics' own.

use plotters::prelude::*;
use wf_shared::age::Metric;
use wf_shared::decay::DecayCurve;
use wf_shared::replay::ScheduleOutcome;

use super::parts::{PALETTE, Plot, PlotError, chart, draw, joined, legend, metric_label, metric_slug, slug, span};
use super::{backtest, diagnostics};
use crate::{LineReport, ScheduleSeries, SweepReport};

/// Days in the rolling mean of the calendar-time plots.
pub const ROLLING_DAYS: usize = 21;

/// Decay curves of one window and metric: one line per model, its 95% band, the
/// baseline of a random ranking.
fn decay_plot(report: &SweepReport, window: u32, metric: Metric) -> Result<Option<Plot>, PlotError> {
    let curves: Vec<&DecayCurve> = report.decay.iter().filter(|c| c.window == window && c.metric == metric).collect();
    if curves.iter().all(|c| c.points.is_empty()) {
        return Ok(None);
    }
    let baseline = if metric == report.basis.precision() { report.base_rate.unwrap_or(0.0) } else { 0.0 };
    let ages = curves.iter().flat_map(|c| c.points.iter().map(|p| f64::from(p.age))).fold(1.0, f64::max);
    let (low, high) = span(
        curves
            .iter()
            .flat_map(|c| c.points.iter())
            .flat_map(|p| [p.mean, p.interval.map_or(p.mean, |i| i.low), p.interval.map_or(p.mean, |i| i.high)])
            .chain([baseline]),
    );
    let label = metric_label(metric);
    let title = format!("{label} vs model age, {window}-day training window");
    let name = format!("decay_{window}_{}", metric_slug(metric));
    let plot = draw(&name, &title, |root| {
        let x = (0.0, ages, "model age (trading days since the retrain date)");
        let mut chart = chart(root, &title, x, (low, high, label), None)?;
        let baseline_name =
            if metric == report.basis.precision() { "random ranking (base rate)" } else { "random ranking" };
        chart
            .draw_series(LineSeries::new([(0.0, baseline), (ages, baseline)], BLACK.mix(0.6).stroke_width(1)))?
            .label(baseline_name)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.6)));
        for (index, curve) in curves.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            let band: Vec<(f64, f64)> = curve
                .points
                .iter()
                .filter_map(|p| p.interval.map(|i| (f64::from(p.age), i.high)))
                .chain(curve.points.iter().rev().filter_map(|p| p.interval.map(|i| (f64::from(p.age), i.low))))
                .collect();
            if band.len() > 2 {
                chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.18).filled())))?;
            }
            let model = report.models.get(curve.model).cloned().unwrap_or_else(|| format!("model {}", curve.model));
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().filter(|p| p.mean.is_finite()).map(|p| (f64::from(p.age), p.mean)),
                    color.stroke_width(2),
                ))?
                .label(format!("{model} (mean, 95% band)"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        legend(&mut chart, None)?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// The trailing mean of the last `days` present values, where at least a quarter are.
fn rolling_mean(values: &[Option<f64>], days: usize) -> Vec<Option<f64>> {
    (0..values.len())
        .map(|end| {
            let window = &values[end.saturating_sub(days - 1)..=end];
            let present: Vec<f64> = window.iter().flatten().copied().collect();
            (present.len() * 4 >= days).then(|| present.iter().sum::<f64>() / present.len() as f64)
        })
        .collect()
}

/// A line's schedules over calendar time: the rolling mean ΔP@K, retrain dates of the
/// adaptive policy marked.
fn series_plot(line: &LineReport, series: &[&ScheduleSeries], metric: Metric) -> Result<Option<Plot>, PlotError> {
    let Some(first) = series.first() else { return Ok(None) };
    let dates = &first.dates;
    if dates.is_empty() {
        return Ok(None);
    }
    let values = |s: &ScheduleSeries| if metric == Metric::RankIc { s.rank_ic.clone() } else { s.delta.clone() };
    let rolled: Vec<Vec<Option<f64>>> = series.iter().map(|s| rolling_mean(&values(s), ROLLING_DAYS)).collect();
    let (low, high) = span(rolled.iter().flatten().flatten().copied().chain([0.0]));
    let label = metric_label(metric);
    let title = format!("{ROLLING_DAYS}-day rolling {label} over time: {}-day window, {}", line.window, line.model);
    let prefix = if metric == Metric::RankIc { "rank_ic" } else { "schedules" };
    let name = format!("{prefix}_{}_{}_{}", line.window, slug(&line.model), line.seed);
    let y_title = format!("{label} ({ROLLING_DAYS}-day mean)");
    let days = dates.len() as f64;
    let plot = draw(&name, &title, |root| {
        let date_label = |x: &f64| dates.get(*x as usize).map_or_else(String::new, |d| d.format("%Y-%m").to_string());
        let y = (low, high, y_title.as_str());
        let mut chart = chart(root, &title, (0.0, days, "date"), y, Some(&date_label))?;
        chart.draw_series(LineSeries::new([(0.0, 0.0), (days, 0.0)], BLACK.mix(0.6)))?;
        for (index, (schedule, values)) in series.iter().zip(&rolled).enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            let points: Vec<(f64, f64)> =
                values.iter().enumerate().filter_map(|(x, v)| v.map(|v| (x as f64, v))).collect();
            let mut label =
                if schedule.adaptive { "hindsight best policy".to_string() } else { schedule.schedule.clone() };
            if let Some(outcome) = line.schedules.iter().find(|s| s.name == schedule.schedule && !s.full_coverage()) {
                label = format!("{label} (covers {:.0}%)", outcome.coverage() * 100.0);
            }
            chart
                .draw_series(LineSeries::new(
                    if points.len() >= 2 { points } else { Vec::new() },
                    color.stroke_width(if schedule.adaptive { 2 } else { 1 }),
                ))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
            if schedule.adaptive {
                let marks: Vec<(f64, f64)> = schedule
                    .retrain_dates
                    .iter()
                    .filter_map(|d| dates.iter().position(|x| x == d))
                    .map(|x| (x as f64, low + (high - low) * 0.03))
                    .collect();
                chart.draw_series(marks.into_iter().map(|p| TriangleMarker::new(p, 4, color.filled())))?;
            }
        }
        legend(&mut chart, None)?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// Cost (retrains) against quality (mean ΔP@K) of every schedule of a line; the
/// non-dominated ones joined.
fn frontier_plot(line: &LineReport) -> Result<Option<Plot>, PlotError> {
    let points: Vec<&ScheduleOutcome> = line.schedules.iter().filter(|s| s.delta.mean.is_finite()).collect();
    if points.is_empty() {
        return Ok(None);
    }
    let most = points.iter().map(|s| s.retrains() as f64).fold(1.0, f64::max) * 1.05;
    let (low, high) = span(points.iter().map(|s| s.delta.mean));
    let title = format!("Cost and quality: {}-day window, {}", line.window, line.model);
    let name = format!("frontier_{}_{}_{}", line.window, slug(&line.model), line.seed);
    let plot = draw(&name, &title, |root| {
        let mut chart = chart(root, &title, (0.0, most, "retrains"), (low, high, "mean ΔP@K"), None)?;
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|s| s.adaptive && s.full_coverage())
                    .map(|s| Circle::new((s.retrains() as f64, s.delta.mean), 2, BLACK.mix(0.25).filled())),
            )?
            .label("adaptive policy")
            .legend(|(x, y)| Circle::new((x + 9, y), 3, BLACK.mix(0.25).filled()));
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|s| !s.adaptive && s.full_coverage())
                    .map(|s| Circle::new((s.retrains() as f64, s.delta.mean), 5, PALETTE[0].filled())),
            )?
            .label("fixed cadence")
            .legend(|(x, y)| Circle::new((x + 9, y), 5, PALETTE[0].filled()));
        if points.iter().any(|s| !s.full_coverage()) {
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|s| !s.full_coverage())
                        .map(|s| Cross::new((s.retrains() as f64, s.delta.mean), 4, PALETTE[1].stroke_width(1))),
                )?
                .label("partial coverage (not compared)")
                .legend(|(x, y)| Cross::new((x + 9, y), 4, PALETTE[1].stroke_width(1)));
        }
        let mut frontier: Vec<(f64, f64)> =
            points.iter().filter(|s| s.on_frontier).map(|s| (s.retrains() as f64, s.delta.mean)).collect();
        frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(frontier.iter().map(|p| Circle::new(*p, 7, PALETTE[3].stroke_width(2))))?
            .label("non-dominated (fewer retrains or higher ΔP@K)")
            .legend(|(x, y)| Circle::new((x + 9, y), 6, PALETTE[3].stroke_width(2)));
        joined(&mut chart, frontier)?;
        legend(&mut chart, None)?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// Every plot of the report, in page order.
pub fn plots(report: &SweepReport) -> Result<Vec<Plot>, PlotError> {
    let mut plots = Vec::new();
    let mut windows: Vec<u32> = report.decay.iter().map(|c| c.window).collect();
    windows.sort_unstable();
    windows.dedup();
    for window in windows {
        for metric in [report.basis.delta(), report.basis.precision(), Metric::RankIc] {
            plots.extend(decay_plot(report, window, metric)?);
        }
    }
    for line in &report.lines {
        let series: Vec<&ScheduleSeries> = report
            .series
            .iter()
            .filter(|s| s.window == line.window && s.model == line.model && s.seed == line.seed)
            .collect();
        plots.extend(series_plot(line, &series, report.basis.delta())?);
        plots.extend(series_plot(line, &series, Metric::RankIc)?);
        plots.extend(frontier_plot(line)?);
    }
    if let Some(report) = &report.backtest {
        plots.extend(backtest::plots(report)?);
    }
    if let Some(report) = &report.diagnostics {
        plots.extend(diagnostics::plots(report)?);
    }
    Ok(plots)
}
