//! Model artifacts: weights as safetensors, with the job key, dataset hash, model spec
//! and shapes in the file's metadata (and a `gbdt`'s ensemble as JSON, `state`). Loading rebuilds the model from that spec and
//! reproduces its scores exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::WorkerError;
use crate::model::{ModelSpec, Ranker, build};

/// Bumped when the file layout changes.
pub const ARTIFACT_FORMAT: &str = "walkforward-model-v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    pub job_key: String,
    pub dataset: String,
    pub spec: ModelSpec,
    pub features: usize,
    /// The input features by name, in order (a `factor` model finds its column here);
    /// empty in files written before it was kept.
    #[serde(default)]
    pub feature_names: Vec<String>,
    pub horizons: Vec<u32>,
    pub seed: u64,
}

fn error(path: &Path, reason: impl ToString) -> WorkerError {
    WorkerError::Artifact { path: path.display().to_string(), reason: reason.to_string() }
}

/// Writes the model's weights and `meta` to `path`.
pub fn save(path: &Path, model: &dyn Ranker, meta: &ArtifactMeta) -> Result<(), WorkerError> {
    let bytes = to_bytes(model, meta).map_err(|reason| error(path, reason))?;
    std::fs::write(path, bytes).map_err(|e| error(path, e))
}

/// Loads a model written by [`save`].
pub fn load(path: &Path, device: &Device) -> Result<(Box<dyn Ranker>, ArtifactMeta), WorkerError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, e))?;
    from_bytes(&bytes, device).map_err(|reason| error(path, reason))
}

/// The file [`save`] writes, as bytes (for an object store).
pub fn to_bytes(model: &dyn Ranker, meta: &ArtifactMeta) -> Result<Vec<u8>, String> {
    let mut metadata = HashMap::from([
        ("format".to_string(), ARTIFACT_FORMAT.to_string()),
        ("job_key".to_string(), meta.job_key.clone()),
        ("dataset".to_string(), meta.dataset.clone()),
        ("meta".to_string(), serde_json::to_string(meta).map_err(|e| e.to_string())?),
    ]);
    if let Some(state) = model.state() {
        metadata.insert("state".to_string(), state);
    }
    let tensors: Vec<(String, candle_core::Tensor)> =
        model.variables().into_iter().map(|(name, var)| (name, var.as_tensor().clone())).collect();
    safetensors::serialize(tensors, Some(metadata)).map_err(|e| e.to_string())
}

/// The model file of `job`'s trained `output` on `panel` (content hash `dataset`): what a
/// live deployment stores as a version, wherever the job was trained.
pub fn model_file(
    output: &crate::job::JobOutput,
    job: &wf_shared::plan::Job,
    panel: &wf_shared::panel::Panel,
    dataset: &wf_shared::DatasetHash,
    config: &wf_shared::spec::SweepConfig,
) -> Result<Vec<u8>, String> {
    let meta = ArtifactMeta {
        job_key: job.key.to_string(),
        dataset: dataset.to_string(),
        spec: output.spec.clone(),
        features: panel.features().len(),
        feature_names: panel.feature_names().to_vec(),
        horizons: config.horizons.clone(),
        seed: job.seed,
    };
    let model = output.model.as_ref().ok_or_else(|| {
        "an external trainer's model is kept on its worker, not served by a deployment (docs/TRAINERS.md)".to_string()
    })?;
    to_bytes(model.as_ref(), &meta)
}

/// Reads the bytes of a model file written by [`save`] or [`to_bytes`].
pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<(Box<dyn Ranker>, ArtifactMeta), String> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(ARTIFACT_FORMAT) {
        return Err(format!("not a {ARTIFACT_FORMAT} file"));
    }
    let meta: ArtifactMeta = serde_json::from_str(metadata.get("meta").map(String::as_str).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let names =
        if meta.feature_names.is_empty() { vec![String::new(); meta.features] } else { meta.feature_names.clone() };
    let model = build(&meta.spec, &names, meta.horizons.len(), meta.seed, device).map_err(|e| e.to_string())?;
    if let Some(state) = metadata.get("state") {
        model.set_state(state).map_err(|e| e.to_string())?;
    }
    let tensors = candle_core::safetensors::load_buffer(bytes, device).map_err(|e| e.to_string())?;
    for (name, variable) in model.variables() {
        let tensor = tensors.get(&name).ok_or_else(|| format!("missing tensor {name}"))?;
        if tensor.shape() != variable.as_tensor().shape() {
            return Err(format!(
                "tensor {name} has shape {:?}, the model expects {:?}",
                tensor.shape(),
                variable.as_tensor().shape()
            ));
        }
        variable.set(tensor).map_err(|e| e.to_string())?;
    }
    Ok((model, meta))
}
