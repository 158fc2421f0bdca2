//! `wf data prepare`: OHLCV file in, panel file out, and next to it the feature state
//! `wf data ingest` continues it from (`PANEL.state`).

use std::path::Path;
use std::time::{Duration, Instant};

use wf_shared::dataset::DatasetHash;
use wf_shared::feature::build_panel_with_state;
use wf_shared::{Bars, PanelSpec};

use crate::DataError;
use crate::ingest::{state_path, write_state};
use crate::ohlcv::read_ohlcv;
use crate::panel_file::write_panel;

/// The stages of `prepare`, reported to a progress display as they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Read,
    Validate,
    Features,
    Write,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Read => "reading OHLCV",
            Stage::Validate => "validating bars",
            Stage::Features => "computing features and targets",
            Stage::Write => "writing panel",
        }
    }
}

/// What `prepare` produced.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub rows: usize,
    pub stocks: usize,
    pub dates: usize,
    pub features: usize,
    pub horizons: Vec<u32>,
    pub content_hash: DatasetHash,
    /// Wall time of each stage.
    pub timings: Vec<(Stage, Duration)>,
}

/// Reads `input`, builds the panel for `spec` and writes it to `output`.
pub fn prepare(
    input: &Path,
    output: &Path,
    spec: &PanelSpec,
    mut on_stage: impl FnMut(Stage),
) -> Result<Prepared, DataError> {
    let mut timings = Vec::new();
    let mut timed = |stage: Stage, started: Instant| timings.push((stage, started.elapsed()));

    on_stage(Stage::Read);
    let started = Instant::now();
    let columns = read_ohlcv(input)?;
    timed(Stage::Read, started);

    on_stage(Stage::Validate);
    let started = Instant::now();
    let bars = Bars::new(columns).map_err(|source| DataError::Bars { path: input.to_path_buf(), source })?;
    timed(Stage::Validate, started);

    on_stage(Stage::Features);
    let started = Instant::now();
    let (panel, state) = build_panel_with_state(&bars, spec);
    drop(bars);
    timed(Stage::Features, started);

    on_stage(Stage::Write);
    let started = Instant::now();
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| DataError::unwritable(parent, error))?;
    }
    let content_hash = write_panel(output, &panel)?;
    // What `wf data ingest` continues the panel from.
    write_state(&state_path(output), &state, &content_hash)?;
    timed(Stage::Write, started);

    Ok(Prepared {
        rows: panel.rows(),
        stocks: panel.codes().len(),
        dates: panel.calendar().len(),
        features: panel.feature_names().len(),
        horizons: panel.horizons().to_vec(),
        content_hash,
        timings,
    })
}
