//! Who trains a deployment's versions: the port [`Retrainer`], and [`LocalTrainer`],
//! which trains in this process (the coordinator's `QueueTrainer` has the workers train
//! them through its queue).

use candle_core::Device;
use wf_shared::plan::{Job, JobKey};
use wf_worker::artifact::model_file;
use wf_worker::faults::{Fault, Faults};
use wf_worker::job::run_job;

use crate::record::{DeploymentError, Opened, Result};

/// Trains a deployment's versions: in this process ([`LocalTrainer`]), or on the
/// workers through the coordinator's queue (`wf_coordinator::deployments::QueueTrainer`).
#[async_trait::async_trait]
pub trait Retrainer: Send + Sync {
    /// The model file (`wf_worker::artifact::to_bytes`) of `job`, a retrain of `opened`;
    /// `None` while it is being trained elsewhere: the advance stops before its day and
    /// continues from there once it is trained.
    async fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>>;

    /// Whether job `key`, which [`Retrainer::model_file`] answered `None` for, is still
    /// being trained (queued or running, nothing committed): an advance would stop at
    /// it again, so it is not run. `false` when unknown.
    async fn still_training(&self, _key: &JobKey) -> bool {
        false
    }
}

/// Trains in this process, on a device (`wf live deploy | advance`, or a coordinator
/// started with `--live-retrain local`).
#[derive(Debug, Clone)]
pub struct LocalTrainer {
    pub device: Device,
    /// Faults injected for tests and drills, as on workers: a retrain whose job key a
    /// fault names fails. `None` in production.
    pub faults: Option<Faults>,
}

#[async_trait::async_trait]
impl Retrainer for LocalTrainer {
    /// Trained on the runtime's blocking pool.
    async fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>> {
        if self.faults.as_ref().and_then(|faults| faults.for_job(&job.key.to_string())) == Some(Fault::Fail) {
            return Err(DeploymentError::Invalid(format!(
                "injected failure (WF_FAULT_FAIL_JOBS) of job {}",
                job.key.short()
            )));
        }
        let (dataset, config, job, device) =
            (opened.dataset.clone(), opened.config.clone(), job.clone(), self.device.clone());
        let key = job.key;
        tokio::task::spawn_blocking(move || {
            let output =
                run_job(&dataset.panel, &config, &job, &device).map_err(|e| DeploymentError::Other(e.into()))?;
            model_file(&output, &job, &dataset.panel, &dataset.content_hash, &config)
                .map(Some)
                .map_err(DeploymentError::Invalid)
        })
        .await
        .map_err(|e| DeploymentError::Other(anyhow::anyhow!("training job {} stopped: {e}", key.short())))?
    }
}
