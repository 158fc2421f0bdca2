//! Loading the dataset a sweep names: a panel file, or the embedded synthetic market.
//!
//! - a path (relative to the working directory) to a panel written by `wf data prepare`;
//! - `synth:default`, or `synth:stocks=N,days=N,seed=S,start=YYYY-MM-DD` with any subset
//!   of those keys: the synthetic market generated in memory and prepared with the
//!   requested horizons. No file or server is needed: the embedded default dataset.

use std::path::Path;

use wf_shared::dataset::{DatasetHash, content_hash};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, Panel, PanelSpec, build_panel};

use crate::DataError;
use crate::panel_file::read_panel;

/// A loaded panel with its content hash.
#[derive(Debug)]
pub struct Dataset {
    pub panel: Panel,
    pub content_hash: DatasetHash,
}

/// Parses a `synth:` dataset name into a spec.
pub fn synth_spec(uri: &str) -> Option<Result<SynthSpec, String>> {
    let options = uri.strip_prefix("synth:")?;
    let mut spec = SynthSpec::default();
    if options == "default" || options.is_empty() {
        return Some(Ok(spec));
    }
    for option in options.split(',') {
        let Some((key, value)) = option.split_once('=') else {
            return Some(Err(format!("{option:?} is not key=value")));
        };
        let parsed = match key.trim() {
            "stocks" => value.trim().parse().map(|v| spec.stocks = v).map_err(|e| e.to_string()),
            "days" => value.trim().parse().map(|v| spec.days = v).map_err(|e| e.to_string()),
            "seed" => value.trim().parse().map(|v| spec.seed = v).map_err(|e| e.to_string()),
            "start" => value.trim().parse().map(|v| spec.start = v).map_err(|e| e.to_string()),
            other => Err(format!("unknown option {other:?} (expected stocks, days, seed, start)")),
        };
        if let Err(reason) = parsed {
            return Some(Err(format!("{key}: {reason}")));
        }
    }
    Some(Ok(spec))
}

/// Loads the dataset `uri`; `horizons` are the targets a synthetic panel is built with;
/// `features`, when given, are the only feature columns read (in that order), else the
/// panel's declared ones (a synthetic panel declares the whole catalogue).
pub fn load_dataset(uri: &str, horizons: &[u32], features: Option<&[String]>) -> Result<Dataset, DataError> {
    let invalid = |reason: String| DataError::Invalid { path: uri.into(), reason };
    let panel = match synth_spec(uri) {
        Some(spec) => {
            let market = generate(&spec.map_err(invalid)?).map_err(|e| invalid(e.to_string()))?;
            let bars = Bars::new(market.bars).map_err(|source| DataError::Bars { path: uri.into(), source })?;
            let panel = build_panel(&bars, &PanelSpec { horizons: horizons.to_vec() });
            match features {
                Some(names) => panel
                    .select_features(names)
                    .map_err(|name| invalid(format!("the synthetic panel has no feature {name:?}")))?,
                None => panel,
            }
        }
        None => read_panel(Path::new(uri), features)?,
    };
    let content_hash = content_hash(&panel);
    Ok(Dataset { panel, content_hash })
}
