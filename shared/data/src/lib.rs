//! `wf-data`: walkforward's data layer, the only crate that touches polars.
//!
//! It reads daily OHLCV (Parquet, CSV, csv.gz) into the pure domain's
//! [`wf_shared::BarsColumns`], writes and reads panels as Parquet, writes the synthetic
//! market, and checks data quality. All feature math lives in `wf-shared`; this crate
//! only moves columns between files and memory and reports what is wrong with them.

pub mod check;
mod column;
pub mod dataset;
pub mod ingest;
pub mod ohlcv;
pub mod panel_file;
pub mod planning;
pub mod prepare;
pub mod synth_file;
pub mod trainer_files;

pub use column::csv_to_parquet;

use std::path::{Path, PathBuf};

/// Why a data file could not be used. Every message is one line and names the file,
/// column or row at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Unwritable { path: PathBuf, reason: String },
    #[error("{path}: unknown file type (expected .parquet, .csv or .csv.gz)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: file is empty")]
    Empty { path: PathBuf },
    #[error("{path}: missing column {column} (found: {found})")]
    MissingColumn { path: PathBuf, column: String, found: String },
    #[error("{path}: column {column} has type {found}, expected {expected}")]
    WrongType { path: PathBuf, column: String, found: String, expected: &'static str },
    #[error("{path}: column {column} has {count} null values (first at row {first_row})")]
    NullKey { path: PathBuf, column: String, count: usize, first_row: usize },
    #[error("{path}: {source}")]
    Bars { path: PathBuf, source: wf_shared::BarsError },
    #[error("{path}: {source}")]
    Panel { path: PathBuf, source: wf_shared::panel::PanelError },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl DataError {
    /// Whether reading again could help: only when the file could not be read or
    /// written (an I/O error). A file outside the data roots, of the wrong kind or with
    /// wrong contents fails the same way every time.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unreadable { .. } | Self::Unwritable { .. })
    }

    /// Wraps a polars error as a one-line `Unreadable` error.
    /// This error, naming `path` instead of the path it was read through.
    pub(crate) fn with_path(self, path: &Path) -> Self {
        match self {
            Self::Unreadable { reason, .. } => Self::Unreadable { path: path.to_path_buf(), reason },
            Self::Invalid { reason, .. } => Self::Invalid { path: path.to_path_buf(), reason },
            other => other,
        }
    }

    pub(crate) fn unreadable(path: &Path, error: impl std::fmt::Display) -> Self {
        Self::Unreadable { path: path.to_path_buf(), reason: first_line(&error.to_string()) }
    }

    pub(crate) fn unwritable(path: &Path, error: impl std::fmt::Display) -> Self {
        Self::Unwritable { path: path.to_path_buf(), reason: first_line(&error.to_string()) }
    }
}

/// Polars errors can span lines (hints, backtraces); users get the first one.
fn first_line(text: &str) -> String {
    text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("unknown error").to_string()
}

/// The file formats walkforward reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    /// CSV, plain or gzip-compressed (detected from the content).
    Csv,
}

impl FileFormat {
    pub fn of(path: &Path) -> Result<Self, DataError> {
        // A file opened under the data roots is read through its handle
        // (`/proc/self/fd/N`); its name is the opened file's.
        let named = if path.starts_with("/proc/self/fd") { std::fs::read_link(path).ok() } else { None };
        let name = named.as_deref().unwrap_or(path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = name.to_ascii_lowercase();
        if name.ends_with(".parquet") || name.ends_with(".pq") {
            Ok(Self::Parquet)
        } else if name.ends_with(".csv") || name.ends_with(".csv.gz") {
            Ok(Self::Csv)
        } else {
            Err(DataError::UnknownFormat { path: path.to_path_buf() })
        }
    }
}
