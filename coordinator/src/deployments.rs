//! The coordinator's side of the live deployments (`wf_live`): the artifact store keeps
//! their files (under `live/<id>/`), and [`QueueTrainer`] has the workers train their
//! retrains through the scheduler's queue.

use std::sync::Arc;

use bytes::Bytes;
use wf_live::{DeploymentError, FilesError, LiveFiles, Opened, Retrainer};
use wf_shared::plan::{Job, JobKey};

use crate::artifact::ArtifactStore;
use crate::scheduler::{Retrain, RetrainRequest, Scheduler};

#[async_trait::async_trait]
impl LiveFiles for ArtifactStore {
    async fn ids(&self) -> Result<Vec<String>, FilesError> {
        self.live_ids().await.map_err(FilesError::new)
    }

    async fn get(&self, id: &str, name: &str) -> Result<Option<Bytes>, FilesError> {
        self.live_file(id, name).await.map_err(FilesError::new)
    }

    async fn put(&self, id: &str, name: &str, bytes: Bytes, create_only: bool) -> Result<bool, FilesError> {
        self.put_live_file(id, name, bytes, create_only).await.map_err(FilesError::new)
    }
}

/// Trains on the workers: each retrain is queued through the coordinator's scheduler as
/// a training-only job ([`Scheduler::retrain`]), on the queue and workers of the sweeps,
/// and its committed model is returned once a worker reported it. A coordinator's
/// advance loop uses it unless started with `--live-retrain local`.
#[derive(Debug)]
pub struct QueueTrainer {
    scheduler: Arc<Scheduler>,
}

impl QueueTrainer {
    pub fn new(scheduler: Arc<Scheduler>) -> Self {
        Self { scheduler }
    }
}

#[async_trait::async_trait]
impl Retrainer for QueueTrainer {
    async fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>, DeploymentError> {
        let date = opened.dataset.panel.calendar().date(job.retrain_day).ok_or_else(|| {
            DeploymentError::Invalid(format!("the retrain of day {} is past the panel", job.retrain_day))
        })?;
        let request = RetrainRequest {
            name: format!("live {} retrain {date}", opened.record.id),
            spec_toml: opened.record.spec.clone(),
            tenant: opened.record.tenant.clone(),
            dataset: wf_shared::DatasetRef {
                uri: opened.config.panel.clone(),
                content_hash: opened.dataset.content_hash,
            },
            line: wf_shared::plan::TrainingLine {
                model: job.model as u32,
                seed: job.seed,
                window: job.window,
                retrain: date,
            },
            key: job.key,
            identity: job.identity.clone(),
            stocks: opened.dataset.panel.codes().len(),
        };
        match self.scheduler.retrain(&request).await {
            Ok(Retrain::Trained(model)) => Ok(Some(model)),
            Ok(Retrain::Pending) => Ok(None),
            Ok(Retrain::Failed(error)) => Err(DeploymentError::Invalid(format!(
                "retrain job {} failed on the workers: {error} (queued again)",
                job.key.short()
            ))),
            Err(error) => Err(DeploymentError::Other(anyhow::anyhow!("cannot queue the retrain: {error}"))),
        }
    }

    async fn still_training(&self, key: &JobKey) -> bool {
        self.scheduler.still_training(key).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    /// The artifact store keeps deployments' files as every `LiveFiles` adapter must.
    #[tokio::test]
    async fn the_artifact_store_conforms_to_live_files() {
        let dir = tempfile::tempdir().expect("dir");
        let store = super::ArtifactStore::open(&dir.path().display().to_string()).expect("store");
        wf_live::conformance(&store).await;
    }
}
