//! Panels on disk: one Parquet file, sorted by (date, code), with columns
//! `date, code, <features…>, fwd_ret_<h>…`. Features are Float32 robust z-scores,
//! targets Float64 returns; nulls are nulls. The file's key-value metadata records the
//! content hash at write time, but readers recompute it: a file is never trusted.

use std::path::Path;

use polars::prelude::*;
use wf_shared::dataset::{DatasetHash, content_hash};
use wf_shared::panel::{Panel, PanelParts, target_name};

use crate::DataError;
use crate::column;

/// Prefix of target columns; the rest of the name is the horizon in trading days.
pub const TARGET_PREFIX: &str = "fwd_ret_";

/// Writes `panel` and returns its content hash.
pub fn write_panel(path: &Path, panel: &Panel) -> Result<DatasetHash, DataError> {
    let hash = content_hash(panel);
    let calendar = panel.calendar();
    let mut columns = vec![
        column::date_column("date", panel.day().iter().map(|d| calendar.date(*d as usize).unwrap_or_default())),
        StringChunked::from_iter_values(
            "code".into(),
            panel.stock().iter().map(|s| panel.codes()[*s as usize].as_str()),
        )
        .into_column(),
    ];
    for (name, values) in panel.feature_names().iter().zip(panel.features()) {
        columns.push(column::f32_column(name, values));
    }
    for (horizon, values) in panel.horizons().iter().zip(panel.targets()) {
        columns.push(column::f64_column(&target_name(*horizon), values));
    }
    let mut frame = DataFrame::new(panel.rows(), columns).map_err(|error| DataError::unwritable(path, error))?;
    let metadata = vec![
        ("walkforward.kind".to_string(), "panel".to_string()),
        ("walkforward.content_hash".to_string(), hash.to_string()),
        ("walkforward.hash_format".to_string(), wf_shared::dataset::HASH_FORMAT.to_string()),
    ];
    column::write_parquet(path, &mut frame, metadata)?;
    Ok(hash)
}

/// Reads a panel file, validating its shape; every numeric column other than the
/// targets is a feature.
pub fn read_panel(path: &Path) -> Result<Panel, DataError> {
    let frame = column::scan(path)?.collect().map_err(|error| DataError::unreadable(path, error))?;
    let column::RowKeys { names, calendar, codes, day, stock } = column::row_keys(&frame, path)?;

    let mut parts = PanelParts {
        calendar,
        codes,
        day,
        stock,
        feature_names: Vec::new(),
        features: Vec::new(),
        horizons: Vec::new(),
        targets: Vec::new(),
    };
    for name in names.iter().filter(|n| *n != "date" && *n != "code") {
        let dtype = frame.column(name).map(|c| c.dtype().clone()).unwrap_or(DataType::Null);
        if !column::is_numeric(&dtype) {
            return Err(DataError::WrongType {
                path: path.to_path_buf(),
                column: name.clone(),
                found: dtype.to_string(),
                expected: "a number",
            });
        }
        let values = column::f64s(&frame, name, path)?;
        if let Some(horizon) = name.strip_prefix(TARGET_PREFIX) {
            let horizon = horizon.parse::<u32>().map_err(|_| DataError::Invalid {
                path: path.to_path_buf(),
                reason: format!("target column {name} does not end in a horizon in trading days"),
            })?;
            parts.horizons.push(horizon);
            parts.targets.push(values);
        } else {
            parts.feature_names.push(name.clone());
            parts.features.push(values.iter().map(|v| *v as f32).collect());
        }
    }
    Panel::new(parts).map_err(|source| DataError::Panel { path: path.to_path_buf(), source })
}
