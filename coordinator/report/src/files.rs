//! A report as files: `report.json` (the whole document), CSV and Parquet tables,
//! `report.html` and every plot as an SVG and a PNG file.
//!
//! | file | one row per | columns |
//! |---|---|---|
//! | `verdict.csv` | `section` `delta`: (window, model, seed, selector) of a trained line (one row with the selector's columns empty where it has none); `section` `backtest`: (window, model, seed, setting) | `delta` rows: `best_fixed`, `best_fixed_delta_p_at_k`; `policies` (adaptive, full coverage), `selectors`, `tried` (their sum); `spa_p`, `spa_days`, `spa_mean_block`, `spa_samples`; `stepm_count`, `stepm` (names, ` \| `-separated), `beaten` (1: SPA p < 0.05 and StepM names one); `hindsight_best`, `hindsight_delta_p_at_k`; `half_life_days`; the selector's `lookback`, `among`, `chosen_delta_p_at_k` with `chosen_low`, `chosen_high`, `chosen_vs_best_fixed` with `chosen_difference_low`, `chosen_difference_high`, `chosen_switches`; `backtest` rows: `setting` (index into the report's settings), `best_net` (the schedule with the highest Sharpe ratio of net daily returns), `sharpe` (its, annualised), `dsr` and `trials`, `dsr_effective` and `effective_trials`, `pbo` and `pbo_blocks`; every row has every column |
//! | `schedules.csv` | (window, model, seed, schedule) | `scored_days`; `mean_delta_p_at_k`, `delta_low`, `delta_high` (ΔP@K, a fraction; 95% interval, empty where not computed); `hit_rate` (share of days > 0); `mean_rank_ic`, `icir`; `retrains`; `train_seconds` (sum over the schedule's trainings, s); `vs_best_fixed`, `difference_mean`, `difference_low`, `difference_high`, `difference_excludes_zero`; `on_frontier`; `covered_days`, `period_days` (days of the line's period with a live model row, and all of them: below, the schedule is not ranked or put on the frontier); `difference_common_days` (days the difference is taken on) |
//! | `decay.csv` | (window, model, metric, age) | `age` (trading days since the retrain date), `mean`, `low`, `high` (95% interval), `models` (runs with a value) |
//! | `series.csv` | (window, model, seed, schedule, date) | `delta_p_at_k`, `rank_ic` (empty: no live model scored that day), `retrain` (1 on retrain dates) |
//! | `exposures.csv` | (window, model, factor) | `trained` (0: an untrained baseline); `mean` (Spearman ρ of scores with the factor, each model's mean over its ages, then the mean over models), `low`, `high` (95% interval over models in retrain order), `models` (with a value), `warning` (1: a trained model with \|mean\| > 0.5) |
//! | `horizons.csv` | (window, model, horizon) | `primary` (1: the primary horizon); over every (model, age) cell up to `max_age`: `cells`, `p_at_k`, `base_rate`, `delta_p_at_k`, `rank_ic`, `spread` (means) |
//! | `importance.csv` | (window, trained model, feature) | `rank` (1: the most important), `loss` (mean rise of the validation loss when the feature is shuffled), `rank_ic` (mean fall of the validation RankIC), `models` (runs with a value) |
//! | `backtest.csv` (with `[backtest]`) | (window, model, seed, benchmark or schedule, setting) | `adaptive`; the setting (`k`, `rebalance`, `buffer`, `max_replace` (empty: unlimited), `min_trade`, `buy_bps`, `sell_bps`, `impact`, `capital`); `days`, `retrains`; `annual_gross`, `annual_net`, `annual_excess` with `excess_low`, `excess_high` (95%); `volatility`, `sharpe`, `max_drawdown`, `turnover_per_year` (one-sided, × NAV), `costs` (share of capital over the period), `total_cost` (costs + retrains × retrain_cost / capital), `switch_share`, `hit_rate`; `vs_best_fixed`, `difference`, `difference_low`, `difference_high` (annualised net); `on_frontier`. Fractions throughout (0.05 = 5%) |
//! | `equity.csv` (with `[backtest]`) | (window, model, seed, benchmark or schedule, setting, date) | `nav_gross`, `nav_net`: value at the day's close after its return, 1 at the start |

use std::fmt::Write as _;

use super::cells::{field, number};
use super::{SweepReport, html};

/// What `wf report --format` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    Html,
    Json,
    Csv,
    /// The CSV tables as Parquet (same columns, typed; dates as dates).
    Parquet,
    /// Every plot as a PNG file too.
    Png,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportFileError {
    #[error(transparent)]
    Plot(#[from] html::PlotError),
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Parquet(#[from] wf_data::DataError),
    #[error("rasterising plot {plot}: {reason}")]
    Png { plot: String, reason: String },
}

pub fn schedules_csv(report: &SweepReport) -> String {
    let mut out = String::from(
        "window,model,seed,schedule,adaptive,scored_days,mean_delta_p_at_k,delta_low,delta_high,hit_rate,\
         mean_rank_ic,icir,retrains,train_seconds,vs_best_fixed,difference_mean,difference_low,difference_high,\
         difference_excludes_zero,on_frontier,covered_days,period_days,difference_common_days\n",
    );
    for line in &report.lines {
        for s in &line.schedules {
            let difference = s.difference_vs_best_fixed.as_ref();
            let interval = difference.and_then(|d| d.interval);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                line.window,
                field(&line.model),
                line.seed,
                field(&s.name),
                u8::from(s.adaptive),
                s.delta.n,
                number(Some(s.delta.mean)),
                number(s.delta_interval.map(|i| i.low)),
                number(s.delta_interval.map(|i| i.high)),
                number(Some(s.delta.hit_rate)),
                number(Some(s.rank_ic.mean)),
                number(Some(s.rank_ic.ratio())),
                s.retrains(),
                number(Some(s.train_seconds)),
                field(difference.map_or("", |d| d.against.as_str())),
                number(difference.map(|d| d.mean)),
                number(interval.map(|i| i.low)),
                number(interval.map(|i| i.high)),
                interval.map_or(String::new(), |i| u8::from(i.excludes_zero()).to_string()),
                u8::from(s.on_frontier),
                s.covered_days,
                s.period_days,
                difference.map_or(String::new(), |d| d.common_days.to_string()),
            );
        }
    }
    out
}

pub fn decay_csv(report: &SweepReport) -> String {
    let mut out = String::from("window,model,metric,age,mean,low,high,models\n");
    for curve in &report.decay {
        let model = report.models.get(curve.model).cloned().unwrap_or_else(|| curve.model.to_string());
        let metric = serde_json::to_value(curve.metric).ok().and_then(|v| v.as_str().map(str::to_string));
        for point in &curve.points {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                curve.window,
                field(&model),
                metric.as_deref().unwrap_or("metric"),
                point.age,
                number(Some(point.mean)),
                number(point.interval.map(|i| i.low)),
                number(point.interval.map(|i| i.high)),
                point.models
            );
        }
    }
    out
}

pub fn series_csv(report: &SweepReport) -> String {
    let mut out = String::from("window,model,seed,schedule,date,delta_p_at_k,rank_ic,retrain\n");
    for series in &report.series {
        let (model, schedule) = (field(&series.model), field(&series.schedule));
        for (i, date) in series.dates.iter().enumerate() {
            let retrain = series.retrain_dates.binary_search(date).is_ok();
            let _ = writeln!(
                out,
                "{},{model},{},{schedule},{date},{},{},{}",
                series.window,
                series.seed,
                number(series.delta.get(i).copied().flatten()),
                number(series.rank_ic.get(i).copied().flatten()),
                u8::from(retrain)
            );
        }
    }
    out
}

pub fn exposures_csv(report: &SweepReport) -> String {
    let mut out = String::from("window,model,trained,factor,mean,low,high,models,warning\n");
    for model in report.diagnostics.iter().flat_map(|d| &d.exposures) {
        for factor in &model.factors {
            let warning = model.warns(factor);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                model.window,
                field(&model.model),
                u8::from(model.trained),
                field(&factor.factor),
                number(Some(factor.mean)),
                number(factor.interval.map(|i| i.low)),
                number(factor.interval.map(|i| i.high)),
                factor.by_run.iter().flatten().count(),
                u8::from(warning)
            );
        }
    }
    out
}

pub fn importance_csv(report: &SweepReport) -> String {
    let mut out = String::from("window,model,feature,rank,loss,rank_ic,models\n");
    for model in report.diagnostics.iter().flat_map(|d| &d.importance) {
        for (rank, feature) in model.features.iter().enumerate() {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                model.window,
                field(&model.model),
                field(&feature.feature),
                rank + 1,
                number(Some(feature.loss)),
                number(Some(feature.rank_ic)),
                feature.by_run.iter().flatten().count()
            );
        }
    }
    out
}

pub fn horizons_csv(report: &SweepReport) -> String {
    let mut out = String::from("window,model,horizon,primary,cells,p_at_k,base_rate,delta_p_at_k,rank_ic,spread\n");
    for model in report.diagnostics.iter().flat_map(|d| &d.horizons) {
        for row in &model.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                model.window,
                field(&model.model),
                row.horizon,
                u8::from(row.primary),
                row.cells,
                number(Some(row.p_at_k)),
                number(Some(row.base_rate)),
                number(Some(row.delta)),
                number(row.rank_ic),
                number(Some(row.spread))
            );
        }
    }
    out
}

/// The report's files in `formats`: (file name, contents), `report.html` last.
pub fn render(report: &SweepReport, formats: &[Format]) -> Result<Vec<(String, Vec<u8>)>, ReportFileError> {
    let mut files = Vec::new();
    if formats.contains(&Format::Json) {
        files.push(("report.json".to_string(), serde_json::to_vec_pretty(report)?));
    }
    let mut tables = vec![
        ("verdict", super::verdict::verdict_csv(report)),
        ("schedules", schedules_csv(report)),
        ("decay", decay_csv(report)),
        ("series", series_csv(report)),
        ("exposures", exposures_csv(report)),
        ("horizons", horizons_csv(report)),
        ("importance", importance_csv(report)),
    ];
    if let Some(backtest) = &report.backtest {
        tables.push(("backtest", super::backtest::backtest_csv(backtest)));
        tables.push(("equity", super::backtest::equity_csv(backtest)));
    }
    for (name, csv) in tables {
        if formats.contains(&Format::Parquet) {
            files.push((format!("{name}.parquet"), wf_data::csv_to_parquet(&format!("{name}.csv"), csv.as_bytes())?));
        }
        if formats.contains(&Format::Csv) {
            files.push((format!("{name}.csv"), csv.into_bytes()));
        }
    }
    if formats.contains(&Format::Png) {
        let rasteriser = Rasteriser::new();
        for plot in html::plots(report)? {
            files.push((format!("{}.png", plot.name), rasteriser.png(&plot)?));
        }
    }
    if formats.contains(&Format::Html) {
        for plot in html::plots(report)? {
            files.push((format!("{}.svg", plot.name), plot.svg.into_bytes()));
        }
        files.push(("report.html".to_string(), html::render(report)?.into_bytes()));
    }
    Ok(files)
}

/// SVG plots to PNG at twice their size, with the system's fonts (loaded once).
struct Rasteriser {
    options: resvg::usvg::Options<'static>,
}

impl Rasteriser {
    fn new() -> Self {
        let mut options = resvg::usvg::Options::default();
        let fonts = options.fontdb_mut();
        fonts.load_system_fonts();
        // plotters asks for "sans-serif": map it to a family this machine has.
        let families: Vec<String> =
            fonts.faces().flat_map(|face| face.families.iter().map(|(name, _)| name.clone())).collect();
        let preferred = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica"];
        if let Some(family) = preferred.iter().find(|p| families.iter().any(|f| f == *p)) {
            fonts.set_sans_serif_family(*family);
        } else if families.is_empty() {
            tracing::warn!("no system fonts found: the PNG plots will have no text (the SVG plots do)");
        }
        Self { options }
    }

    fn png(&self, plot: &html::Plot) -> Result<Vec<u8>, ReportFileError> {
        let failed = |reason: String| ReportFileError::Png { plot: plot.name.clone(), reason };
        let tree = resvg::usvg::Tree::from_str(&plot.svg, &self.options).map_err(|e| failed(e.to_string()))?;
        let size = tree.size().to_int_size().scale_by(2.0).ok_or_else(|| failed("empty plot".into()))?;
        let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
            .ok_or_else(|| failed(format!("cannot allocate {}x{} pixels", size.width(), size.height())))?;
        resvg::render(&tree, resvg::tiny_skia::Transform::from_scale(2.0, 2.0), &mut pixmap.as_mut());
        pixmap.encode_png().map_err(|e| failed(e.to_string()))
    }
}
