//! Reading and writing daily OHLCV files.
//!
//! Columns `date, code, open, high, low, close, volume`, optional `turnover`, in any
//! order, with extra columns ignored. Numbers may be any numeric type; codes may be text
//! or integers (kept as text: `7203`, `141A`); dates are dates (CSV: `YYYY-MM-DD`).

use std::path::Path;

use polars::prelude::*;
use wf_shared::BarsColumns;

use crate::DataError;
use crate::column::{self, column_list, is_numeric};

pub const REQUIRED_COLUMNS: [&str; 7] = ["date", "code", "open", "high", "low", "close", "volume"];
const NUMBER_COLUMNS: [&str; 6] = ["open", "high", "low", "close", "volume", "turnover"];

/// Reads an OHLCV file into raw columns, checking names and types first.
pub fn read_ohlcv(path: &Path) -> Result<BarsColumns, DataError> {
    let mut frame = column::scan(path)?;
    let schema = frame.collect_schema().map_err(|error| DataError::unreadable(path, error))?;
    for required in REQUIRED_COLUMNS {
        if schema.get(required).is_none() {
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: required.into(),
                found: column_list(schema.iter_names()),
            });
        }
    }
    let first_row = frame.clone().slice(0, 1).collect().map_err(|error| DataError::unreadable(path, error))?;
    if first_row.height() == 0 {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let has_turnover = schema.get("turnover").is_some();
    let wrong = |column: &str, found: &DataType, expected| DataError::WrongType {
        path: path.to_path_buf(),
        column: column.into(),
        found: found.to_string(),
        expected,
    };
    let date_type = schema.get("date").cloned().unwrap_or(DataType::Null);
    if !matches!(date_type, DataType::Date | DataType::Datetime(..)) {
        return Err(wrong("date", &date_type, "a date (YYYY-MM-DD)"));
    }
    let code_type = schema.get("code").cloned().unwrap_or(DataType::Null);
    if !(code_type == DataType::String || code_type.is_integer()) {
        return Err(wrong("code", &code_type, "text or an integer"));
    }
    for name in NUMBER_COLUMNS.iter().filter(|n| **n != "turnover" || has_turnover) {
        let dtype = schema.get(name).cloned().unwrap_or(DataType::Null);
        // A CSV column read as text (its first rows, which set the type, were empty: a
        // turnover column filled in later) is a number column if every value parses.
        let text_of_numbers = dtype == DataType::String
            && frame.clone().select([col(*name).strict_cast(DataType::Float64)]).collect().is_ok();
        if !is_numeric(&dtype) && !text_of_numbers {
            return Err(wrong(name, &dtype, "a number"));
        }
    }

    let mut selection = vec![col("date").cast(DataType::Date), col("code").cast(DataType::String)];
    selection.extend(
        NUMBER_COLUMNS.iter().filter(|n| **n != "turnover" || has_turnover).map(|n| col(*n).cast(DataType::Float64)),
    );
    let frame = frame.select(selection).collect().map_err(|error| DataError::unreadable(path, error))?;
    if frame.height() == 0 {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(BarsColumns {
        date: column::dates(&frame, "date", path)?,
        code: column::strings(&frame, "code", path)?,
        open: column::f64s(&frame, "open", path)?,
        high: column::f64s(&frame, "high", path)?,
        low: column::f64s(&frame, "low", path)?,
        close: column::f64s(&frame, "close", path)?,
        volume: column::f64s(&frame, "volume", path)?,
        turnover: if has_turnover { Some(column::f64s(&frame, "turnover", path)?) } else { None },
    })
}

/// Writes raw OHLCV columns as Parquet (rows as given).
pub fn write_ohlcv(path: &Path, bars: &BarsColumns) -> Result<(), DataError> {
    let rows = bars.date.len();
    let mut columns = vec![
        column::date_column("date", bars.date.iter().copied()),
        StringChunked::from_iter_values("code".into(), bars.code.iter().map(String::as_str)).into_column(),
        column::f64_column("open", &bars.open),
        column::f64_column("high", &bars.high),
        column::f64_column("low", &bars.low),
        column::f64_column("close", &bars.close),
        column::f64_column("volume", &bars.volume),
    ];
    if let Some(turnover) = &bars.turnover {
        columns.push(column::f64_column("turnover", turnover));
    }
    let mut frame = DataFrame::new(rows, columns).map_err(|error| DataError::unwritable(path, error))?;
    column::write_parquet(path, &mut frame, vec![("walkforward.kind".into(), "ohlcv".into())])
}
