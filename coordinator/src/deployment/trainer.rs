//! Who trains a deployment's versions: in this process, or the workers through the
//! coordinator's queue.

use candle_core::Device;
use wf_shared::plan::{Job, JobKey};
use wf_worker::artifact::model_file;
use wf_worker::faults::{Fault, Faults};
use wf_worker::job::run_job;

use super::record::{DeploymentError, Opened, Result};

/// Trains a deployment's versions: in this process ([`LocalTrainer`]), or on the
/// workers through the coordinator's queue ([`QueueTrainer`]).
pub trait Retrainer: Send + Sync {
    /// The model file (`wf_worker::artifact::to_bytes`) of `job`, a retrain of `opened`;
    /// `None` while it is being trained elsewhere: the advance stops before its day and
    /// continues from there once it is trained.
    fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>>;

    /// Whether job `key`, which [`Retrainer::model_file`] answered `None` for, is still
    /// being trained (queued or running, nothing committed): an advance would stop at
    /// it again, so it is not run. `false` when unknown.
    fn still_training(&self, _key: &JobKey) -> bool {
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

impl Retrainer for LocalTrainer {
    fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>> {
        if self.faults.as_ref().and_then(|faults| faults.for_job(&job.key.to_string())) == Some(Fault::Fail) {
            return Err(DeploymentError::Invalid(format!(
                "injected failure (WF_FAULT_FAIL_JOBS) of job {}",
                job.key.short()
            )));
        }
        let (panel, config) = (&opened.dataset.panel, &opened.config);
        let output = run_job(panel, config, job, &self.device).map_err(|e| DeploymentError::Other(e.into()))?;
        model_file(&output, job, panel, &opened.dataset.content_hash, config)
            .map(Some)
            .map_err(DeploymentError::Invalid)
    }
}

/// Trains on the workers: each retrain is queued through the coordinator's scheduler as
/// a training-only job (`Scheduler::retrain`), on the queue and workers of the sweeps,
/// and its committed model is returned once a worker reported it. A coordinator's
/// advance loop uses it unless started with `--live-retrain local`.
#[derive(Debug)]
pub struct QueueTrainer {
    scheduler: std::sync::Arc<crate::scheduler::Scheduler>,
    /// The coordinator's runtime, which the scheduler's stores are bound to (the advance
    /// runs on a blocking thread of it).
    runtime: tokio::runtime::Handle,
}

impl QueueTrainer {
    pub fn new(scheduler: std::sync::Arc<crate::scheduler::Scheduler>, runtime: tokio::runtime::Handle) -> Self {
        Self { scheduler, runtime }
    }
}

impl Retrainer for QueueTrainer {
    fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>> {
        use crate::scheduler::{Retrain, RetrainRequest};
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
        match self.runtime.block_on(self.scheduler.retrain(&request)) {
            Ok(Retrain::Trained(model)) => Ok(Some(model)),
            Ok(Retrain::Pending) => Ok(None),
            Ok(Retrain::Failed(error)) => Err(DeploymentError::Invalid(format!(
                "retrain job {} failed on the workers: {error} (queued again)",
                job.key.short()
            ))),
            Err(error) => Err(DeploymentError::Other(anyhow::anyhow!("cannot queue the retrain: {error}"))),
        }
    }

    fn still_training(&self, key: &JobKey) -> bool {
        self.runtime.block_on(self.scheduler.still_training(key)).unwrap_or(false)
    }
}
