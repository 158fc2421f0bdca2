//! The parts every plot and table of the report is drawn with: the palette, a plot and
//! its error, axes, lines and legends (plotters, SVG), escaping and table cells.

use plotters::prelude::*;
use wf_shared::age::Metric;

const SIZE: (u32, u32) = (760, 340);

pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// A plot: a file stem, a title, the SVG document.
#[derive(Debug, Clone)]
pub struct Plot {
    pub name: String,
    pub title: String,
    pub svg: String,
}

#[derive(Debug, thiserror::Error)]
#[error("drawing {plot}: {reason}")]
pub struct PlotError {
    plot: String,
    reason: String,
}

/// `(low, high)` of `values` with a margin, never empty.
pub(super) fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        low = low.min(v);
        high = high.max(v);
    }
    if !low.is_finite() {
        return (-1.0, 1.0);
    }
    let margin = ((high - low) * 0.08).max(1e-3);
    (low - margin, high + margin)
}

pub(super) fn draw<F>(name: &str, title: &str, paint: F) -> Result<Plot, PlotError>
where
    F: FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), Box<dyn std::error::Error>>,
{
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let result =
            root.fill(&WHITE).map_err(|e| e.to_string()).and_then(|()| paint(&root).map_err(|e| e.to_string()));
        result.map_err(|reason| PlotError { plot: name.to_string(), reason })?;
        root.present().map_err(|e| PlotError { plot: name.to_string(), reason: e.to_string() })?;
    }
    Ok(Plot { name: name.to_string(), title: title.to_string(), svg })
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A captioned chart over `x` × `y` (range and axis title) with the house margins and a
/// mesh without minor lines.
pub(super) fn chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    x: (f64, f64, &str),
    y: (f64, f64, &str),
    x_label: Option<&dyn Fn(&f64) -> String>,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x.2).y_desc(y.2).light_line_style(WHITE.mix(0.0));
    if let Some(label) = x_label {
        mesh.x_labels(8).x_label_formatter(label);
    }
    mesh.draw()?;
    Ok(chart)
}

/// Joins `points` with a line; a single point is left unjoined (a one-point polyline is
/// invalid SVG, which rasterisers warn about).
pub(super) fn joined<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    points: Vec<(f64, f64)>,
) -> Result<(), Box<dyn std::error::Error>> {
    if points.len() >= 2 {
        chart.draw_series(LineSeries::new(points, PALETTE[3].stroke_width(2)))?;
    }
    Ok(())
}

/// Draws a chart's legend (at `position`, or plotters' default place) in the house style.
pub(super) fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: Option<SeriesLabelPosition>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut labels = chart.configure_series_labels();
    if let Some(position) = position {
        labels.position(position);
    }
    labels.background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.3)).draw()?;
    Ok(())
}

/// `text` reduced to letters, digits, `-` and `_`, for file names and element ids.
pub fn slug(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// A table cell with its exact value in `data-v` and `shown` as text.
pub(super) fn cell(field: &str, value: Option<f64>, shown: impl FnOnce(f64) -> String) -> String {
    match value.filter(|v| v.is_finite()) {
        Some(v) => format!("<td class=\"num\" data-field=\"{field}\" data-v=\"{v}\">{}</td>", shown(v)),
        None => format!("<td class=\"num\" data-field=\"{field}\">–</td>"),
    }
}

pub(super) fn metric_label(metric: Metric) -> &'static str {
    match metric {
        Metric::DeltaPAtK => "ΔP@K (zero basis)",
        Metric::PAtK => "P@K (zero basis)",
        Metric::MedianDeltaPAtK => "ΔP@K",
        Metric::MedianPAtK => "P@K",
        Metric::RankIc => "RankIC",
        Metric::Spread => "spread",
        Metric::TopKMean => "top-K mean return",
    }
}

pub(super) fn metric_slug(metric: Metric) -> &'static str {
    match metric {
        Metric::DeltaPAtK => "delta_p_at_k",
        Metric::PAtK => "p_at_k",
        Metric::MedianDeltaPAtK => "median_delta_p_at_k",
        Metric::MedianPAtK => "median_p_at_k",
        Metric::RankIc => "rank_ic",
        Metric::Spread => "spread",
        Metric::TopKMean => "top_k_mean",
    }
}
