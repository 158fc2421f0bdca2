//! Data-quality checks for an OHLCV file or a panel: `wf data check`.
//!
//! The report counts what is wrong and where (rows, stocks, dates, null shares with the
//! worst dates, infinities, duplicates, non-positive prices, high below low, extreme
//! moves, volume level shifts, gaps, survivorship) and turns it into gates. An error gate
//! fails the check; a warning gate fails it only in strict mode.
//!
//! **Survivorship.** Stocks whose last row comes before the file's last date (exits:
//! delistings, mergers) and whose first row comes after its first date (entries) are
//! counted. A file with no exit at all looks survivor-only: only stocks still listed at
//! its end, which biases P@K and the base rate upwards (the stocks that fell out, often
//! after large losses, are missing); a warning gate says so. For a panel, the rows of each
//! stock's last `h` days, whose `fwd_ret_<h>` is null (no close `h` days later), are
//! counted per target rather than dropped silently.

mod render;

use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;
use wf_shared::calendar::TradingCalendar;

pub use render::render_table;

use crate::DataError;
use crate::column;
use crate::panel_file::TARGET_PREFIX;

/// Gate thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckOptions {
    /// Largest acceptable share of nulls in any column.
    pub max_null_share: f64,
    /// Warnings fail the check too.
    pub strict: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self { max_null_share: 0.10, strict: false }
    }
}

/// Daily close moves beyond these ratios count as extreme.
pub const EXTREME_UP: f64 = 1.5;
pub const EXTREME_DOWN: f64 = 0.6;
/// A stock's volume level shifts when the median of the 60 trading days after a date
/// differs from the median of the 60 before by at least this factor.
pub const LEVEL_SHIFT_FACTOR: f64 = 3.0;
pub const LEVEL_SHIFT_WINDOW: usize = 60;
const EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Ohlcv,
    Panel,
    Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Null share of one column on one date.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DateShare {
    pub date: NaiveDate,
    pub null_share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnQuality {
    pub name: String,
    pub dtype: String,
    pub nulls: usize,
    pub null_share: f64,
    pub infinities: usize,
    /// Dates with the highest null share in this column (none when it has no nulls).
    pub worst_dates: Vec<DateShare>,
}

/// How many times something was found, with a few examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Finding {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Finding {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    pub check: String,
    pub severity: Severity,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub path: String,
    pub kind: FileKind,
    pub rows: usize,
    pub stocks: usize,
    pub dates: usize,
    pub first_date: Option<NaiveDate>,
    pub last_date: Option<NaiveDate>,
    pub columns: Vec<ColumnQuality>,
    pub duplicates: Finding,
    pub stocks_with_gaps: Finding,
    pub non_positive_prices: Option<Finding>,
    pub high_below_low: Option<Finding>,
    pub extreme_moves: Option<Finding>,
    pub volume_level_shifts: Option<Finding>,
    pub survivorship: Survivorship,
    pub gates: Vec<Gate>,
    pub passed: bool,
}

/// Stocks that leave or join the file's universe, and the unlabeled tails of a panel.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Survivorship {
    /// Stocks whose last row is before the file's last date.
    pub exits: Finding,
    /// Stocks whose first row is after the file's first date.
    pub entries: Finding,
    /// No stock exits: the universe looks survivor-only.
    pub survivor_only: bool,
    /// For a panel, per target column: rows within their stock's last `h` rows whose
    /// target is null (the label lies past the stock's last close).
    pub unlabeled_tails: Vec<UnlabeledTail>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnlabeledTail {
    pub target: String,
    pub horizon: u32,
    pub rows: usize,
}

impl CheckReport {
    pub fn failed_gates(&self) -> impl Iterator<Item = &Gate> {
        self.gates.iter().filter(|g| !g.passed)
    }
}

/// Row keys of a table: trading day and stock of each row, in file order.
struct Keys {
    calendar: TradingCalendar,
    codes: Vec<String>,
    day: Vec<u32>,
    stock: Vec<u32>,
    /// Rows sorted by (stock, day).
    order: Vec<u32>,
}

impl Keys {
    fn date(&self, row: usize) -> NaiveDate {
        self.calendar.date(self.day[row] as usize).unwrap_or_default()
    }

    fn code(&self, row: usize) -> &str {
        &self.codes[self.stock[row] as usize]
    }

    /// Row ranges of `order` per stock.
    fn stock_runs(&self) -> Vec<&[u32]> {
        self.order.chunk_by(|a, b| self.stock[*a as usize] == self.stock[*b as usize]).collect()
    }
}

/// Checks the file at `path`.
pub fn check_file(path: &Path, options: CheckOptions) -> Result<CheckReport, DataError> {
    let frame = column::scan(path)?.collect().map_err(|error| DataError::unreadable(path, error))?;
    let column::RowKeys { names, calendar, codes, day, stock } = column::row_keys(&frame, path)?;
    let ohlcv = ["open", "high", "low", "close", "volume"].iter().all(|c| names.iter().any(|n| n == c));
    let kind = if ohlcv {
        FileKind::Ohlcv
    } else if names.iter().any(|n| n.starts_with(TARGET_PREFIX)) {
        FileKind::Panel
    } else {
        FileKind::Table
    };

    let mut order: Vec<u32> = (0..day.len() as u32).collect();
    order.sort_unstable_by_key(|r| (u64::from(stock[*r as usize]) << 32) | u64::from(day[*r as usize]));
    let keys = Keys { calendar, codes, day, stock, order };

    let mut columns = Vec::new();
    let mut values_of = std::collections::HashMap::new();
    let mut tails = Vec::new();
    for name in names.iter().filter(|n| *n != "date" && *n != "code") {
        let dtype = frame.column(name).map(|c| c.dtype().clone()).unwrap_or(DataType::Null);
        if column::is_numeric(&dtype) {
            let values = column::f64s(&frame, name, path)?;
            columns.push(numeric_quality(name, &dtype, &values, &keys));
            if let Some(horizon) = name.strip_prefix(TARGET_PREFIX).and_then(|h| h.parse::<u32>().ok()) {
                tails.push(unlabeled_tail(name, horizon, &values, &keys));
            }
            if ohlcv && ["open", "high", "low", "close", "volume"].contains(&name.as_str()) {
                values_of.insert(name.clone(), values);
            }
        } else {
            let nulls = frame.column(name).map(|c| c.null_count()).unwrap_or_default();
            columns.push(ColumnQuality {
                name: name.clone(),
                dtype: dtype.to_string(),
                nulls,
                null_share: share(nulls, frame.height()),
                infinities: 0,
                worst_dates: Vec::new(),
            });
        }
    }

    let mut report = CheckReport {
        path: path.display().to_string(),
        kind,
        rows: frame.height(),
        stocks: keys.codes.len(),
        dates: keys.calendar.len(),
        first_date: keys.calendar.first(),
        last_date: keys.calendar.last(),
        columns,
        duplicates: duplicates(&keys),
        stocks_with_gaps: gaps(&keys),
        non_positive_prices: None,
        high_below_low: None,
        extreme_moves: None,
        volume_level_shifts: None,
        survivorship: survivorship(&keys),
        gates: Vec::new(),
        passed: false,
    };
    report.survivorship.unlabeled_tails = tails;
    if ohlcv {
        let get = |name: &str| values_of.get(name).map(Vec::as_slice).unwrap_or_default();
        let prices = [("open", get("open")), ("high", get("high")), ("low", get("low")), ("close", get("close"))];
        report.non_positive_prices = Some(non_positive(&prices, &keys));
        report.high_below_low = Some(high_below_low(get("high"), get("low"), &keys));
        report.extreme_moves = Some(extreme_moves(get("close"), &keys));
        report.volume_level_shifts = Some(level_shifts(get("volume"), &keys));
    }
    report.gates = gates(&report, options);
    report.passed = report.gates.iter().all(|g| g.passed || (g.severity == Severity::Warning && !options.strict));
    Ok(report)
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn numeric_quality(name: &str, dtype: &DataType, values: &[f64], keys: &Keys) -> ColumnQuality {
    let mut nulls_per_day = vec![0usize; keys.calendar.len()];
    let mut rows_per_day = vec![0usize; keys.calendar.len()];
    let (mut nulls, mut infinities) = (0, 0);
    for (row, value) in values.iter().enumerate() {
        let day = keys.day[row] as usize;
        rows_per_day[day] += 1;
        if value.is_nan() {
            nulls += 1;
            nulls_per_day[day] += 1;
        } else if value.is_infinite() {
            infinities += 1;
        }
    }
    let mut worst: Vec<DateShare> = (0..keys.calendar.len())
        .filter(|d| nulls_per_day[*d] > 0)
        .map(|d| DateShare {
            date: keys.calendar.date(d).unwrap_or_default(),
            null_share: share(nulls_per_day[d], rows_per_day[d]),
        })
        .collect();
    worst.sort_by(|a, b| b.null_share.total_cmp(&a.null_share).then(a.date.cmp(&b.date)));
    worst.truncate(3);
    ColumnQuality {
        name: name.to_string(),
        dtype: dtype.to_string(),
        nulls,
        null_share: share(nulls, values.len()),
        infinities,
        worst_dates: worst,
    }
}

fn duplicates(keys: &Keys) -> Finding {
    let mut found = Finding::default();
    for pair in keys.order.windows(2) {
        let (a, b) = (pair[0] as usize, pair[1] as usize);
        if keys.stock[a] == keys.stock[b] && keys.day[a] == keys.day[b] {
            found.add(|| format!("{} on {}", keys.code(b), keys.date(b)));
        }
    }
    found
}

fn gaps(keys: &Keys) -> Finding {
    let mut found = Finding::default();
    for run in keys.stock_runs() {
        let (first, last) = (run[0] as usize, run[run.len() - 1] as usize);
        let span = (keys.day[last] - keys.day[first]) as usize + 1;
        let mut distinct = run.to_vec();
        distinct.dedup_by_key(|r| keys.day[*r as usize]);
        let missing = span - distinct.len();
        if missing > 0 {
            let first_missing = distinct.windows(2).find(|w| keys.day[w[1] as usize] > keys.day[w[0] as usize] + 1);
            let at =
                first_missing.map(|w| keys.calendar.date(keys.day[w[0] as usize] as usize + 1).unwrap_or_default());
            found.add(|| format!("{}: {missing} missing days, first {}", keys.code(first), at.unwrap_or_default()));
        }
    }
    found
}

fn survivorship(keys: &Keys) -> Survivorship {
    let mut found = Survivorship::default();
    let last_day = keys.calendar.len().saturating_sub(1) as u32;
    for run in keys.stock_runs() {
        let (first, last) = (run[0] as usize, run[run.len() - 1] as usize);
        if keys.day[last] < last_day {
            found.exits.add(|| format!("{} last trades {}", keys.code(last), keys.date(last)));
        }
        if keys.day[first] > 0 {
            found.entries.add(|| format!("{} first trades {}", keys.code(first), keys.date(first)));
        }
    }
    found.survivor_only = found.exits.count == 0 && !keys.codes.is_empty();
    found
}

/// Rows among each stock's last `horizon` rows whose target is null.
fn unlabeled_tail(name: &str, horizon: u32, target: &[f64], keys: &Keys) -> UnlabeledTail {
    let rows = keys
        .stock_runs()
        .iter()
        .flat_map(|run| run[run.len().saturating_sub(horizon as usize)..].iter())
        .filter(|row| target[**row as usize].is_nan())
        .count();
    UnlabeledTail { target: name.to_string(), horizon, rows }
}

fn non_positive(prices: &[(&str, &[f64])], keys: &Keys) -> Finding {
    let mut found = Finding::default();
    for row in 0..keys.day.len() {
        if let Some((name, values)) = prices.iter().find(|(_, values)| values[row] <= 0.0) {
            found.add(|| format!("{} on {}: {name} {}", keys.code(row), keys.date(row), values[row]));
        }
    }
    found
}

fn high_below_low(high: &[f64], low: &[f64], keys: &Keys) -> Finding {
    let mut found = Finding::default();
    for row in 0..keys.day.len() {
        if high[row] < low[row] {
            found.add(|| format!("{} on {}: high {} < low {}", keys.code(row), keys.date(row), high[row], low[row]));
        }
    }
    found
}

fn extreme_moves(close: &[f64], keys: &Keys) -> Finding {
    let mut found = Finding::default();
    for run in keys.stock_runs() {
        let mut last: Option<f64> = None;
        for row in run.iter().map(|r| *r as usize) {
            let value = close[row];
            if !(value.is_finite() && value > 0.0) {
                continue;
            }
            if let Some(previous) = last {
                let ratio = value / previous;
                if !(EXTREME_DOWN..=EXTREME_UP).contains(&ratio) {
                    found.add(|| format!("{} on {}: {:+.0}%", keys.code(row), keys.date(row), (ratio - 1.0) * 100.0));
                }
            }
            last = Some(value);
        }
    }
    found
}

/// For each stock, the date that best splits its log volume into two levels; flagged
/// when the medians of the windows either side differ by [`LEVEL_SHIFT_FACTOR`].
fn level_shifts(volume: &[f64], keys: &Keys) -> Finding {
    let window = LEVEL_SHIFT_WINDOW;
    let mut found = Finding::default();
    let mut shifts: Vec<(f64, String)> = Vec::new();
    for run in keys.stock_runs() {
        let rows: Vec<usize> =
            run.iter().map(|r| *r as usize).filter(|r| volume[*r] > 0.0 && volume[*r].is_finite()).collect();
        if rows.len() < 2 * window {
            continue;
        }
        let logs: Vec<f64> = rows.iter().map(|r| volume[*r].ln()).collect();
        let mut prefix = vec![0.0; logs.len() + 1];
        for (i, x) in logs.iter().enumerate() {
            prefix[i + 1] = prefix[i] + x;
        }
        let mean = |a: usize, b: usize| (prefix[b] - prefix[a]) / (b - a) as f64;
        let Some(split) = (window..=logs.len() - window).max_by(|a, b| {
            (mean(*a, a + window) - mean(a - window, *a))
                .abs()
                .total_cmp(&(mean(*b, b + window) - mean(b - window, *b)).abs())
        }) else {
            continue;
        };
        let median = |slice: &[f64]| {
            let mut sorted = slice.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        let jump = median(&logs[split..split + window]) - median(&logs[split - window..split]);
        if jump.abs() >= LEVEL_SHIFT_FACTOR.ln() {
            let row = rows[split];
            shifts.push((jump.abs(), format!("{} at {}: x{:.2}", keys.code(row), keys.date(row), jump.exp())));
        }
    }
    shifts.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, example) in shifts {
        found.add(|| example);
    }
    found
}

fn gates(report: &CheckReport, options: CheckOptions) -> Vec<Gate> {
    let gate =
        |check: &str, severity, passed, detail: String| Gate { check: check.to_string(), severity, passed, detail };
    let mut gates = vec![gate("rows", Severity::Error, report.rows > 0, format!("{} rows", report.rows))];
    let mut failing_nulls = false;
    for column in report.columns.iter().filter(|c| c.null_share > options.max_null_share) {
        failing_nulls = true;
        let worst =
            column.worst_dates.iter().map(|d| format!("{} {:.0}%", d.date, d.null_share * 100.0)).collect::<Vec<_>>();
        gates.push(gate(
            &format!("null share of {}", column.name),
            Severity::Error,
            false,
            format!(
                "{:.1}% > max {:.1}% (worst dates: {})",
                column.null_share * 100.0,
                options.max_null_share * 100.0,
                worst.join(", ")
            ),
        ));
    }
    if !failing_nulls {
        let worst = report.columns.iter().max_by(|a, b| a.null_share.total_cmp(&b.null_share));
        let detail = worst.map_or("no columns".to_string(), |c| {
            format!("worst {} {:.2}% <= max {:.1}%", c.name, c.null_share * 100.0, options.max_null_share * 100.0)
        });
        gates.push(gate("null share", Severity::Error, true, detail));
    }
    let infinite: Vec<String> =
        report.columns.iter().filter(|c| c.infinities > 0).map(|c| format!("{} ({})", c.name, c.infinities)).collect();
    gates.push(gate(
        "infinite values",
        Severity::Error,
        infinite.is_empty(),
        if infinite.is_empty() { "none".into() } else { infinite.join(", ") },
    ));
    let finding_gate = |check: &str, severity, finding: &Finding| {
        let detail = if finding.count == 0 {
            "none".to_string()
        } else {
            format!("{} ({})", finding.count, finding.examples.join("; "))
        };
        gate(check, severity, finding.count == 0, detail)
    };
    gates.push(finding_gate("duplicate (date, code)", Severity::Error, &report.duplicates));
    if let Some(finding) = &report.non_positive_prices {
        gates.push(finding_gate("non-positive prices", Severity::Error, finding));
    }
    if let Some(finding) = &report.high_below_low {
        gates.push(finding_gate("high below low", Severity::Error, finding));
    }
    if let Some(finding) = &report.extreme_moves {
        gates.push(finding_gate("extreme daily moves (> +50% or < -40%)", Severity::Warning, finding));
    }
    if let Some(finding) = &report.volume_level_shifts {
        gates.push(finding_gate("volume level shifts (x3 over 60 days)", Severity::Warning, finding));
    }
    gates.push(finding_gate("stocks with gaps", Severity::Warning, &report.stocks_with_gaps));
    let survivors = &report.survivorship;
    gates.push(gate(
        "survivorship (stocks that exit)",
        Severity::Warning,
        !survivors.survivor_only,
        if survivors.survivor_only {
            format!(
                "no stock stops trading before {}: the universe looks survivor-only, which biases P@K and the base \
                 rate upwards (stocks that fell out, often after large losses, are missing)",
                report.last_date.unwrap_or_default()
            )
        } else {
            format!("{} exit, {} enter", survivors.exits.count, survivors.entries.count)
        },
    ));
    gates
}
