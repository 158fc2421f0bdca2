//! `wf data ingest`: later days of OHLCV added to a prepared panel. Their features are
//! computed from the feature state `wf data prepare` saved next to the panel
//! (`PANEL.state`), not from the whole history, and equal a full prepare of the whole
//! history bit for bit (`wf_shared::feature::extend_panel`).
//!
//! Days already in the panel, days before its end, and weekdays without data between its
//! end and the new days (unless declared closed) are refused, and a refused ingest changes
//! nothing. The panel and its state are written to temporary files, flushed, then renamed
//! over the old ones; the state records the content hash of its panel, so a panel and a
//! state that do not belong together (a crash between the renames, a panel written by
//! another tool) are refused at the next ingest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use wf_shared::dataset::{DatasetHash, PanelDigests};
use wf_shared::feature::{FeatureState, check_new_days, extend_panel};
use wf_shared::{Bars, Panel};

use crate::DataError;
use crate::ohlcv::read_ohlcv;
use crate::panel_file::{read_panel, write_panel};

/// The feature state's file next to the panel at `panel`: `PANEL.state`.
pub fn state_path(panel: &Path) -> PathBuf {
    let mut name = panel.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

/// The state file: the state and the content hash of the panel it continues.
#[derive(Serialize, Deserialize)]
struct StateFile {
    panel_hash: String,
    state: FeatureState,
}

/// Writes the feature state of the panel whose content hash is `panel_hash` to `path`.
pub(crate) fn write_state(path: &Path, state: &FeatureState, panel_hash: &DatasetHash) -> Result<(), DataError> {
    let file = StateFile { panel_hash: panel_hash.to_string(), state: state.clone() };
    let bytes = rmp_serde::to_vec_named(&file).map_err(|error| DataError::unwritable(path, error))?;
    std::fs::write(path, bytes).map_err(|error| DataError::unwritable(path, error))
}

fn read_state(path: &Path, panel: &Path) -> Result<StateFile, DataError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::Invalid {
                path: panel.to_path_buf(),
                reason: format!(
                    "no feature state next to it ({}): it was prepared before ingest existed or by another tool; prepare it again with wf data prepare",
                    path.display()
                ),
            });
        }
        Err(error) => return Err(DataError::unreadable(path, error)),
    };
    rmp_serde::from_slice(&bytes).map_err(|error| DataError::Invalid {
        path: path.to_path_buf(),
        reason: format!("unreadable feature state: {error}"),
    })
}

/// The stages of `ingest`, as they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestStage {
    Read,
    Features,
    Write,
}

impl IngestStage {
    pub fn label(self) -> &'static str {
        match self {
            IngestStage::Read => "reading the panel, its state and the new days",
            IngestStage::Features => "computing the new days' features",
            IngestStage::Write => "writing panel",
        }
    }
}

/// What `ingest` did.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The days added, in order.
    pub days: Vec<NaiveDate>,
    pub rows_added: usize,
    /// Codes the panel did not hold before.
    pub new_stocks: Vec<String>,
    pub rows: usize,
    pub stocks: usize,
    pub content_hash: DatasetHash,
    pub timings: Vec<(IngestStage, Duration)>,
}

/// Adds the days of the OHLCV file `input` to the panel at `panel` (and its state), in
/// place, or into `out` (and `OUT.state`) when given. `closed` lists weekdays the
/// exchange was closed (holidays), which may have no data.
pub fn ingest(
    panel_path: &Path,
    input: &Path,
    closed: &[NaiveDate],
    out: Option<&Path>,
    mut on_stage: impl FnMut(IngestStage),
) -> Result<Ingested, DataError> {
    let mut timings = Vec::new();
    on_stage(IngestStage::Read);
    let started = Instant::now();
    let saved = read_state(&state_path(panel_path), panel_path)?;
    let bars = Bars::new(read_ohlcv(input)?).map_err(|source| DataError::Bars { path: input.to_path_buf(), source })?;
    let panel = read_panel(panel_path, None)?;
    let refused = |reason: String| DataError::Invalid { path: input.to_path_buf(), reason };
    check_new_days(panel.calendar(), bars.calendar().dates(), closed).map_err(|error| refused(error.to_string()))?;
    let hash = PanelDigests::of(&panel).hash();
    if hash.to_string() != saved.panel_hash {
        return Err(DataError::Invalid {
            path: panel_path.to_path_buf(),
            reason: format!(
                "its content hash {hash} is not the one its feature state continues ({}): the panel changed after it was prepared; prepare it again",
                saved.panel_hash
            ),
        });
    }
    timings.push((IngestStage::Read, started.elapsed()));

    on_stage(IngestStage::Features);
    let started = Instant::now();
    let before: Vec<String> = panel.codes().to_vec();
    let days = bars.calendar().dates().to_vec();
    let rows_added = bars.rows();
    let (panel, state) = extend_panel(panel, &saved.state, &bars).map_err(|error| refused(error.to_string()))?;
    drop(bars);
    let new_stocks: Vec<String> =
        panel.codes().iter().filter(|code| before.binary_search(code).is_err()).cloned().collect();
    timings.push((IngestStage::Features, started.elapsed()));

    on_stage(IngestStage::Write);
    let started = Instant::now();
    let target = out.unwrap_or(panel_path);
    let content_hash = replace(target, &panel, &state)?;
    timings.push((IngestStage::Write, started.elapsed()));
    Ok(Ingested {
        days,
        rows_added,
        new_stocks,
        rows: panel.rows(),
        stocks: panel.codes().len(),
        content_hash,
        timings,
    })
}

/// Writes `panel` and its state to temporary files beside `target`, flushes them, then
/// renames them over `target` and its state file. Returns the panel's content hash.
fn replace(target: &Path, panel: &Panel, state: &FeatureState) -> Result<DatasetHash, DataError> {
    let temporary = |path: &Path| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".ingest-{}", std::process::id()));
        PathBuf::from(name)
    };
    let state_target = state_path(target);
    let (panel_temp, state_temp) = (temporary(target), temporary(&state_target));
    let written = (|| {
        let hash = write_panel(&panel_temp, panel)?;
        write_state(&state_temp, state, &hash)?;
        for path in [&panel_temp, &state_temp] {
            let file = std::fs::File::open(path).map_err(|error| DataError::unwritable(path, error))?;
            file.sync_all().map_err(|error| DataError::unwritable(path, error))?;
        }
        Ok(hash)
    })();
    let hash = match written {
        Ok(hash) => hash,
        Err(error) => {
            let _ = std::fs::remove_file(&panel_temp);
            let _ = std::fs::remove_file(&state_temp);
            return Err(error);
        }
    };
    std::fs::rename(&panel_temp, target).map_err(|error| DataError::unwritable(target, error))?;
    std::fs::rename(&state_temp, &state_target).map_err(|error| DataError::unwritable(&state_target, error))?;
    if let Some(directory) = target.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(directory) = std::fs::File::open(directory)
    {
        let _ = directory.sync_all();
    }
    Ok(hash)
}
