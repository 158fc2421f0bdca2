//! Panels on disk: one Parquet file, sorted by (date, code), with columns
//! `date, code, <features…>, fwd_ret_<h>…, adv_20`. Features are Float32 robust
//! z-scores, targets Float64 returns, `adv_20` the raw 20-day mean traded value the
//! backtest's impact cost reads (never a feature unless a spec names it); nulls are nulls. The file's key-value metadata records the
//! content hash at write time (readers recompute it: a file is never trusted) and
//! declares the feature and target columns (`walkforward.features`,
//! `walkforward.targets`, JSON arrays of names).
//!
//! Features are only ever declared: by the spec (`dataset.features`), else by the file's
//! metadata. A panel that declares none (a user's own file) is refused until the spec
//! names them; other numeric columns are never read as features by accident. Every
//! declared feature is checked by `wf_shared::label_guard` (no label-like names, no
//! copies of a target).

use std::path::Path;

use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use wf_shared::dataset::{DatasetHash, PanelDigests};
use wf_shared::panel::{ADV_COLUMN, Panel, PanelParts, target_name};

use crate::DataError;
use crate::column;

/// Prefix of target columns; the rest of the name is the horizon in trading days.
pub const TARGET_PREFIX: &str = "fwd_ret_";

/// Metadata key of the declared feature columns.
pub const FEATURES_KEY: &str = "walkforward.features";
/// Metadata key of the declared target columns.
pub const TARGETS_KEY: &str = "walkforward.targets";
/// Metadata key of the panel's [`PanelSummary`].
pub const SUMMARY_KEY: &str = "walkforward.summary";

/// What planning reads of a panel, recorded in its file's metadata so that planning
/// reads no value: the trading calendar, the stocks with a row on each day, and the
/// digests its content hash is combined from (the hash of any feature subset). Readers
/// of the values recompute the hash (workers refuse a mismatch), so a file changed after
/// it was written is caught where its values are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PanelSummary {
    pub stocks: usize,
    pub dates: Vec<chrono::NaiveDate>,
    pub daily_universe: Vec<usize>,
    pub digests: PanelDigests,
    /// The stock codes, sorted (the panel's stock indices): what a read of some days only
    /// ([`read_panel_days`]) numbers its stocks with. Empty in summaries written before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
    /// The features whose mean same-day RankIC with a target is implausibly high
    /// (`wf_shared::label_guard::lookahead_suspects`), found when the file was written;
    /// `None` in summaries written before the check existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<Vec<wf_shared::label_guard::LookaheadSuspect>>,
}

impl PanelSummary {
    pub fn of(panel: &Panel) -> Self {
        Self {
            stocks: panel.codes().len(),
            dates: panel.calendar().dates().to_vec(),
            daily_universe: panel.daily_universe(),
            digests: PanelDigests::of(panel),
            codes: panel.codes().to_vec(),
            lookahead: Some(wf_shared::label_guard::lookahead_suspects(panel)),
        }
    }
}

/// Writes `panel` and returns its content hash. The file is written in batches of rows
/// (`column::WRITE_BATCH_ROWS`), so writing copies one batch at a time.
pub fn write_panel(path: &Path, panel: &Panel) -> Result<DatasetHash, DataError> {
    let summary = PanelSummary::of(panel);
    let hash = summary.digests.hash();
    let targets: Vec<String> = panel.horizons().iter().map(|h| target_name(*h)).collect();
    let metadata = vec![
        ("walkforward.kind".to_string(), "panel".to_string()),
        ("walkforward.content_hash".to_string(), hash.to_string()),
        ("walkforward.hash_format".to_string(), wf_shared::dataset::HASH_FORMAT.to_string()),
        (FEATURES_KEY.to_string(), serde_json::to_string(panel.feature_names()).unwrap_or_default()),
        (TARGETS_KEY.to_string(), serde_json::to_string(&targets).unwrap_or_default()),
        (SUMMARY_KEY.to_string(), serde_json::to_string(&summary).unwrap_or_default()),
    ];
    let calendar = panel.calendar();
    column::write_parquet_batches(path, panel.rows(), metadata, |rows| {
        let mut columns = vec![
            column::date_column(
                "date",
                panel.day()[rows.clone()].iter().map(|d| calendar.date(*d as usize).unwrap_or_default()),
            ),
            StringChunked::from_iter_values(
                "code".into(),
                panel.stock()[rows.clone()].iter().map(|s| panel.codes()[*s as usize].as_str()),
            )
            .into_column(),
        ];
        // Column by column over the cores.
        let features: Vec<Column> = (panel.feature_names(), panel.features())
            .into_par_iter()
            .map(|(name, values)| column::f32_column(name, &values[rows.clone()]))
            .collect();
        let targets: Vec<Column> = (panel.horizons(), panel.targets())
            .into_par_iter()
            .map(|(horizon, values)| column::f64_column(&target_name(*horizon), &values[rows.clone()]))
            .collect();
        columns.extend(features);
        columns.extend(targets);
        if let Some(adv) = panel.adv() {
            columns.push(column::f64_column(ADV_COLUMN, &adv[rows.clone()]));
        }
        DataFrame::new(rows.len(), columns)
    })?;
    Ok(hash)
}

/// The summary a panel file's metadata records, for the panel with the features
/// `features` (else the declared ones); `None` when the file records none (written
/// before summaries, or by another tool) or lacks one of `features`: then read it whole.
pub fn read_summary(path: &Path, features: Option<&[String]>) -> Result<Option<PanelSummary>, DataError> {
    let invalid = |reason: String| DataError::Invalid { path: path.to_path_buf(), reason };
    let metadata = column::key_value_metadata(path)?;
    let value = |key: &str| metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let Some(text) = value(SUMMARY_KEY) else {
        return Ok(None);
    };
    let mut summary: PanelSummary =
        serde_json::from_str(text).map_err(|e| invalid(format!("metadata {SUMMARY_KEY} is unreadable: {e}")))?;
    if summary.daily_universe.len() != summary.dates.len()
        || summary.daily_universe.iter().sum::<usize>() as u64 != summary.digests.rows
    {
        return Err(invalid(format!("metadata {SUMMARY_KEY} does not describe one panel")));
    }
    // A summary written before per-day digests existed cannot give job identities.
    if !summary.digests.has_days(summary.dates.len()) {
        return Ok(None);
    }
    let Some(digests) = (match features {
        Some(names) => summary.digests.select(names),
        None => Some(summary.digests.clone()),
    }) else {
        return Ok(None);
    };
    for (name, _) in &digests.features {
        wf_shared::label_guard::check_feature_name(name).map_err(|refusal| invalid(refusal.to_string()))?;
    }
    summary.digests = digests;
    Ok(Some(summary))
}

/// Reads a panel file, validating its shape. The features are `features` when given,
/// else the ones the file's metadata declares; every `fwd_ret_<h>` column is a target.
pub fn read_panel(path: &Path, features: Option<&[String]>) -> Result<Panel, DataError> {
    let declared = declared_features(path, features)?;
    let frame = column::scan(path)?.collect().map_err(|error| DataError::unreadable(path, error))?;
    let column::RowKeys { names, calendar, codes, day, stock } = column::row_keys(&frame, path)?;
    panel_of_frame(path, frame, &names, &declared, (calendar, codes, day, stock))
}

/// The rows of the trading days `days` (indices on the panel's calendar) of a panel file,
/// as a panel on the whole calendar and codes its summary records (so day and stock
/// indices mean what they mean on the whole panel: [`Panel::days`] of it), read without
/// the other days' values; with the summary it was numbered by. `None` when the file's
/// metadata records no summary with its codes (written before them): read it whole.
/// The values are not checked against the summary's digests here (the caller compares
/// them with the digests it planned on).
pub fn read_panel_days(
    path: &Path,
    features: Option<&[String]>,
    days: std::ops::Range<usize>,
) -> Result<Option<(Panel, PanelSummary)>, DataError> {
    let invalid = |reason: String| DataError::Invalid { path: path.to_path_buf(), reason };
    let Some(summary) = read_summary(path, features)? else { return Ok(None) };
    if summary.codes.is_empty() || summary.codes.len() != summary.stocks {
        return Ok(None);
    }
    let declared = declared_features(path, features)?;
    let end = days.end.min(summary.dates.len());
    let start = days.start.min(end);
    let (first, last) = match (summary.dates.get(start), end.checked_sub(1).and_then(|e| summary.dates.get(e))) {
        (Some(first), Some(last)) if start < end => (column::epoch_days(*first), column::epoch_days(*last)),
        // No day: no row (a filter no date passes).
        _ => (1, 0),
    };
    let date = col("date").cast(DataType::Int32);
    let frame = column::scan(path)?
        .filter(date.clone().gt_eq(lit(first)).and(date.lt_eq(lit(last))))
        .collect()
        .map_err(|error| DataError::unreadable(path, error))?;
    let names: Vec<String> = frame.get_column_names().iter().map(|n| n.to_string()).collect();
    let calendar = wf_shared::TradingCalendar::from_dates(summary.dates.clone());
    let dates = column::dates(&frame, "date", path)?;
    let codes = column::strings(&frame, "code", path)?;
    let mut day = Vec::with_capacity(dates.len());
    let mut stock = Vec::with_capacity(dates.len());
    for (date, code) in dates.iter().zip(&codes) {
        match (calendar.index_of(*date), summary.codes.binary_search(code)) {
            (Some(d), Ok(s)) => {
                day.push(d as u32);
                stock.push(s as u32);
            }
            _ => return Err(invalid(format!("a row of {date} {code} is not in the panel its metadata describes"))),
        }
    }
    drop(codes);
    let panel = panel_of_frame(path, frame, &names, &declared, (calendar, summary.codes.clone(), day, stock))?;
    Ok(Some((panel, summary)))
}

/// The feature columns to read: `features` when given, else the ones the file declares;
/// each checked against the label guard.
fn declared_features(path: &Path, features: Option<&[String]>) -> Result<Vec<String>, DataError> {
    let invalid = |reason: String| DataError::Invalid { path: path.to_path_buf(), reason };
    let declared: Vec<String> = match features {
        Some(names) => names.to_vec(),
        None => {
            let metadata = column::key_value_metadata(path)?;
            let Some((_, text)) = metadata.iter().find(|(key, _)| key == FEATURES_KEY) else {
                return Err(invalid(
                    "the panel declares no feature columns: name them in the spec (dataset.features = [...]) \
                     or write the panel with `wf data prepare`"
                        .into(),
                ));
            };
            serde_json::from_str(text).map_err(|e| invalid(format!("metadata {FEATURES_KEY} is unreadable: {e}")))?
        }
    };
    for name in &declared {
        wf_shared::label_guard::check_feature_name(name).map_err(|refusal| invalid(refusal.to_string()))?;
    }
    Ok(declared)
}

/// The panel of `frame`'s `declared` features and its targets, with its rows' keys
/// (calendar, codes, each row's day and stock). Each of the frame's columns is released
/// once converted (its last use), so the frame and the panel are not both held whole.
fn panel_of_frame(
    path: &Path,
    mut frame: DataFrame,
    names: &[String],
    declared: &[String],
    (calendar, codes, day, stock): (wf_shared::TradingCalendar, Vec<String>, Vec<u32>, Vec<u32>),
) -> Result<Panel, DataError> {
    let invalid = |reason: String| DataError::Invalid { path: path.to_path_buf(), reason };
    // Uses of each column still to come: a column is dropped after its last.
    let mut uses: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let targets_and_adv = names.iter().filter(|n| n.starts_with(TARGET_PREFIX) || n.as_str() == ADV_COLUMN);
    for name in declared.iter().chain(targets_and_adv) {
        *uses.entry(name.as_str()).or_default() += 1;
    }
    for name in names.iter().filter(|n| !uses.contains_key(n.as_str())) {
        // The keys (already read) and columns nothing reads.
        let _ = frame.drop_in_place(name);
    }
    let mut numeric = |name: &str| -> Result<Vec<f64>, DataError> {
        let dtype = frame.column(name).map(|c| c.dtype().clone()).unwrap_or(DataType::Null);
        if !column::is_numeric(&dtype) {
            return Err(DataError::WrongType {
                path: path.to_path_buf(),
                column: name.to_string(),
                found: dtype.to_string(),
                expected: "a number",
            });
        }
        let values = column::f64s(&frame, name, path)?;
        if let Some(left) = uses.get_mut(name) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                let _ = frame.drop_in_place(name);
            }
        }
        Ok(values)
    };

    let mut parts = PanelParts {
        calendar,
        codes,
        day,
        stock,
        feature_names: Vec::new(),
        features: Vec::new(),
        horizons: Vec::new(),
        targets: Vec::new(),
        adv: None,
    };
    for name in declared {
        if !names.contains(name) {
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.clone(),
                found: names.join(", "),
            });
        }
        parts.feature_names.push(name.clone());
        parts.features.push(numeric(name)?.iter().map(|v| *v as f32).collect());
    }
    for name in names.iter().filter(|n| n.starts_with(TARGET_PREFIX)) {
        let horizon = name[TARGET_PREFIX.len()..]
            .parse::<u32>()
            .map_err(|_| invalid(format!("target column {name} does not end in a horizon in trading days")))?;
        parts.horizons.push(horizon);
        parts.targets.push(numeric(name)?);
    }
    if names.iter().any(|n| n == ADV_COLUMN) {
        parts.adv = Some(numeric(ADV_COLUMN)?);
    }
    let panel = Panel::new(parts).map_err(|source| DataError::Panel { path: path.to_path_buf(), source })?;
    wf_shared::label_guard::check_panel(&panel).map_err(|refusal| invalid(refusal.to_string()))?;
    Ok(panel)
}
