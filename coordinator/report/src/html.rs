//! The report as one self-contained HTML page: no scripts, no network fetches, every plot
//! an inline SVG drawn with plotters (also returned on its own by [`plots`]).
//!
//! Every number in a table carries its exact value in a `data-v` attribute, next to the
//! rounded text, so the page can be checked against the JSON document.

use std::fmt::Write as _;

use wf_shared::replay::ScheduleOutcome;

use super::{LineReport, SweepReport};

mod backtest;
mod diagnostics;
mod parts;
mod plots;

pub use parts::{Plot, PlotError, escape, slug};
use parts::{cell, metric_label, metric_slug};
pub use plots::{ROLLING_DAYS, plots};

/// Adaptive policies listed per line besides the fixed cadences.
const TABLE_POLICIES: usize = 8;
fn interval_text(low: f64, high: f64) -> String {
    format!("[{low:+.4}, {high:+.4}]")
}

/// The schedules a line's table shows: the fixed cadences, then the adaptive policies
/// with intervals (frontier and best), best first, at most [`TABLE_POLICIES`].
fn table_rows(line: &LineReport) -> Vec<&ScheduleOutcome> {
    let mut adaptive: Vec<&ScheduleOutcome> =
        line.schedules.iter().filter(|s| s.adaptive && s.delta_interval.is_some()).collect();
    adaptive.sort_by(|a, b| b.full_coverage().cmp(&a.full_coverage()).then(b.delta.mean.total_cmp(&a.delta.mean)));
    line.schedules.iter().filter(|s| !s.adaptive).chain(adaptive.into_iter().take(TABLE_POLICIES)).collect()
}

fn comparison_table(out: &mut String, line: &LineReport) {
    let _ = writeln!(
        out,
        "<table class=\"schedules\" data-line=\"{}|{}|{}\"><thead><tr><th>schedule</th><th>mean ΔP@K</th>\
         <th>95% interval</th><th>RankIC</th><th>ICIR</th><th>hit rate</th><th>scored days</th><th>coverage</th><th>retrains</th>\
         <th>training s</th><th>vs best fixed</th><th>95% interval</th><th>excludes 0</th><th>frontier</th></tr></thead><tbody>",
        line.window,
        escape(&line.model),
        line.seed
    );
    for s in table_rows(line) {
        let kind = if s.adaptive { "adaptive" } else { "fixed" };
        let partial = if s.full_coverage() {
            ""
        } else {
            " data-partial=\"1\" title=\"its model aged past max_age on some days: not ranked, not on the frontier\""
        };
        let mark = if s.full_coverage() { "" } else { " ◐" };
        let _ = write!(
            out,
            "<tr class=\"{kind}\" data-schedule=\"{}\"{partial}><td>{}{mark}</td>",
            escape(&s.name),
            escape(&s.name)
        );
        out.push_str(&cell("delta_mean", Some(s.delta.mean), |v| format!("{v:+.4}")));
        match s.delta_interval {
            Some(i) => {
                let _ = write!(
                    out,
                    "<td class=\"num\" data-field=\"delta_low\" data-v=\"{}\" data-high=\"{}\">{}</td>",
                    i.low,
                    i.high,
                    interval_text(i.low, i.high)
                );
            }
            None => out.push_str("<td class=\"num\">–</td>"),
        }
        out.push_str(&cell("rank_ic", Some(s.rank_ic.mean), |v| format!("{v:.4}")));
        out.push_str(&cell("icir", Some(s.rank_ic.ratio()), |v| format!("{v:.2}")));
        out.push_str(&cell("hit_rate", Some(s.delta.hit_rate), |v| format!("{:.0}%", v * 100.0)));
        out.push_str(&cell("days", Some(s.delta.n as f64), |v| format!("{v:.0}")));
        out.push_str(&cell("coverage", Some(s.coverage()), |v| format!("{:.0}%", v * 100.0)));
        out.push_str(&cell("retrains", Some(s.retrains() as f64), |v| format!("{v:.0}")));
        out.push_str(&cell("train_seconds", Some(s.train_seconds), |v| format!("{v:.1}")));
        match &s.difference_vs_best_fixed {
            Some(d) => {
                out.push_str(&cell("difference", Some(d.mean), |v| {
                    format!("{v:+.4} vs {} ({} common days)", escape(&d.against), d.common_days)
                }));
                match d.interval {
                    Some(i) => {
                        let _ = write!(
                            out,
                            "<td class=\"num\">{}</td><td>{}</td>",
                            interval_text(i.low, i.high),
                            if i.excludes_zero() { "yes" } else { "no" }
                        );
                    }
                    None => out.push_str("<td class=\"num\">–</td><td>–</td>"),
                }
            }
            None => out.push_str("<td>best fixed</td><td class=\"num\">–</td><td>–</td>"),
        }
        let _ = writeln!(out, "<td>{}</td></tr>", if s.on_frontier { "●" } else { "" });
    }
    let hidden = line.schedules.len() - table_rows(line).len();
    out.push_str("</tbody></table>\n");
    if table_rows(line).iter().any(|s| !s.full_coverage()) {
        out.push_str(
            "<p class=\"note\">◐ partial coverage: the schedule's model aged past max_age on some days, which it \
             leaves unscored. It is not ranked, not on the frontier, and its difference against the best fixed \
             cadence is taken on the days both cover.</p>\n",
        );
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{hidden} more adaptive policies are in report.json and schedules.csv.</p>"
        );
    }
}

fn decay_table(out: &mut String, report: &SweepReport) {
    out.push_str(
        "<table class=\"decay\"><thead><tr><th>window</th><th>model</th><th>metric</th><th>at age 0</th>\
         <th>slope per 21 days</th><th>half-life (days)</th><th>models</th></tr></thead><tbody>\n",
    );
    for curve in &report.decay {
        let model = report.models.get(curve.model).cloned().unwrap_or_else(|| format!("model {}", curve.model));
        let first = curve.points.first();
        let _ = write!(
            out,
            "<tr data-decay=\"{}|{}|{}\"><td>{}</td><td>{}</td><td>{}</td>",
            curve.window,
            escape(&model),
            metric_slug(curve.metric),
            curve.window,
            escape(&model),
            metric_label(curve.metric)
        );
        out.push_str(&cell("age0", first.map(|p| p.mean), |v| format!("{v:+.4}")));
        out.push_str(&cell("slope", Some(curve.slope_per_21d), |v| format!("{v:+.5}")));
        out.push_str(&cell("half_life", curve.half_life_days, |v| format!("{v:.0}")));
        out.push_str(&cell("models", first.map(|p| p.models as f64), |v| format!("{v:.0}")));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn baseline_section(out: &mut String, report: &SweepReport) {
    out.push_str("<h2 id=\"baseline\">Sanity baseline</h2>\n");
    let Some(baseline) = &report.baseline_model else {
        out.push_str(
            "<p class=\"warn\">This sweep has no <code>linear</code> model, so nothing shows whether the models \
             beat a simple baseline. Add one (<code>kind = \"linear\"</code>).</p>\n",
        );
        return;
    };
    let _ = writeln!(
        out,
        "<p>Best fixed cadence of each model against <b>{}</b> (the linear baseline) on the same window; a model \
         below it is marked.</p><table class=\"baseline\"><thead><tr><th>window</th><th>model</th><th>best fixed cadence</th>\
         <th>mean ΔP@K</th><th>baseline ΔP@K</th><th>verdict</th></tr></thead><tbody>",
        escape(baseline)
    );
    let best = |line: &LineReport| {
        line.schedules.iter().filter(|s| !s.adaptive).max_by(|a, b| a.delta.mean.total_cmp(&b.delta.mean)).cloned()
    };
    for line in &report.lines {
        let Some(mine) = best(line) else { continue };
        let reference = report
            .lines
            .iter()
            .find(|l| l.window == line.window && l.seed == line.seed && &l.model == baseline)
            .and_then(best);
        let verdict = match &reference {
            _ if &line.model == baseline => "baseline",
            Some(r) if mine.delta.mean < r.delta.mean => "<b class=\"bad\">loses to the baseline</b>",
            Some(_) => "beats the baseline",
            None => "no baseline result",
        };
        let _ =
            write!(out, "<tr><td>{}</td><td>{}</td><td>{}</td>", line.window, escape(&line.model), escape(&mine.name));
        out.push_str(&cell("best_fixed", Some(mine.delta.mean), |v| format!("{v:+.4}")));
        out.push_str(&cell("baseline", reference.map(|r| r.delta.mean), |v| format!("{v:+.4}")));
        let _ = writeln!(out, "<td>{verdict}</td></tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn data_section(out: &mut String, report: &SweepReport) {
    out.push_str("<h2 id=\"data\">Data and split audit</h2>\n");
    if let Some(audit) = &report.audit {
        if audit.leaking_jobs == 0 {
            let _ = writeln!(
                out,
                "<p class=\"ok\" data-field=\"leaking_jobs\" data-v=\"0\">Split audit: {} jobs re-derived from their \
                 dates; <b>0 leaking jobs</b> (every training label is known before its retrain date).</p>",
                audit.jobs
            );
        } else {
            let _ = writeln!(
                out,
                "<p class=\"warn\" data-field=\"leaking_jobs\" data-v=\"{}\">Split audit: <b>{} of {} jobs leak</b>.</p><ul>",
                audit.leaking_jobs, audit.leaking_jobs, audit.jobs
            );
            for finding in &audit.findings {
                let _ = writeln!(out, "<li>{}</li>", escape(finding));
            }
            out.push_str("</ul>\n");
        }
    }
    let Some(dataset) = &report.dataset else { return };
    let _ = writeln!(
        out,
        "<p>Panel <code>{}</code> (content hash <code>{}</code>): {} rows, {} stocks, {} trading days from {} to {}, \
         {:.0} stocks per day on average.</p>",
        escape(&dataset.uri),
        &dataset.content_hash.get(..16).unwrap_or(&dataset.content_hash),
        dataset.rows,
        dataset.stocks,
        dataset.trading_days,
        dataset.first_date.map_or_else(|| "–".into(), |d| d.to_string()),
        dataset.last_date.map_or_else(|| "–".into(), |d| d.to_string()),
        dataset.mean_stocks_per_day
    );
    if dataset.lookahead_suspects.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"ok\" data-field=\"lookahead_suspects\" data-v=\"0\">Look-ahead check: no feature has a mean \
             same-day RankIC of {} or more with a target.</p>",
            wf_shared::label_guard::LOOKAHEAD_RANK_IC
        );
    } else {
        let _ = writeln!(
            out,
            "<p class=\"warn\" data-field=\"lookahead_suspects\" data-v=\"{}\"><b>Look-ahead suspects</b>:</p><ul>",
            dataset.lookahead_suspects.len()
        );
        for suspect in &dataset.lookahead_suspects {
            let _ = writeln!(out, "<li>{}</li>", escape(&suspect.to_string()));
        }
        out.push_str("</ul>\n");
    }
    let mut worst: Vec<_> = dataset.features.iter().collect();
    worst.sort_by(|a, b| b.null_share.total_cmp(&a.null_share));
    out.push_str("<table class=\"quality\"><thead><tr><th>feature</th><th>null share</th></tr></thead><tbody>\n");
    for feature in worst.iter().take(8) {
        let _ = write!(out, "<tr><td>{}</td>", escape(&feature.name));
        out.push_str(&cell("null_share", Some(feature.null_share), |v| format!("{:.2}%", v * 100.0)));
        out.push_str("</tr>\n");
    }
    let _ = writeln!(
        out,
        "</tbody></table><p class=\"note\">The {} features with the most nulls, of {}.</p>",
        worst.len().min(8),
        worst.len()
    );
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;\
color:#222;padding:0 1rem}h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}\
table{border-collapse:collapse;margin:.8rem 0;font-size:.86rem}th,td{border:1px solid #ddd;padding:.25rem .5rem}\
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.adaptive td:first-child{color:#555}\
.warn{color:#a40000}.bad{color:#a40000}.ok{color:#1a6b1a}.note{color:#666;font-size:.85rem}\
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}.meta{color:#555}";

/// The whole page.
pub fn render(report: &SweepReport) -> Result<String, PlotError> {
    let plots = plots(report)?;
    let plot = |name: &str| plots.iter().find(|p| p.name == name);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>walkforward report: {}</title><style>{STYLE}</style></head><body>",
        escape(&report.name)
    );
    let k = match report.k {
        wf_shared::spec::TopK::Count(n) => format!("top {n}"),
        wf_shared::spec::TopK::Fraction(f) => format!("top {:.0}%", f * 100.0),
    };
    let _ = writeln!(
        out,
        "<h1>{}</h1><p class=\"meta\">sweep <code>{}</code> · horizon {} trading days · P@K at {k} · \
         <span data-field=\"results\" data-v=\"{}\">{}</span> of {} trainings with results</p>",
        escape(&report.name),
        escape(&report.sweep_id),
        report.horizon,
        report.results,
        report.results,
        report.jobs
    );
    if !report.missing.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"warn\" data-field=\"missing\" data-v=\"{}\"><b>{} of {} jobs have no result</b> (failed, \
             dead-lettered, cancelled or still running); every figure below rests on the committed results only. \
             Their keys are in report.json.</p>",
            report.missing.len(),
            report.missing.len(),
            report.jobs
        );
    }
    if !report.requeued.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"warn\" data-field=\"requeued\" data-v=\"{}\"><b>{} of them had a damaged or lost result</b> \
             and are being trained again.</p>",
            report.requeued.len(),
            report.requeued.len()
        );
    }
    super::verdict::section(&mut out, report);
    let basis = match report.basis {
        wf_shared::metric::Basis::Median => "a hit being a return above the day's median (market-neutral)".to_string(),
        wf_shared::metric::Basis::Zero => format!(
            "a hit being a return above zero (not market-neutral; {})",
            wf_shared::verdict::ZERO_BASIS_CALIBRATION
        ),
    };
    let _ = writeln!(
        out,
        "<p>ΔP@K = precision at K minus the day's base rate (the P@K of a random ranking), so 0 is no skill, \
         {}. Intervals are 95% moving-block bootstrap intervals.</p>\n<h2 id=\"decay\">Decay curves</h2>",
        escape(&basis)
    );
    for curve_plot in plots.iter().filter(|p| p.name.starts_with("decay_")) {
        let _ = writeln!(out, "<figure id=\"{}\">{}</figure>", curve_plot.name, curve_plot.svg);
    }
    decay_table(&mut out, report);
    out.push_str("<h2 id=\"schedules\">Schedules: fixed cadences and adaptive retraining</h2>\n");
    for line in &report.lines {
        let _ = writeln!(out, "<h3>{}-day window, {} (seed {})</h3>", line.window, escape(&line.model), line.seed);
        let stem = format!("{}_{}_{}", line.window, slug(&line.model), line.seed);
        for prefix in ["schedules", "rank_ic"] {
            if let Some(p) = plot(&format!("{prefix}_{stem}")) {
                let _ = writeln!(out, "<figure id=\"{}\">{}</figure>", p.name, p.svg);
            }
        }
        comparison_table(&mut out, line);
        if let Some(p) = plot(&format!("frontier_{stem}")) {
            let _ = writeln!(out, "<figure id=\"{}\">{}</figure>", p.name, p.svg);
        }
    }
    if let Some(backtest) = &report.backtest {
        backtest::section(&mut out, backtest, &plots);
    }
    if let Some(report) = &report.diagnostics {
        diagnostics::section(&mut out, report, &plots);
    }
    baseline_section(&mut out, report);
    data_section(&mut out, report);
    out.push_str(
        "<p class=\"note\">Generated by walkforward. Files next to this page: report.json (everything), \
         verdict.csv, schedules.csv, decay.csv, series.csv, exposures.csv, horizons.csv, importance.csv, backtest.csv and equity.csv (with a \
         backtest), and every plot as SVG.</p></body></html>\n",
    );
    Ok(out)
}
