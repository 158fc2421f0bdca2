//! The `JobStore` port: where queued jobs, their states and the sweeps live.
//!
//! Two adapters pass one conformance suite ([`conformance`]): [`MemoryJobStore`] (the
//! embedded default of `wf run`) and [`RedisJobStore`] (clusters). Neither decides
//! anything: each reads a job's state, asks [`JobState::apply`] what an event does, and
//! writes the answer only if the stored state is still the one it read (in Redis, one Lua
//! script per transition, guarded by the expected attempt). Every method takes `now`;
//! no store reads the clock.
//!
//! **Epochs.** Leases are fenced by a token, (epoch, attempt). The epoch comes from
//! outside the store (the artifact store numbers them, see `Scheduler::ensure_epoch`),
//! and each store keeps a marker of the epoch it serves and of its own instance (Redis:
//! the server's run id, which changes on every restart). A lease is granted only while
//! the marker is there and is the store's epoch: after a flush, a lost hash or a restart
//! (which may have rolled back the last second of an AOF) the store answers
//! [`StoreError::EpochLost`] until a new epoch is started, so a (job, token) pair is
//! never handed out twice.

pub mod conformance;
mod memory;
mod redis;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wf_shared::DatasetRef;
use wf_shared::job::{FailureKind, JobEvent, JobState, RetryPolicy, SweepId, Token, TransitionError, UnixMs};
use wf_shared::plan::JobKey;

pub use memory::MemoryJobStore;
pub use redis::{DEFAULT_RESPONSE_TIMEOUT, RedisJobStore, RedisOptions, redacted_url};

/// A sweep as submitted: what workers need to find its jobs, and what `GetSweep` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub id: SweepId,
    pub name: String,
    pub spec_toml: String,
    pub dataset: DatasetRef,
    /// The sweep's distinct trainings.
    pub jobs: Vec<JobKey>,
    /// Jobs with a committed result that the job store holds no state for: committed by
    /// earlier sweeps before submission, or found by a reconciliation after a loss.
    pub precomputed: Vec<JobKey>,
    pub jobs_before_dedup: u64,
    pub submitted_at: UnixMs,
    pub cancelled: bool,
    /// The tenant that submitted it (`local` without authentication).
    #[serde(default = "local_tenant")]
    pub tenant: String,
    /// The longest one attempt of the sweep's jobs may run (see
    /// `Scheduler::job_limit`); `None`: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_job_ms: Option<i64>,
    /// A live deployment's retrain: its one job is training-only, in no plan, and built
    /// by the worker from this line (`Scheduler::retrain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<wf_shared::plan::TrainingLine>,
}

fn local_tenant() -> String {
    crate::auth::LOCAL_TENANT.to_string()
}

/// A job in the store: its state and the sweep that queued it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub sweep: SweepId,
    pub state: JobState,
}

/// A lease just granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub key: JobKey,
    pub sweep: SweepId,
    pub token: Token,
    pub expires_at: UnixMs,
}

/// What a store says of its epoch marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// The marker is there and the store is still the instance that wrote it.
    Current(u64),
    /// No marker, or another instance: state may have been lost or rolled back since.
    Lost,
}

/// What [`JobStore::repair`] fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Index entries added or removed (a job missing from the ready or leased set, or a
    /// set entry without a job).
    pub fixed: usize,
    /// Jobs that lost the record of the sweep owning them.
    pub unowned: Vec<JobKey>,
}

/// Jobs by where they are, across all sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueDepth {
    /// Queued, including those waiting out a retry backoff.
    pub queued: u64,
    pub leased: u64,
    pub dead_lettered: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} is not in the store")]
    UnknownJob(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("job store backend: {0}")]
    Backend(String),
    #[error("job store holds an unreadable record for {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The store's epoch marker is gone or from another instance: start a new epoch.
    #[error("the job store may have lost state (its epoch marker is gone or stale); a new epoch is needed")]
    EpochLost,
}

impl From<::redis::RedisError> for StoreError {
    fn from(error: ::redis::RedisError) -> Self {
        Self::Backend(error.to_string())
    }
}

/// Queue and job state. Implementations must make each transition atomic.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// The retry policy transitions are decided with.
    fn policy(&self) -> RetryPolicy;

    /// Queues the jobs not yet in the store (leasable from `now`), each attempt limited to
    /// `max_ms` (`None`: the lease's limit); returns how many were new.
    async fn enqueue_limited(
        &self,
        sweep: &SweepId,
        keys: &[JobKey],
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<usize, StoreError>;

    /// [`JobStore::enqueue_limited`] without a limit of the jobs' own.
    async fn enqueue(&self, sweep: &SweepId, keys: &[JobKey], now: UnixMs) -> Result<usize, StoreError> {
        self.enqueue_limited(sweep, keys, None, now).await
    }

    /// Queues again, for `sweep`, the jobs of `keys` that ended without a usable result
    /// (dead-lettered, cancelled, or succeeded with a result refused on reuse), with a
    /// fresh retry budget; returns how many. Attempt numbers carry on.
    async fn resubmit(&self, sweep: &SweepId, keys: &[JobKey], now: UnixMs) -> Result<usize, StoreError>;

    /// Leases the longest-waiting ready job to `worker` for `lease_ms` (and at most
    /// `max_ms`), under the store's epoch, if any is ready. Jobs of cancelled sweeps are
    /// never leased: cancelling cancels them first. [`StoreError::EpochLost`] when the
    /// epoch marker is not the store's.
    async fn lease(
        &self,
        worker: &str,
        lease_ms: i64,
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<Option<Lease>, StoreError>;

    /// Reads the epoch marker; adopts its epoch when it is [`EpochCheck::Current`].
    async fn epoch_check(&self) -> Result<EpochCheck, StoreError>;

    /// Writes the marker of a new `epoch` (from outside the store) and serves it.
    async fn start_epoch(&self, epoch: u64) -> Result<(), StoreError>;

    /// Finds jobs whose indices disagree with their state (a partial loss: a deleted
    /// set, an evicted key) and fixes the indices from the states.
    async fn repair(&self, now: UnixMs) -> Result<Repaired, StoreError>;

    /// Records `sweep` as the owner of `key` if the job has none.
    async fn set_owner(&self, key: &JobKey, sweep: &SweepId) -> Result<(), StoreError>;

    /// Applies a lease holder's or the reaper's event to one job; returns the new state.
    async fn apply(&self, key: &JobKey, event: &JobEvent, now: UnixMs) -> Result<JobState, StoreError>;

    /// [`JobStore::apply`] for a caller that has just read the job's state as `current`:
    /// adapters may save the re-read, deciding again only if the job moved meanwhile.
    async fn apply_from(
        &self,
        key: &JobKey,
        current: &JobState,
        event: &JobEvent,
        now: UnixMs,
    ) -> Result<JobState, StoreError> {
        let _ = current;
        self.apply(key, event, now).await
    }

    /// Moves every lease past its deadline back to the queue (or to the dead letters);
    /// returns the jobs it moved.
    async fn reap(&self, now: UnixMs) -> Result<Vec<JobKey>, StoreError>;

    /// The jobs leased now (whatever their deadline), in deadline order.
    async fn leased(&self) -> Result<Vec<JobKey>, StoreError>;

    async fn job(&self, key: &JobKey) -> Result<Option<JobRecord>, StoreError>;
    /// States of `keys`, in order (`None` for unknown keys).
    async fn states(&self, keys: &[JobKey]) -> Result<Vec<Option<JobState>>, StoreError>;
    async fn depth(&self) -> Result<QueueDepth, StoreError>;

    async fn put_sweep(&self, sweep: &SweepRecord) -> Result<(), StoreError>;
    async fn sweep(&self, id: &SweepId) -> Result<Option<SweepRecord>, StoreError>;
    async fn sweeps(&self) -> Result<Vec<SweepRecord>, StoreError>;
}

/// The convenience events, shared by every adapter.
impl dyn JobStore {
    pub async fn heartbeat(
        &self,
        key: &JobKey,
        token: Token,
        worker: &str,
        lease_ms: i64,
        now: UnixMs,
    ) -> Result<JobState, StoreError> {
        self.apply(key, &JobEvent::Heartbeat { token, worker: worker.to_string(), lease_ms }, now).await
    }

    pub async fn complete(
        &self,
        key: &JobKey,
        token: Token,
        worker: &str,
        now: UnixMs,
    ) -> Result<JobState, StoreError> {
        self.apply(key, &JobEvent::Complete { token, worker: worker.to_string() }, now).await
    }

    pub async fn fail(
        &self,
        key: &JobKey,
        token: Token,
        worker: &str,
        kind: FailureKind,
        error: &str,
        now: UnixMs,
    ) -> Result<JobState, StoreError> {
        self.apply(key, &JobEvent::Fail { token, worker: worker.to_string(), kind, error: error.to_string() }, now)
            .await
    }

    /// Cancels every non-terminal job of `keys`; returns how many it cancelled.
    pub async fn cancel(&self, keys: &[JobKey], now: UnixMs) -> Result<usize, StoreError> {
        let mut cancelled = 0;
        for (key, state) in keys.iter().zip(self.states(keys).await?) {
            let Some(state) = state else { continue };
            if state.phase.is_terminal() {
                continue;
            }
            match self.apply(key, &JobEvent::Cancel, now).await {
                Ok(_) => cancelled += 1,
                // It ended between the read and the cancel: nothing to do.
                Err(StoreError::Transition(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(cancelled)
    }
}

#[cfg(test)]
mod tests;
