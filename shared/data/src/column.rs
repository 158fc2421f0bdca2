//! Moving columns between polars and plain vectors (`NaN` for a null number).

use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::*;

use crate::DataError;

/// Days between 0001-01-01 (chrono's day 1 of the common era) and 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

pub(crate) fn date_from_epoch_days(days: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(days + EPOCH_DAYS_FROM_CE).unwrap_or_default()
}

pub(crate) fn epoch_days(date: NaiveDate) -> i32 {
    use chrono::Datelike;
    date.num_days_from_ce() - EPOCH_DAYS_FROM_CE
}

/// Opens a file lazily by its format.
pub(crate) fn scan(path: &Path) -> Result<LazyFrame, DataError> {
    let metadata = std::fs::metadata(path).map_err(|error| DataError::unreadable(path, error))?;
    if metadata.is_dir() {
        return Err(DataError::Unreadable { path: path.to_path_buf(), reason: "is a directory".into() });
    }
    if metadata.len() == 0 {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    // Fail early with the OS's reason (permissions) rather than polars' wording.
    std::fs::File::open(path).map_err(|error| DataError::unreadable(path, error))?;
    let location = PlRefPath::new(path.to_string_lossy().as_ref());
    match crate::FileFormat::of(path)? {
        crate::FileFormat::Parquet => LazyFrame::scan_parquet(location, ScanArgsParquet::default())
            .map_err(|error| DataError::unreadable(path, error)),
        crate::FileFormat::Csv => {
            let text_columns = Schema::from_iter([Field::new("code".into(), DataType::String)]);
            LazyCsvReader::new(location)
                .with_try_parse_dates(true)
                .with_infer_schema_length(Some(10_000))
                .with_dtype_overwrite(Some(Arc::new(text_columns)))
                .finish()
                .map_err(|error| DataError::unreadable(path, error))
        }
    }
}

pub(crate) fn is_numeric(dtype: &DataType) -> bool {
    dtype.is_primitive_numeric()
}

fn series<'a>(frame: &'a DataFrame, name: &str, path: &Path) -> Result<&'a Series, DataError> {
    frame.column(name).map(Column::as_materialized_series).map_err(|_| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: name.into(),
        found: column_list(frame.get_column_names().iter().map(|n| n.as_str())),
    })
}

pub(crate) fn column_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names.into_iter().map(|n| n.as_ref().to_string()).collect::<Vec<_>>().join(", ")
}

/// A numeric column as `f64`, nulls (and NaN) as `NaN`.
pub(crate) fn f64s(frame: &DataFrame, name: &str, path: &Path) -> Result<Vec<f64>, DataError> {
    let values =
        series(frame, name, path)?.cast(&DataType::Float64).map_err(|error| DataError::unreadable(path, error))?;
    let values = values.f64().map_err(|error| DataError::unreadable(path, error))?;
    Ok(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// A date column; a null date is an error naming the column.
pub(crate) fn dates(frame: &DataFrame, name: &str, path: &Path) -> Result<Vec<NaiveDate>, DataError> {
    let days = series(frame, name, path)?.cast(&DataType::Int32).map_err(|error| DataError::unreadable(path, error))?;
    let days = days.i32().map_err(|error| DataError::unreadable(path, error))?;
    if days.null_count() > 0 {
        return Err(null_key(path, name, days.null_count(), days.iter().position(|d| d.is_none())));
    }
    Ok(days.into_no_null_iter().map(date_from_epoch_days).collect())
}

/// A text column; a null is an error naming the column.
pub(crate) fn strings(frame: &DataFrame, name: &str, path: &Path) -> Result<Vec<String>, DataError> {
    let values =
        series(frame, name, path)?.cast(&DataType::String).map_err(|error| DataError::unreadable(path, error))?;
    let values = values.str().map_err(|error| DataError::unreadable(path, error))?;
    if values.null_count() > 0 {
        return Err(null_key(path, name, values.null_count(), values.iter().position(|v| v.is_none())));
    }
    Ok(values.iter().map(|v| v.unwrap_or_default().to_string()).collect())
}

fn null_key(path: &Path, column: &str, count: usize, first_row: Option<usize>) -> DataError {
    DataError::NullKey {
        path: path.to_path_buf(),
        column: column.into(),
        count,
        first_row: first_row.unwrap_or_default(),
    }
}

pub(crate) fn date_column(name: &str, dates: impl Iterator<Item = NaiveDate>) -> Column {
    Int32Chunked::from_iter_values(name.into(), dates.map(epoch_days)).into_date().into_column()
}

/// A column of `values`, a value that is not finite being null. Built from a copy of the
/// values and a validity bitmap: one option per element through polars' builder took a
/// tenth of writing a 10 M-row panel.
pub(crate) fn f64_column(name: &str, values: &[f64]) -> Column {
    Float64Chunked::from_vec_validity(name.into(), values.to_vec(), finite(values.iter().map(|v| v.is_finite())))
        .into_column()
}

/// [`f64_column`] of `f32` values.
pub(crate) fn f32_column(name: &str, values: &[f32]) -> Column {
    Float32Chunked::from_vec_validity(name.into(), values.to_vec(), finite(values.iter().map(|v| v.is_finite())))
        .into_column()
}

/// The validity bitmap of `valid`, or none when every value is.
fn finite(valid: impl Iterator<Item = bool>) -> Option<polars_arrow::bitmap::Bitmap> {
    let bitmap = polars_arrow::bitmap::Bitmap::from_iter(valid);
    (bitmap.unset_bits() > 0).then_some(bitmap)
}

pub(crate) fn write_parquet(
    path: &Path,
    frame: &mut DataFrame,
    metadata: Vec<(String, String)>,
) -> Result<(), DataError> {
    let file = std::fs::File::create(path).map_err(|error| DataError::unwritable(path, error))?;
    // LZ4 without column statistics: on the jp_tse1000 panel this writes in 0.38 s
    // against 1.3 s for zstd with statistics (`examples/write_speed.rs`), for a file 12%
    // larger. Nothing reads the statistics: panels are always read whole.
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Lz4Raw)
        .with_statistics(StatisticsOptions::empty())
        .with_key_value_metadata(Some(KeyValueMetadata::from_static(metadata)))
        .finish(frame)
        .map_err(|error| DataError::unwritable(path, error))?;
    Ok(())
}

/// Rows of each batch [`write_parquet_batches`] builds and writes.
pub(crate) const WRITE_BATCH_ROWS: usize = 1 << 20;

/// Writes a table of `rows` rows as Parquet (with [`write_parquet`]'s settings), one
/// batch of at most [`WRITE_BATCH_ROWS`] rows at a time: `batch(range)` builds the
/// frame of those rows, so only one batch is ever copied out of the caller's columns.
pub(crate) fn write_parquet_batches(
    path: &Path,
    rows: usize,
    metadata: Vec<(String, String)>,
    batch: impl Fn(std::ops::Range<usize>) -> PolarsResult<DataFrame>,
) -> Result<(), DataError> {
    let unwritable = |error: PolarsError| DataError::unwritable(path, error);
    let file = std::fs::File::create(path).map_err(|error| DataError::unwritable(path, error))?;
    let first = batch(0..rows.min(WRITE_BATCH_ROWS)).map_err(unwritable)?;
    let mut writer = ParquetWriter::new(file)
        .with_compression(ParquetCompression::Lz4Raw)
        .with_statistics(StatisticsOptions::empty())
        .with_key_value_metadata(Some(KeyValueMetadata::from_static(metadata)))
        .batched(first.schema())
        .map_err(unwritable)?;
    writer.write_batch(&first).map_err(unwritable)?;
    drop(first);
    for start in (WRITE_BATCH_ROWS..rows).step_by(WRITE_BATCH_ROWS) {
        let frame = batch(start..rows.min(start + WRITE_BATCH_ROWS)).map_err(unwritable)?;
        writer.write_batch(&frame).map_err(unwritable)?;
    }
    writer.finish().map_err(unwritable)?;
    Ok(())
}

/// The key-value metadata of a Parquet file (empty for other formats).
pub(crate) fn key_value_metadata(path: &Path) -> Result<Vec<(String, String)>, DataError> {
    if crate::FileFormat::of(path)? != crate::FileFormat::Parquet {
        return Ok(Vec::new());
    }
    let file = std::fs::File::open(path).map_err(|error| DataError::unreadable(path, error))?;
    let mut reader = ParquetReader::new(file);
    let metadata = reader.get_metadata().map_err(|error| DataError::unreadable(path, error))?;
    Ok(metadata
        .key_value_metadata()
        .iter()
        .flatten()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect())
}

/// The `date` and `code` columns of a table as row keys: the trading calendar of its
/// dates, its codes sorted, and each row's day and stock index.
#[derive(Debug)]
pub(crate) struct RowKeys {
    pub names: Vec<String>,
    pub calendar: wf_shared::TradingCalendar,
    pub codes: Vec<String>,
    pub day: Vec<u32>,
    pub stock: Vec<u32>,
}

/// Checks that `frame` has a date column and a code column, and reads its row keys.
pub(crate) fn row_keys(frame: &DataFrame, path: &Path) -> Result<RowKeys, DataError> {
    let names: Vec<String> = frame.get_column_names().iter().map(|n| n.to_string()).collect();
    for required in ["date", "code"] {
        if !names.iter().any(|n| n == required) {
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: required.into(),
                found: column_list(&names),
            });
        }
    }
    let date_type = frame.column("date").map(|c| c.dtype().clone()).unwrap_or(DataType::Null);
    if !matches!(date_type, DataType::Date | DataType::Datetime(..)) {
        return Err(DataError::WrongType {
            path: path.to_path_buf(),
            column: "date".into(),
            found: date_type.to_string(),
            expected: "a date (YYYY-MM-DD)",
        });
    }
    let dates = dates(frame, "date", path)?;
    let codes_by_row = strings(frame, "code", path)?;
    let calendar = wf_shared::TradingCalendar::from_dates(dates.clone());
    let mut codes = codes_by_row.clone();
    codes.sort_unstable();
    codes.dedup();
    let day = dates.iter().map(|d| calendar.index_of(*d).unwrap_or_default() as u32).collect();
    let stock = codes_by_row.iter().map(|c| codes.binary_search(c).unwrap_or_default() as u32).collect();
    Ok(RowKeys { names, calendar, codes, day, stock })
}

/// A CSV table with a header row (`name` for messages) as a Parquet file: column types
/// inferred from every row, ISO dates parsed as dates, empty fields as nulls.
pub fn csv_to_parquet(name: &str, csv: &[u8]) -> Result<Vec<u8>, DataError> {
    let path = Path::new(name);
    // Only a column named `date` holds dates: trying every text column as a date (polars'
    // try_parse_dates) spent most of a report's time on names like "K10 weekly".
    let header = csv.split(|b| *b == b'\n').next().unwrap_or_default();
    let has_date = header.split(|b| *b == b',').any(|name| name.trim_ascii() == b"date");
    let dates = has_date.then(|| Arc::new(Schema::from_iter([Field::new("date".into(), DataType::Date)])));
    let mut frame = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .with_schema_overwrite(dates)
        .into_reader_with_file_handle(std::io::Cursor::new(csv.to_vec()))
        .finish()
        .map_err(|error| DataError::unreadable(path, error))?;
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut frame)
        .map_err(|error| DataError::unwritable(path, error))?;
    Ok(bytes)
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn a_csv_table_becomes_parquet_with_typed_columns_and_nulls() {
        let csv = b"window,model,date,mean,flag\n126,\"a,b\",2021-08-02,0.5,1\n252,c,2021-08-03,,0\n";
        let bytes = csv_to_parquet("t.csv", csv).expect("converts");
        let frame = ParquetReader::new(std::io::Cursor::new(bytes)).finish().expect("reads back");
        assert_eq!(frame.shape(), (2, 5));
        let dtype = |name: &str| frame.column(name).map(|c| c.dtype().clone()).expect("column");
        assert_eq!(dtype("window"), DataType::Int64);
        assert_eq!(dtype("date"), DataType::Date);
        assert_eq!(dtype("mean"), DataType::Float64);
        assert_eq!(frame.column("mean").expect("mean").null_count(), 1);
        assert_eq!(frame.column("model").expect("model").str().expect("text").get(0), Some("a,b"));
    }
}
