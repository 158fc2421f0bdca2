//! The "why models rank as they do" section: style exposures (a table per window, with
//! warnings; by age and by retrain date for trained models) and every trained horizon's
//! metrics (a table per model; ΔP@K and RankIC heatmaps of horizon × age); the permutation
//! importance of the top features (a table and a heatmap over retrain dates per model).

use std::fmt::Write as _;

use plotters::prelude::*;

use super::parts::{PALETTE, Plot, PlotError, cell, chart, draw, escape, legend, slug, span};
use crate::diagnostics::{Diagnostics, FactorExposure, HorizonRow, ModelExposures, ModelHorizons, ModelImportance};

/// The most columns of a heatmap: ages are bucketed above it.
const HEATMAP_COLUMNS: usize = 64;

fn stem(window: u32, model: &str) -> String {
    format!("{window}_{}", slug(model))
}

/// One line per factor of `model`, its values by index as `values` picks them (by age or
/// by run), on an x axis of `x` (its length and title) labelled by `x_label`.
fn exposure_plot(
    model: &ModelExposures,
    (prefix, what): (&str, &str),
    values: fn(&FactorExposure) -> &Vec<Option<f64>>,
    x: (usize, &str),
    y_title: &str,
    x_label: Option<&dyn Fn(&f64) -> String>,
) -> Result<Option<Plot>, PlotError> {
    if x.0 < 2 {
        return Ok(None);
    }
    let title = format!("Style exposure by {what}: {}-day window, {}", model.window, model.model);
    let name = format!("{prefix}_{}", stem(model.window, &model.model));
    let (low, high) = span(model.factors.iter().flat_map(|f| values(f).iter().flatten().copied()).chain([0.0]));
    let plot = draw(&name, &title, |root| {
        let mut chart = chart(root, &title, (0.0, x.0 as f64, x.1), (low, high, y_title), x_label)?;
        for (index, factor) in model.factors.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            let points: Vec<(f64, f64)> =
                values(factor).iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64, v))).collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(factor.factor.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        legend(&mut chart, Some(SeriesLabelPosition::UpperRight))?;
        Ok(())
    })?;
    Ok(Some(plot))
}

/// Exposure to every factor by model age.
fn by_age_plot(model: &ModelExposures) -> Result<Option<Plot>, PlotError> {
    let ages = model.factors.iter().map(|f| f.by_age.len()).max().unwrap_or(0);
    let x = (ages, "model age (trading days)");
    exposure_plot(model, ("exposure_age", "model age"), |f| &f.by_age, x, "Spearman ρ of scores with the factor", None)
}

/// Each model's mean exposure at its retrain date: how exposures drift over time.
fn by_date_plot(model: &ModelExposures) -> Result<Option<Plot>, PlotError> {
    let dates = &model.retrain_dates;
    let date_label = |x: &f64| dates.get(*x as usize).map_or_else(String::new, |d| d.format("%Y-%m").to_string());
    let x = (dates.len(), "retrain date");
    let y_title = "mean ρ over the model's ages";
    exposure_plot(model, ("exposure_dates", "retrain date"), |f| &f.by_run, x, y_title, Some(&date_label))
}

/// A diverging colour: blue below 0, white at 0, red above, full at ±`limit`; grey where
/// missing.
fn diverging(value: Option<f64>, limit: f64) -> RGBColor {
    let Some(value) = value.filter(|v| v.is_finite()) else { return RGBColor(225, 225, 225) };
    let t = if limit > 0.0 { (value / limit).clamp(-1.0, 1.0) } else { 0.0 };
    let fade = |t: f64| (255.0 * (1.0 - t.abs())).round() as u8;
    if t >= 0.0 { RGBColor(255, fade(t), fade(t)) } else { RGBColor(fade(t), fade(t), 255) }
}

/// Means of `values` in buckets of `width`.
fn bucketed(values: &[Option<f64>], width: usize) -> Vec<Option<f64>> {
    values
        .chunks(width.max(1))
        .map(|chunk| {
            let present: Vec<f64> = chunk.iter().flatten().copied().collect();
            (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
        })
        .collect()
}

/// A heatmap of `rows` (label, values by column) with a diverging colour scale centred on
/// 0; the columns are ages, bucketed to at most [`HEATMAP_COLUMNS`].
pub(super) fn heatmap(
    name: &str,
    title: &str,
    rows: &[(String, Vec<Option<f64>>)],
    x_title: &str,
    x_label: &dyn Fn(&f64) -> String,
) -> Result<Option<Plot>, PlotError> {
    let ages = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    if ages == 0 || rows.is_empty() {
        return Ok(None);
    }
    let width = ages.div_ceil(HEATMAP_COLUMNS);
    let cells: Vec<Vec<Option<f64>>> = rows.iter().map(|(_, v)| bucketed(v, width)).collect();
    let limit = cells.iter().flatten().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let full_title = format!("{title} (red > 0 > blue, ±{limit:.3})");
    let plot = draw(name, &full_title, |root| {
        let labels: Vec<&str> = rows.iter().map(|(label, _)| label.as_str()).collect();
        let row_label = |y: &f64| labels.get(y.floor() as usize).map_or_else(String::new, |l| (*l).to_string());
        let mut chart = ChartBuilder::on(root)
            .caption(&full_title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..ages as f64, 0.0..rows.len() as f64)?;
        chart
            .configure_mesh()
            .x_desc(x_title)
            .x_labels(8)
            .x_label_formatter(x_label)
            .disable_y_mesh()
            .disable_x_mesh()
            .y_labels(rows.len() * 2 + 1)
            .y_label_formatter(&|y: &f64| if y.fract() == 0.5 { row_label(y) } else { String::new() })
            .draw()?;
        for (row, values) in cells.iter().enumerate() {
            chart.draw_series(values.iter().enumerate().map(|(column, value)| {
                let x0 = (column * width) as f64;
                let x1 = ((column + 1) * width).min(ages) as f64;
                Rectangle::new([(x0, row as f64), (x1, row as f64 + 1.0)], diverging(*value, limit).filled())
            }))?;
        }
        Ok(())
    })?;
    Ok(Some(plot))
}

fn horizon_heatmaps(model: &ModelHorizons) -> Result<Vec<Plot>, PlotError> {
    let mut plots = Vec::new();
    type Pick = fn(&HorizonRow) -> &Vec<Option<f64>>;
    let metrics: [(&str, &str, Pick); 2] =
        [("horizons_delta", "ΔP@K", |r| &r.delta_by_age), ("horizons_rank_ic", "RankIC", |r| &r.rank_ic_by_age)];
    for (prefix, label, pick) in metrics {
        let rows: Vec<(String, Vec<Option<f64>>)> =
            model.rows.iter().map(|r| (format!("{}d", r.horizon), pick(r).clone())).collect();
        let title = format!("{label} by horizon and model age: {}-day window, {}", model.window, model.model);
        let name = format!("{prefix}_{}", stem(model.window, &model.model));
        plots.extend(heatmap(&name, &title, &rows, "model age", &|x: &f64| format!("{x:.0}"))?);
    }
    Ok(plots)
}

/// Features in an importance table and heatmap.
const TOP_FEATURES: usize = 10;

/// The loss rise of the most important features over retrain dates.
fn importance_heatmap(model: &ModelImportance) -> Result<Option<Plot>, PlotError> {
    if model.retrain_dates.len() < 2 {
        return Ok(None);
    }
    let rows: Vec<(String, Vec<Option<f64>>)> =
        model.features.iter().take(TOP_FEATURES).rev().map(|f| (f.feature.clone(), f.by_run.clone())).collect();
    let title = format!("Feature importance drift: {}-day window, {}", model.window, model.model);
    let dates = &model.retrain_dates;
    let label = |x: &f64| dates.get(*x as usize).map_or_else(String::new, |d| d.format("%Y-%m").to_string());
    heatmap(&format!("importance_{}", stem(model.window, &model.model)), &title, &rows, "retrain date", &label)
}

/// The section's plots: for trained models, exposure by age and by retrain date, the
/// horizon × age heatmaps (with more than one horizon) and the importance drift.
pub(super) fn plots(diagnostics: &Diagnostics) -> Result<Vec<Plot>, PlotError> {
    let mut plots = Vec::new();
    for model in diagnostics.exposures.iter().filter(|m| m.trained) {
        plots.extend(by_age_plot(model)?);
        plots.extend(by_date_plot(model)?);
    }
    for model in diagnostics.horizons.iter().filter(|m| m.trained && m.rows.len() > 1) {
        plots.extend(horizon_heatmaps(model)?);
    }
    for model in &diagnostics.importance {
        plots.extend(importance_heatmap(model)?);
    }
    Ok(plots)
}

fn figure(out: &mut String, plots: &[Plot], name: &str) {
    if let Some(plot) = plots.iter().find(|p| p.name == name) {
        let _ = writeln!(out, "<figure id=\"{}\">{}</figure>", plot.name, plot.svg);
    }
}

fn exposure_table(out: &mut String, window: u32, models: &[&ModelExposures]) {
    let Some(first) = models.first() else { return };
    let _ = write!(out, "<table class=\"exposures\" data-window=\"{window}\"><thead><tr><th>model</th>");
    for factor in &first.factors {
        let _ = write!(out, "<th>{}</th>", escape(&factor.factor));
    }
    out.push_str("</tr></thead><tbody>\n");
    for model in models {
        let kind = if model.trained { "" } else { " <span class=\"note\">(baseline)</span>" };
        let _ = write!(out, "<tr data-model=\"{}\"><td>{}{kind}</td>", escape(&model.model), escape(&model.model));
        for factor in &model.factors {
            let interval = factor.interval.map_or_else(String::new, |i| format!(" [{:+.2}, {:+.2}]", i.low, i.high));
            let mut text = cell(&format!("exposure:{}", factor.factor), Some(factor.mean), |v| format!("{v:+.2}"));
            if model.warns(factor) {
                text = text.replacen("class=\"num\"", "class=\"num bad\"", 1);
            }
            let _ = write!(out, "{}", text.replacen("</td>", &format!("<small>{interval}</small></td>"), 1));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn importance_table(out: &mut String, model: &ModelImportance) {
    let _ = writeln!(
        out,
        "<table class=\"importance\" data-model=\"{}|{}\"><thead><tr><th>feature</th><th>validation loss rise</th>\
         <th>validation RankIC fall</th></tr></thead><tbody>",
        model.window,
        escape(&model.model)
    );
    for feature in model.features.iter().take(TOP_FEATURES) {
        let _ = writeln!(
            out,
            "<tr data-feature=\"{}\"><td>{}</td>{}{}</tr>",
            escape(&feature.feature),
            escape(&feature.feature),
            cell("loss", Some(feature.loss), |v| format!("{v:+.5}")),
            cell("rank_ic", Some(feature.rank_ic), |v| format!("{v:+.4}"))
        );
    }
    out.push_str("</tbody></table>\n");
}

fn horizon_table(out: &mut String, model: &ModelHorizons) {
    let _ = writeln!(
        out,
        "<table class=\"horizons\" data-model=\"{}|{}\"><thead><tr><th>horizon</th><th>RankIC</th><th>P@K</th>\
         <th>P@K random</th><th>ΔP@K</th><th>spread</th><th>cells</th></tr></thead><tbody>",
        model.window,
        escape(&model.model)
    );
    for row in &model.rows {
        let primary = if row.primary { " (primary)" } else { "" };
        let _ = writeln!(
            out,
            "<tr data-horizon=\"{}\"><td>{} days{primary}</td>{}{}{}{}{}<td class=\"num\">{}</td></tr>",
            row.horizon,
            row.horizon,
            cell("rank_ic", row.rank_ic, |v| format!("{v:+.4}")),
            cell("p_at_k", Some(row.p_at_k), |v| format!("{v:.4}")),
            cell("base_rate", Some(row.base_rate), |v| format!("{v:.4}")),
            cell("delta", Some(row.delta), |v| format!("{v:+.4}")),
            cell("spread", Some(row.spread), |v| format!("{v:+.5}")),
            row.cells
        );
    }
    out.push_str("</tbody></table>\n");
}

/// The section.
pub(super) fn section(out: &mut String, diagnostics: &Diagnostics, plots: &[Plot]) {
    out.push_str(
        "<h2 id=\"diagnostics\">Why models rank as they do</h2>\n<p>Style exposure: the Spearman correlation of a \
         model's scores with a style factor on each scored day, averaged over each model's ages, then over the \
         models (95% interval over models in retrain order). Above 0.5 in size, the model mostly ranks by that \
         factor.</p>\n",
    );
    let warnings: Vec<(&ModelExposures, &String)> =
        diagnostics.exposures.iter().flat_map(|m| m.warnings.iter().map(move |w| (m, w))).collect();
    if !warnings.is_empty() {
        out.push_str("<ul class=\"exposure-warnings\">\n");
        for (model, warning) in warnings {
            let _ = writeln!(
                out,
                "<li class=\"warn\">{}-day window, {}: {}</li>",
                model.window,
                escape(&model.model),
                escape(warning)
            );
        }
        out.push_str("</ul>\n");
    }
    let mut windows: Vec<u32> = diagnostics.exposures.iter().map(|m| m.window).collect();
    windows.dedup();
    for window in windows {
        let models: Vec<&ModelExposures> = diagnostics.exposures.iter().filter(|m| m.window == window).collect();
        let _ = writeln!(out, "<h3>Style exposures, {window}-day window</h3>");
        exposure_table(out, window, &models);
        for model in models.iter().filter(|m| m.trained) {
            figure(out, plots, &format!("exposure_age_{}", stem(model.window, &model.model)));
            figure(out, plots, &format!("exposure_dates_{}", stem(model.window, &model.model)));
        }
    }
    if !diagnostics.importance.is_empty() {
        out.push_str(
            "<h3>Feature importance</h3>\n<p>Permutation importance on each model's validation days (the end of its \
             training window that early stopping holds out, never a test day): the rise in validation loss and the \
             fall in validation RankIC when one feature is shuffled across each day's stocks, averaged over the \
             models. The heatmap shows the loss rise of the top features model by model.</p>\n",
        );
        for model in &diagnostics.importance {
            let _ = writeln!(out, "<h4>{}-day window, {}</h4>", model.window, escape(&model.model));
            importance_table(out, model);
            figure(out, plots, &format!("importance_{}", stem(model.window, &model.model)));
        }
    }
    out.push_str(
        "<h3>Every trained horizon</h3>\n<p>Each horizon's metrics pooled over every (model, age) cell up to the \
         report's maximum age; the primary horizon drives the triggers and headlines.</p>\n",
    );
    for model in &diagnostics.horizons {
        let _ = writeln!(out, "<h4>{}-day window, {}</h4>", model.window, escape(&model.model));
        horizon_table(out, model);
        figure(out, plots, &format!("horizons_delta_{}", stem(model.window, &model.model)));
        figure(out, plots, &format!("horizons_rank_ic_{}", stem(model.window, &model.model)));
    }
}
