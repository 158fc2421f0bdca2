//! `wf-worker`: the compute side of walkforward.
//!
//! Today it holds the ranking models and the job compute path the worker runtime will
//! call: [`model`] (the `Ranker` interface, `linear` and `mlp` in Candle, typed
//! hyperparameters), [`train`] (per-day batches built once per job, ListNet + MSE loss,
//! AdamW with warm-up, clipping and early stopping), [`job`] (refuse leaking windows,
//! train, score into age-matrix rows, drift, statistics), [`artifact`] (safetensors with
//! metadata) and [`device`] (`auto | cpu | cuda:N`). It never writes job state: the
//! coordinator decides, the worker computes and reports.

pub mod allocator;
pub mod artifact;
pub mod device;
pub mod external;
pub mod faults;
pub mod importance;
pub mod job;
pub mod model;
pub mod observer;
pub mod runtime;
pub mod threads;
pub mod train;

use wf_shared::spec::SpecError;

/// Why a job's computation failed. `retryable` tells the coordinator's retry policy
/// whether another attempt could succeed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid model spec: {0}")]
    Spec(SpecError),
    #[error("refusing to train job {job}: {reason}")]
    Leakage { job: String, reason: String },
    #[error("{0}")]
    Device(String),
    #[error("no training data: {0}")]
    NoData(String),
    #[error("model artifact {path}: {reason}")]
    Artifact { path: String, reason: String },
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The job's data could not be loaded (`retryable`: an I/O error).
    #[error("dataset: {reason}")]
    Data { reason: String, retryable: bool },
    /// The worker is shutting down: training stopped between two steps.
    #[error("stopped: the worker is shutting down")]
    Stopped,
    /// An external trainer failed, or its output was refused (`retryable`: it exited
    /// with `EX_TEMPFAIL`).
    #[error("trainer {trainer}: {reason}")]
    Trainer { trainer: String, reason: String, retryable: bool },
}

impl WorkerError {
    /// Only failures of the machine (tensors, devices, files) may pass on retry; a bad
    /// spec, missing data or a leaking window fails the same way every time.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Tensor(_) | Self::Device(_) | Self::Artifact { .. } | Self::Stopped)
            || matches!(self, Self::Data { retryable: true, .. } | Self::Trainer { retryable: true, .. })
    }
}
