//! The files of the external-trainer protocol (`docs/TRAINERS.md`): the `train.parquet`
//! and `score.parquet` a worker writes into a job's directory, and the `scores.parquet`
//! the trainer writes back, read with every check before a value is used.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use polars::prelude::*;
use wf_shared::Panel;
use wf_shared::panel::target_name;

use crate::DataError;
use crate::column::{date_column, f32_column, f64_column, write_parquet};

/// The column that marks a training row as a validation day.
pub const VALIDATION_COLUMN: &str = "validation";

/// Bytes a score file may take per row and score column beyond its keys, and per row for
/// the keys (a date and a stock code): a bound far above what Parquet needs, so a file
/// larger than it is refused before it is read.
const BYTES_PER_SCORE: u64 = 16;
const BYTES_PER_KEY: u64 = 96;
/// What a score file may take beyond its rows (Parquet's footer and schema).
const BYTES_OVERHEAD: u64 = 1 << 20;
/// The longest stock code a score file may hold.
const MAX_CODE_BYTES: usize = 256;

/// The panel rows of `days` (a panel is sorted by day).
fn rows_of(panel: &Panel, days: &Range<usize>) -> Range<usize> {
    if days.is_empty() {
        return 0..0;
    }
    panel.rows_of_day(days.start).start..panel.rows_of_day(days.end - 1).end
}

/// The `date`, `code` and feature columns of `rows` of `panel`.
fn key_and_feature_columns(panel: &Panel, rows: &[Range<usize>]) -> Vec<Column> {
    let each = || rows.iter().flat_map(Clone::clone);
    let calendar = panel.calendar();
    let dates = each().map(|row| calendar.date(panel.day()[row] as usize).unwrap_or_default());
    let codes: Vec<&str> = each().map(|row| panel.codes()[panel.stock()[row] as usize].as_str()).collect();
    let mut columns = vec![
        date_column("date", dates),
        StringChunked::from_iter_values("code".into(), codes.into_iter()).into_column(),
    ];
    for (name, values) in panel.feature_names().iter().zip(panel.features()) {
        let picked: Vec<f32> = each().map(|row| values[row]).collect();
        columns.push(f32_column(name, &picked));
    }
    columns
}

fn write(path: &Path, columns: Vec<Column>) -> Result<(), DataError> {
    let mut frame = DataFrame::new_infer_height(columns).map_err(|error| DataError::unwritable(path, error))?;
    write_parquet(path, &mut frame, Vec::new())
}

/// Writes a job's training file: the rows of the `fit` days then of the `validation` days
/// of `panel` (the days between them, the purge gap, left out), with `date`, `code`, every
/// feature, the target `fwd_ret_{h}` of each of `horizons` (null where missing) and
/// [`VALIDATION_COLUMN`]. Returns the rows written.
pub fn write_train(
    path: &Path,
    panel: &Panel,
    fit: Range<usize>,
    validation: Range<usize>,
    horizons: &[u32],
) -> Result<usize, DataError> {
    let rows = [rows_of(panel, &fit), rows_of(panel, &validation)];
    let mut columns = key_and_feature_columns(panel, &rows);
    for horizon in horizons {
        let target = panel.target(*horizon).ok_or_else(|| DataError::Invalid {
            path: path.to_path_buf(),
            reason: format!("the panel has no target for horizon {horizon}"),
        })?;
        let picked: Vec<f64> = rows.iter().flat_map(Clone::clone).map(|row| target[row]).collect();
        columns.push(f64_column(&target_name(*horizon), &picked));
    }
    let marks = rows[0].clone().map(|_| false).chain(rows[1].clone().map(|_| true));
    columns.push(BooleanChunked::from_iter_values(VALIDATION_COLUMN.into(), marks).into_column());
    write(path, columns)?;
    Ok(rows.iter().map(ExactSizeIterator::len).sum())
}

/// Writes a job's score file: the rows of `days` of `panel`, with `date`, `code` and every
/// feature, and no target. Returns the rows written.
pub fn write_score(path: &Path, panel: &Panel, days: Range<usize>) -> Result<usize, DataError> {
    let rows = [rows_of(panel, &days)];
    write(path, key_and_feature_columns(panel, &rows))?;
    Ok(rows[0].len())
}

/// The column names of a Parquet file (its schema, read from the footer only).
pub fn column_names(path: &Path) -> Result<Vec<String>, DataError> {
    let file = std::fs::File::open(path).map_err(|error| DataError::unreadable(path, error))?;
    let schema = ParquetReader::new(file).schema().map_err(|error| DataError::unreadable(path, error))?;
    Ok(schema.iter_names().map(|name| name.to_string()).collect())
}

/// Reads a trainer's score file for the rows of `days` of `panel`: one score column per
/// entry of `horizons`, each aligned with the panel's rows of `days`. The file holds
/// `date`, `code`, and either one `score` column (used for every horizon) or one
/// `score_{h}` column per horizon, and nothing else. Refused, naming the file and the
/// column: a file larger than its rows allow (before it is read), a row count other than
/// the score file's, a date or code not among the scored rows or given twice, and a score
/// that is null or not finite where the panel has a feature value (a row without any may
/// be left unscored: it is left out of that day's metrics).
pub fn read_scores(
    path: &Path,
    panel: &Panel,
    days: Range<usize>,
    horizons: &[u32],
) -> Result<Vec<Vec<f64>>, DataError> {
    let invalid = |reason: String| DataError::Invalid { path: path.to_path_buf(), reason };
    let rows = rows_of(panel, &days);
    let size = std::fs::metadata(path).map_err(|error| DataError::unreadable(path, error))?.len();
    let most = BYTES_OVERHEAD + rows.len() as u64 * (BYTES_PER_KEY + BYTES_PER_SCORE * horizons.len() as u64);
    if size > most {
        return Err(invalid(format!(
            "is {size} bytes, more than the {most} that {} rows of {} scores allow",
            rows.len(),
            horizons.len()
        )));
    }
    let file = std::fs::File::open(path).map_err(|error| DataError::unreadable(path, error))?;
    let mut reader = ParquetReader::new(file);
    let found_rows = reader.num_rows().map_err(|error| DataError::unreadable(path, error))?;
    if found_rows != rows.len() {
        return Err(invalid(format!("has {found_rows} rows, but the score file has {} (one per row)", rows.len())));
    }
    // Its data as declared uncompressed, within the same bound (a file that understates it
    // fails to decode rather than grow).
    let declared: u64 = reader
        .get_metadata()
        .map_err(|error| DataError::unreadable(path, error))?
        .row_groups
        .iter()
        .map(|group| group.total_byte_size() as u64)
        .sum();
    if declared > most {
        return Err(invalid(format!(
            "holds {declared} bytes uncompressed, more than the {most} that {} rows of {} scores allow",
            rows.len(),
            horizons.len()
        )));
    }
    let names: Vec<String> = reader
        .schema()
        .map_err(|error| DataError::unreadable(path, error))?
        .iter_names()
        .map(|n| n.to_string())
        .collect();
    let single = names.iter().any(|n| n == "score");
    let wanted: Vec<String> =
        if single { vec!["score".to_string()] } else { horizons.iter().map(|h| format!("score_{h}")).collect() };
    for name in ["date", "code"].iter().map(ToString::to_string).chain(wanted.iter().cloned()) {
        if !names.contains(&name) {
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name,
                found: crate::column::column_list(&names),
            });
        }
    }
    if let Some(extra) = names.iter().find(|n| !["date", "code"].contains(&n.as_str()) && !wanted.contains(n)) {
        return Err(invalid(format!(
            "column {extra}: not a column of a score file (date, code, and score or score_{{h}} for each horizon)"
        )));
    }
    let frame = reader.finish().map_err(|error| DataError::unreadable(path, error))?;
    if frame.height() != rows.len() {
        return Err(invalid(format!(
            "has {} rows, but the score file has {} (one per row)",
            frame.height(),
            rows.len()
        )));
    }
    // Codes are compared before any is copied out: a long one (shared by every row of a
    // dictionary) is refused here.
    let longest = frame
        .column("code")
        .ok()
        .and_then(|codes| {
            let codes = codes.as_materialized_series().str().ok()?;
            codes.iter().map(|code| code.map_or(0, str::len)).max()
        })
        .unwrap_or(0);
    if longest > MAX_CODE_BYTES {
        return Err(invalid(format!("column code: a code of {longest} bytes (at most {MAX_CODE_BYTES})")));
    }
    for name in &wanted {
        let dtype = frame.column(name).map(|c| c.dtype().clone()).unwrap_or(DataType::Null);
        if !(dtype.is_float() || dtype.is_integer()) {
            return Err(DataError::WrongType {
                path: path.to_path_buf(),
                column: name.clone(),
                found: dtype.to_string(),
                expected: "a number (float or integer)",
            });
        }
    }
    let date_type = frame.column("date").map(|c| c.dtype().clone()).unwrap_or(DataType::Null);
    if date_type != DataType::Date {
        return Err(DataError::WrongType {
            path: path.to_path_buf(),
            column: "date".into(),
            found: date_type.to_string(),
            expected: "a date",
        });
    }
    let dates = crate::column::dates(&frame, "date", path)?;
    let codes = crate::column::strings(&frame, "code", path)?;
    let calendar = panel.calendar();
    // (day, code) → panel row, for the scored rows.
    let mut expected: HashMap<(usize, &str), usize> = HashMap::with_capacity(rows.len());
    for row in rows.clone() {
        expected.insert((panel.day()[row] as usize, panel.codes()[panel.stock()[row] as usize].as_str()), row);
    }
    let mut place = vec![usize::MAX; rows.len()];
    for (index, (date, code)) in dates.iter().zip(&codes).enumerate() {
        let day = calendar.index_of(*date).filter(|day| days.contains(day));
        let Some(row) = day.and_then(|day| expected.get(&(day, code.as_str()))) else {
            return Err(invalid(format!(
                "column code: row {index} scores {code:?} on {date}, which is not a row of the score file"
            )));
        };
        if place[row - rows.start] != usize::MAX {
            return Err(invalid(format!("column code: row {index} scores {code:?} on {date} a second time")));
        }
        place[row - rows.start] = index;
    }
    // Equal counts and no repeats: every scored row is placed (checked all the same).
    if let Some(offset) = place.iter().position(|p| *p == usize::MAX) {
        let row = rows.start + offset;
        return Err(invalid(format!(
            "column code: {:?} on {} has no score",
            panel.codes()[panel.stock()[row] as usize],
            calendar.date(panel.day()[row] as usize).unwrap_or_default()
        )));
    }
    let has_features = |row: usize| panel.features().iter().any(|values| values[row].is_finite());
    let mut columns = Vec::with_capacity(horizons.len());
    for name in &wanted {
        let values = crate::column::f64s(&frame, name, path)?;
        let mut aligned = vec![f64::NAN; rows.len()];
        for (offset, slot) in aligned.iter_mut().enumerate() {
            let value = values[place[offset]];
            let row = rows.start + offset;
            if !value.is_finite() && has_features(row) {
                let date = calendar.date(panel.day()[row] as usize).unwrap_or_default();
                return Err(invalid(format!(
                    "column {name}: {value} for {:?} on {date}, where the panel has features (a score must be finite)",
                    panel.codes()[panel.stock()[row] as usize]
                )));
            }
            *slot = value;
        }
        columns.push(aligned);
    }
    if single {
        let only = columns.pop().unwrap_or_default();
        return Ok(vec![only; horizons.len()]);
    }
    Ok(columns)
}
