//! Validated daily OHLCV bars, stored per stock in trading-day order.
//!
//! The data layer hands over plain columns ([`BarsColumns`], rows in any order, `NaN`
//! for a null price); [`Bars::new`] checks them once and refuses what would poison
//! features or targets: duplicates, non-positive prices, negative volumes, infinities,
//! high below low. A null price (a no-trade day) is kept as `NaN` and stays null in
//! every feature and target that needs it: nothing is forward-filled.

use std::collections::HashMap;
use std::ops::Range;

use chrono::NaiveDate;

use crate::calendar::TradingCalendar;

/// Raw OHLCV columns, one entry per row, rows in any order. `NaN` marks a null value.
#[derive(Debug, Clone, Default)]
pub struct BarsColumns {
    pub date: Vec<NaiveDate>,
    pub code: Vec<String>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
    /// Traded value; `None` when the input has no turnover column.
    pub turnover: Option<Vec<f64>>,
}

impl BarsColumns {
    /// The rows whose date and code satisfy `keep`, in their order.
    pub fn rows_where(&self, keep: impl Fn(NaiveDate, &str) -> bool) -> Self {
        let rows: Vec<usize> = (0..self.date.len()).filter(|&row| keep(self.date[row], &self.code[row])).collect();
        let take = |values: &[f64]| rows.iter().map(|&row| values[row]).collect::<Vec<f64>>();
        Self {
            date: rows.iter().map(|&row| self.date[row]).collect(),
            code: rows.iter().map(|&row| self.code[row].clone()).collect(),
            open: take(&self.open),
            high: take(&self.high),
            low: take(&self.low),
            close: take(&self.close),
            volume: take(&self.volume),
            turnover: self.turnover.as_deref().map(take),
        }
    }
}

/// Why a set of bars was refused. Messages name the row and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BarsError {
    #[error("no rows")]
    Empty,
    #[error("column {column} has {found} rows, expected {expected}")]
    LengthMismatch { column: &'static str, expected: usize, found: usize },
    #[error("duplicate row for code {code} on {date}")]
    Duplicate { code: String, date: NaiveDate },
    #[error("non-positive {column} {value} for code {code} on {date}")]
    NonPositivePrice { column: &'static str, code: String, date: NaiveDate, value: f64 },
    #[error("negative {column} {value} for code {code} on {date}")]
    NegativeQuantity { column: &'static str, code: String, date: NaiveDate, value: f64 },
    #[error("infinite {column} for code {code} on {date}")]
    Infinite { column: &'static str, code: String, date: NaiveDate },
    #[error("high {high} below low {low} for code {code} on {date}")]
    HighBelowLow { code: String, date: NaiveDate, high: f64, low: f64 },
}

/// Validated bars: rows sorted by (stock, trading day), stocks sorted by code.
#[derive(Debug, Clone)]
pub struct Bars {
    calendar: TradingCalendar,
    codes: Vec<String>,
    stock_rows: Vec<Range<usize>>,
    day: Vec<u32>,
    pub(crate) open: Vec<f64>,
    pub(crate) high: Vec<f64>,
    pub(crate) low: Vec<f64>,
    pub(crate) close: Vec<f64>,
    pub(crate) volume: Vec<f64>,
    pub(crate) turnover: Option<Vec<f64>>,
}

/// `rows` reordered by `key[row]` (below `keys`), rows of one key in their order in
/// `rows`: a stable counting sort.
fn counting_sort(rows: impl Iterator<Item = u32> + Clone, key: &[u32], keys: usize) -> Vec<u32> {
    let mut start = vec![0usize; keys + 1];
    for row in rows.clone() {
        start[key[row as usize] as usize + 1] += 1;
    }
    for k in 0..keys {
        start[k + 1] += start[k];
    }
    let mut sorted = vec![0u32; start[keys]];
    for row in rows {
        let slot = &mut start[key[row as usize] as usize];
        sorted[*slot] = row;
        *slot += 1;
    }
    sorted
}

impl Bars {
    /// Validates and sorts raw columns.
    pub fn new(columns: BarsColumns) -> Result<Self, BarsError> {
        let rows = columns.date.len();
        if rows == 0 {
            return Err(BarsError::Empty);
        }
        check_lengths(&columns, rows)?;

        // Stock ids in code order, trading-day indices on the calendar of all dates.
        let mut code_ids: HashMap<&str, u32> = HashMap::new();
        let mut row_code = Vec::with_capacity(rows);
        for code in &columns.code {
            let next = code_ids.len() as u32;
            row_code.push(*code_ids.entry(code.as_str()).or_insert(next));
        }
        let mut codes: Vec<String> = code_ids.keys().map(|code| code.to_string()).collect();
        codes.sort_unstable();
        let mut rank_of_first_seen = vec![0u32; codes.len()];
        for (rank, code) in codes.iter().enumerate() {
            rank_of_first_seen[code_ids[code.as_str()] as usize] = rank as u32;
        }
        // Runs of one date (a file sorted by date, or by code and date) are looked up once.
        let mut distinct = Vec::new();
        for date in &columns.date {
            if distinct.last() != Some(date) {
                distinct.push(*date);
            }
        }
        let calendar = TradingCalendar::from_dates(distinct);
        let mut last = None;
        let row_day: Vec<u32> = columns
            .date
            .iter()
            .map(|date| match last {
                Some((seen, day)) if seen == *date => day,
                _ => {
                    let day = calendar.index_of(*date).unwrap_or_default() as u32;
                    last = Some((*date, day));
                    day
                }
            })
            .collect();

        // Rows by (stock, day): a counting sort by day, then a stable one by stock, two
        // passes over the rows where a comparison sort of 10 M rows took a second and a half.
        let row_stock: Vec<u32> = row_code.into_iter().map(|code| rank_of_first_seen[code as usize]).collect();
        let by_day = counting_sort(0..rows as u32, &row_day, calendar.len());
        let order = counting_sort(by_day.iter().copied(), &row_stock, codes.len());
        drop(by_day);

        let gather = |values: &[f64]| order.iter().map(|row| values[*row as usize]).collect::<Vec<f64>>();
        let mut stock_rows = vec![0..0; codes.len()];
        let mut day = Vec::with_capacity(rows);
        let mut start = 0;
        for (position, row) in order.iter().enumerate() {
            let stock = row_stock[*row as usize] as usize;
            day.push(row_day[*row as usize]);
            let next_stock = order.get(position + 1).map(|next| row_stock[*next as usize] as usize);
            if next_stock != Some(stock) {
                stock_rows[stock] = start..position + 1;
                start = position + 1;
            }
        }
        let bars = Self {
            open: gather(&columns.open),
            high: gather(&columns.high),
            low: gather(&columns.low),
            close: gather(&columns.close),
            volume: gather(&columns.volume),
            turnover: columns.turnover.as_deref().map(gather),
            calendar,
            codes,
            stock_rows,
            day,
        };
        bars.validate()?;
        Ok(bars)
    }

    fn validate(&self) -> Result<(), BarsError> {
        for (stock, rows) in self.stock_rows.iter().enumerate() {
            for row in rows.clone() {
                let code = || self.codes[stock].clone();
                let date = || self.calendar.date(self.day[row] as usize).unwrap_or_default();
                if row > rows.start && self.day[row] == self.day[row - 1] {
                    return Err(BarsError::Duplicate { code: code(), date: date() });
                }
                let prices = [
                    ("open", self.open[row]),
                    ("high", self.high[row]),
                    ("low", self.low[row]),
                    ("close", self.close[row]),
                ];
                for (column, value) in prices {
                    if value.is_infinite() {
                        return Err(BarsError::Infinite { column, code: code(), date: date() });
                    }
                    if value <= 0.0 {
                        return Err(BarsError::NonPositivePrice { column, code: code(), date: date(), value });
                    }
                }
                let quantities =
                    [("volume", Some(self.volume[row])), ("turnover", self.turnover.as_ref().map(|t| t[row]))];
                for (column, value) in quantities {
                    let Some(value) = value else { continue };
                    if value.is_infinite() {
                        return Err(BarsError::Infinite { column, code: code(), date: date() });
                    }
                    if value < 0.0 {
                        return Err(BarsError::NegativeQuantity { column, code: code(), date: date(), value });
                    }
                }
                if self.high[row] < self.low[row] {
                    return Err(BarsError::HighBelowLow {
                        code: code(),
                        date: date(),
                        high: self.high[row],
                        low: self.low[row],
                    });
                }
            }
        }
        Ok(())
    }

    pub fn calendar(&self) -> &TradingCalendar {
        &self.calendar
    }

    /// Stock codes, sorted; a stock's id is its index here.
    pub fn codes(&self) -> &[String] {
        &self.codes
    }

    pub fn rows(&self) -> usize {
        self.day.len()
    }

    /// Row range of stock `stock` (sorted by trading day).
    pub fn stock_rows(&self, stock: usize) -> Range<usize> {
        self.stock_rows[stock].clone()
    }

    /// Trading-day index of each row.
    pub fn day(&self) -> &[u32] {
        &self.day
    }

    pub fn close(&self) -> &[f64] {
        &self.close
    }

    pub fn has_turnover(&self) -> bool {
        self.turnover.is_some()
    }

    /// The bars known at the close of trading day `last_day`: every row dated later is
    /// dropped, and so is every stock with no row left, exactly as if the input file had
    /// ended that day. Used to prove that features never look ahead.
    pub fn truncated(&self, last_day: usize) -> Self {
        let keep = |row: &usize| self.day[*row] as usize <= last_day;
        let mut rows = Vec::new();
        let mut codes = Vec::new();
        let mut stock_rows = Vec::new();
        for (stock, range) in self.stock_rows.iter().enumerate() {
            let start = rows.len();
            rows.extend(range.clone().filter(keep));
            if rows.len() > start {
                codes.push(self.codes[stock].clone());
                stock_rows.push(start..rows.len());
            }
        }
        let gather = |values: &[f64]| rows.iter().map(|row| values[*row]).collect::<Vec<f64>>();
        // The calendar of the truncated input: the dates that still have a row.
        let last_kept = rows.iter().map(|row| self.day[*row] as usize).max().unwrap_or_default();
        Self {
            calendar: self.calendar.truncated(last_kept),
            codes,
            stock_rows,
            day: rows.iter().map(|row| self.day[*row]).collect(),
            open: gather(&self.open),
            high: gather(&self.high),
            low: gather(&self.low),
            close: gather(&self.close),
            volume: gather(&self.volume),
            turnover: self.turnover.as_deref().map(gather),
        }
    }
}

fn check_lengths(columns: &BarsColumns, rows: usize) -> Result<(), BarsError> {
    let lengths = [
        ("code", columns.code.len()),
        ("open", columns.open.len()),
        ("high", columns.high.len()),
        ("low", columns.low.len()),
        ("close", columns.close.len()),
        ("volume", columns.volume.len()),
        ("turnover", columns.turnover.as_ref().map_or(rows, Vec::len)),
    ];
    for (column, found) in lengths {
        if found != rows {
            return Err(BarsError::LengthMismatch { column, expected: rows, found });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 1, d).expect("valid test date")
    }

    fn columns(rows: &[(u32, &str, f64)]) -> BarsColumns {
        BarsColumns {
            date: rows.iter().map(|r| date(r.0)).collect(),
            code: rows.iter().map(|r| r.1.to_string()).collect(),
            open: rows.iter().map(|r| r.2).collect(),
            high: rows.iter().map(|r| r.2 * 1.01).collect(),
            low: rows.iter().map(|r| r.2 * 0.99).collect(),
            close: rows.iter().map(|r| r.2).collect(),
            volume: rows.iter().map(|_| 100.0).collect(),
            turnover: None,
        }
    }

    #[test]
    fn rows_are_sorted_by_stock_then_day() {
        let bars = Bars::new(columns(&[(3, "B", 1.0), (2, "B", 2.0), (2, "A", 3.0)])).expect("valid bars");
        assert_eq!(bars.codes(), &["A".to_string(), "B".to_string()]);
        assert_eq!(bars.stock_rows(0), 0..1);
        assert_eq!(bars.stock_rows(1), 1..3);
        assert_eq!(bars.day(), &[0, 0, 1]);
        assert_eq!(bars.close(), &[3.0, 2.0, 1.0]);
    }

    #[test]
    fn bad_rows_are_refused_with_the_row_named() {
        let duplicate = Bars::new(columns(&[(2, "A", 1.0), (2, "A", 1.0)])).expect_err("duplicate");
        assert_eq!(duplicate.to_string(), "duplicate row for code A on 2024-01-02");
        let negative = Bars::new(columns(&[(2, "A", -1.0)])).expect_err("negative price");
        assert!(negative.to_string().starts_with("non-positive open -1 for code A on 2024-01-02"), "{negative}");
        assert_eq!(Bars::new(BarsColumns::default()).expect_err("empty"), BarsError::Empty);
        let mut inverted = columns(&[(2, "A", 1.0)]);
        inverted.high[0] = 0.5;
        assert!(matches!(Bars::new(inverted), Err(BarsError::HighBelowLow { .. })));
    }

    #[test]
    fn truncation_drops_later_rows_and_stocks_not_yet_listed() {
        let bars = Bars::new(columns(&[(2, "A", 1.0), (3, "A", 2.0), (3, "B", 3.0), (4, "B", 4.0)])).expect("valid");
        let known = bars.truncated(0);
        assert_eq!(known.codes(), &["A".to_string()]);
        assert_eq!(known.calendar().len(), 1);
        assert_eq!(known.close(), &[1.0]);
        let later = bars.truncated(1);
        assert_eq!(later.codes().len(), 2);
        assert_eq!(later.close(), &[1.0, 2.0, 3.0]);
        assert_eq!(later.stock_rows(1), 2..3);
    }

    #[test]
    fn null_prices_are_kept_as_nan() {
        let mut input = columns(&[(2, "A", 1.0), (3, "A", 1.0)]);
        input.close[1] = f64::NAN;
        let bars = Bars::new(input).expect("null close is allowed");
        assert!(bars.close()[1].is_nan());
    }
}
