//! Writing the synthetic market: `DIR/ohlcv.parquet` and `DIR/truth.json`.

use std::path::{Path, PathBuf};

use wf_shared::synth::SynthMarket;

use crate::DataError;
use crate::ohlcv::write_ohlcv;

/// Where a synthetic market was written.
#[derive(Debug, Clone)]
pub struct SynthFiles {
    pub ohlcv: PathBuf,
    pub truth: PathBuf,
}

pub fn write_synth(dir: &Path, market: &SynthMarket) -> Result<SynthFiles, DataError> {
    std::fs::create_dir_all(dir).map_err(|error| DataError::unwritable(dir, error))?;
    let files = SynthFiles { ohlcv: dir.join("ohlcv.parquet"), truth: dir.join("truth.json") };
    write_ohlcv(&files.ohlcv, &market.bars)?;
    let truth =
        serde_json::to_string_pretty(&market.truth).map_err(|error| DataError::unwritable(&files.truth, error))?;
    std::fs::write(&files.truth, truth + "\n").map_err(|error| DataError::unwritable(&files.truth, error))?;
    Ok(files)
}
