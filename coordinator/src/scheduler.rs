//! The scheduler: what the coordinator does for each request, over the job store, the
//! artifact store and an injected clock. The gRPC handlers only convert and call here.
//!
//! It holds no state a restart would lose: sweeps and job states are in the job store,
//! manifests and results in the artifact store. What it keeps in memory (loaded
//! datasets, plans) is a cache rebuilt on demand.
//!
//! This file is the façade: the [`Scheduler`], its configuration, errors and answers,
//! and the lease epochs. What it does is split by noun, each an `impl Scheduler`:
//!
//! | module | does |
//! |---|---|
//! | `sweeps` | plan and submit a sweep (tenancy, reuse), progress, list, cancel |
//! | `datasets` | open a sweep's dataset within the data roots and ceilings, cached |
//! | `leases` | grant a ready job, heartbeats, reap expired leases |
//! | `commits` | a worker's result (after its guarded `Complete`) or failure |
//! | `reuse` | verify a stored result before it stands for a job |
//! | `recovery` | the reconciler: what the job store lost, restored from the artifacts |
//! | `reports` | a sweep's report from its committed results |
//! | `retrain` | a live deployment's retrain as a training-only job |

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};
use wf_data::dataset::{DataRoots, Dataset, DatasetSource, DatasetSummary};
use wf_proto::v1;
use wf_shared::DatasetRef;
use wf_shared::backtest::portfolio::Market;
use wf_shared::job::{SweepId, TransitionError, UnixMs};
use wf_shared::plan::Plan;
use wf_shared::spec::{SpecErrors, SweepConfig};

use crate::artifact::{ArtifactError, ArtifactStore};
use crate::store::{EpochCheck, JobStore, Lease, StoreError, SweepRecord};

/// The source of "now" for every decision.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> UnixMs;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMs {
        chrono::Utc::now().timestamp_millis()
    }
}

/// Runtime settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How long a lease lasts without a heartbeat.
    pub lease_ms: i64,
    /// How often waiting lease calls and the reaper look again without being woken.
    pub poll_ms: u64,
    /// Where dataset files may be read from (`wf coordinator`: only under its
    /// `--data-root`s; none: `synth:` only).
    pub data_roots: DataRoots,
    /// How often the server reconciles the job store with the artifact store (the first
    /// time at start); `None`: never (`wf run`, whose store starts empty on purpose).
    pub reconcile_every: Option<Duration>,
    /// The longest one attempt may run, heartbeats or not: past it, the job is failed as
    /// retryable (a hung job).
    pub job_limit: JobLimit,
    /// The most distinct jobs one sweep may plan; a spec's `[limits] max_jobs` may only
    /// lower it.
    pub max_jobs_per_sweep: u64,
    /// The largest `synth:` market a sweep may ask for, in stocks × days.
    pub max_synth_cells: u64,
    /// The external trainers a spec may name, pinned into its text at submission.
    pub trainers: Arc<wf_worker::external::Trainers>,
}

/// The default ceiling on jobs per sweep (the jp grid plans 2,559).
pub const DEFAULT_MAX_JOBS_PER_SWEEP: u64 = 100_000;
/// The default largest `synth:` market: 4,000 stocks × 2,500 days.
pub const DEFAULT_MAX_SYNTH_CELLS: u64 = 10_000_000;

/// How long one attempt may run before it is failed as hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobLimit {
    /// From each sweep's size, at submission ([`default_job_limit_ms`]).
    FromSpec,
    /// The same for every job, in milliseconds.
    Fixed(i64),
    /// No limit.
    Unlimited,
}

/// The default limit on one attempt of a sweep's jobs: 30 minutes plus, for its
/// largest training, 20 µs (`linear`, `mlp`) or 200 µs (`patchtst`) per unit of
/// work, a unit being one stock × one day of the longest train window × one epoch. The
/// jp grid's `mlp` job at 4,000 stocks (463 training days, 28 epochs) took 141 s on 2
/// cores, 2.7 µs per unit: the rates leave a margin of seven times and more, and the
/// 30 minutes cover loading and scoring.
pub fn default_job_limit_ms(config: &SweepConfig, stocks: usize) -> i64 {
    use wf_shared::model::ModelSpec;
    let days = config.train_windows.iter().copied().max().unwrap_or(0) as f64;
    let work = wf_shared::model::resolve_models(config)
        .unwrap_or_default()
        .iter()
        .map(|spec| {
            let micros = if matches!(spec, ModelSpec::Patchtst { .. }) { 200.0 } else { 20.0 };
            // A factor is not trained: scoring only, a fraction of one epoch.
            let epochs = spec.train_params().map_or(0.1, |params| f64::from(params.epochs));
            micros * epochs * days * stocks as f64 / 1_000.0
        })
        .fold(0.0, f64::max);
    (30 * 60_000) + work.min(1e12) as i64
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            poll_ms: 250,
            data_roots: DataRoots::Any,
            reconcile_every: Some(Duration::from_secs(60)),
            job_limit: JobLimit::FromSpec,
            max_jobs_per_sweep: DEFAULT_MAX_JOBS_PER_SWEEP,
            max_synth_cells: DEFAULT_MAX_SYNTH_CELLS,
            trainers: Arc::default(),
        }
    }
}

/// What a reconciliation restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Sweeps in the artifact store that the job store had lost.
    pub sweeps_restored: usize,
    /// Jobs without a result that the job store had lost (or completed without a
    /// published result), queued again.
    pub jobs_requeued: usize,
    /// Index entries and owners repaired after a partial loss.
    pub repaired: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid sweep spec: {0}")]
    InvalidSpec(SpecErrors),
    #[error("{0}")]
    InvalidArgument(#[from] wf_proto::ConversionError),
    #[error("sweep {0} not found")]
    UnknownSweep(String),
    #[error("job {0} not found")]
    UnknownJob(String),
    /// The caller's lease is no longer current: stop working on the job.
    #[error("lease lost: {0}")]
    LeaseLost(TransitionError),
    #[error("dataset {uri}: {reason}")]
    Dataset { uri: String, reason: String },
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for SchedulerError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Transition(transition) => Self::LeaseLost(transition),
            StoreError::UnknownJob(key) => Self::UnknownJob(key),
            other => Self::Store(other),
        }
    }
}

/// A sweep's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub sweep_id: String,
    pub name: String,
    /// The tenant the sweep belongs to.
    pub tenant: String,
    pub status: SweepStatus,
    pub total: u64,
    pub succeeded: u64,
    pub running: u64,
    pub queued: u64,
    pub dead_lettered: u64,
    pub cancelled: u64,
    pub failures: u64,
    pub expiries: u64,
    pub preemptions: u64,
    pub submitted_at: UnixMs,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SweepStatus {
    #[default]
    Running,
    Finished,
    Cancelled,
}

/// What `SubmitSweep` answers.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub progress: Progress,
    pub jobs_before_dedup: u64,
    pub jobs: u64,
    pub reused: u64,
}

/// What a worker gets with a lease.
#[derive(Debug, Clone)]
pub struct JobLease {
    pub lease: Lease,
    pub spec_toml: String,
    pub dataset: DatasetRef,
    pub lease_ms: i64,
    /// A training-only job's line (a live retrain), which the worker builds it from.
    pub training: Option<wf_shared::plan::TrainingLine>,
    /// The job's time limit (the sweep's), if any.
    pub max_job_ms: Option<i64>,
}

impl From<JobLease> for v1::JobLease {
    fn from(granted: JobLease) -> Self {
        Self {
            job_key: granted.lease.key.to_string(),
            attempt: granted.lease.token.attempt,
            epoch: granted.lease.token.epoch,
            sweep_id: granted.lease.sweep.to_string(),
            spec_toml: granted.spec_toml,
            dataset: Some(granted.dataset.into()),
            lease_ms: u32::try_from(granted.lease_ms).unwrap_or(u32::MAX),
            training: granted.training.map(|line| v1::TrainingLine {
                model: line.model,
                seed: line.seed,
                window: line.window,
                retrain_date: line.retrain.to_string(),
            }),
            max_job_ms: granted.max_job_ms.map_or(0, |ms| u64::try_from(ms).unwrap_or(0)),
        }
    }
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    Continue,
    Cancel,
}

/// A loaded dataset's cache key: its URI, the horizons a synthetic one is built with and
/// the features the spec names (`None`: the panel's declared ones).
type DatasetKey = (String, Vec<u32>, Option<Vec<String>>);

/// What of an opened dataset a cache keeps: the whole dataset, or its summary.
type DatasetLoader<T> = fn(&DatasetSource) -> Result<T, wf_data::DataError>;

/// A sweep planned on its dataset (cached).
#[derive(Debug)]
struct Planned {
    config: SweepConfig,
    plan: Plan,
    /// What the plan read of the dataset (a prepared panel's metadata); reports load the
    /// values when they are built.
    summary: Arc<DatasetSummary>,
    /// The backtest's market, when the spec has a `[backtest]` section.
    market: Option<Arc<Market>>,
}

/// The coordinator's decisions, over its stores.
#[derive(Debug)]
pub struct Scheduler {
    store: Arc<dyn JobStore>,
    artifacts: ArtifactStore,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    datasets: Mutex<HashMap<DatasetKey, Arc<Dataset>>>,
    summaries: Mutex<HashMap<DatasetKey, Arc<DatasetSummary>>>,
    plans: Mutex<HashMap<SweepId, Arc<Planned>>>,
    sweeps: Mutex<HashMap<SweepId, Arc<SweepRecord>>>,
    /// Wakes lease calls waiting for work.
    work: Notify,
    /// Bumped on every job state change, for progress watchers.
    changes: watch::Sender<u64>,
    submissions: AtomicU64,
    /// Held while an epoch is checked or started, so that one new epoch is started at a time.
    epoch_lock: tokio::sync::Mutex<()>,
    /// The reaper expires nothing before this: after a start, a new epoch or a store
    /// outage, live workers get one lease period to heartbeat again.
    grace_until: AtomicI64,
    /// The reaper's last look at the store failed.
    store_down: AtomicBool,
    /// Epochs this process started.
    epochs_started: AtomicU64,
    /// Workers one of whose lease calls failed in the store, with when: the store may
    /// have granted the lease anyway (a command that timed out, then ran), to a worker
    /// that was told the call failed. Their lease calls look for it for a lease period
    /// ([`Scheduler::lease_holding`]).
    uncertain: Mutex<HashMap<String, Uncertain>>,
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn JobStore>,
        artifacts: ArtifactStore,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
    ) -> Self {
        let grace_until = AtomicI64::new(clock.now_ms() + config.lease_ms);
        Self {
            store,
            artifacts,
            clock,
            config,
            datasets: Mutex::default(),
            summaries: Mutex::default(),
            plans: Mutex::default(),
            sweeps: Mutex::default(),
            work: Notify::new(),
            changes: watch::Sender::new(0),
            submissions: AtomicU64::new(0),
            epoch_lock: tokio::sync::Mutex::new(()),
            grace_until,
            store_down: AtomicBool::new(false),
            epochs_started: AtomicU64::new(0),
            uncertain: Mutex::default(),
        }
    }

    /// Gives live workers one lease period, from now, to heartbeat before the reaper
    /// expires their leases.
    fn grant_grace(&self) {
        self.grace_until.fetch_max(self.clock.now_ms() + self.config.lease_ms, Ordering::SeqCst);
    }

    /// The epoch the job store grants leases in: the one its marker names, or, when the
    /// marker is gone or from another store instance (a flush, a lost hash, a restart
    /// that may have rolled back state), a new one from the artifact store, which also
    /// gives live workers a grace period. Returns the epoch.
    pub async fn ensure_epoch(&self) -> Result<u64, SchedulerError> {
        let _held = self.epoch_lock.lock().await;
        if let EpochCheck::Current(epoch) = self.store.epoch_check().await? {
            return Ok(epoch);
        }
        self.start_epoch("a fresh or restarted job store, or one that lost state").await
    }

    /// Starts a new epoch whatever the marker says (the store lost jobs).
    pub async fn new_epoch(&self, why: &str) -> Result<u64, SchedulerError> {
        let _held = self.epoch_lock.lock().await;
        self.start_epoch(why).await
    }

    async fn start_epoch(&self, why: &str) -> Result<u64, SchedulerError> {
        let epoch = self.artifacts.next_epoch().await?;
        self.store.start_epoch(epoch).await?;
        self.grant_grace();
        if self.epochs_started.fetch_add(1, Ordering::SeqCst) == 0 {
            // This process's first: routine at every start.
            info!(epoch, why, "started a new lease epoch");
        } else {
            warn!(epoch, why, "started a new lease epoch");
        }
        metrics::counter!("wf_epochs_started_total").increment(1);
        metrics::gauge!("wf_epoch").set(epoch as f64);
        Ok(epoch)
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// A receiver that changes whenever a job's state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A worker whose lease call failed in the store ([`Scheduler::lease_holding`]).
#[derive(Debug, Default)]
struct Uncertain {
    /// When its last lease call failed.
    failed_at: UnixMs,
    /// The leases handed to it again since, by key and attempt: never handed twice.
    handed: std::collections::HashSet<(wf_shared::plan::JobKey, u32)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod commits;
mod datasets;
mod leases;
mod recovery;
mod reports;
mod retrain;
mod reuse;
mod sweeps;

pub use retrain::{Retrain, RetrainRequest};

pub use reuse::result_for_planned;

#[cfg(test)]
mod model_check;
#[cfg(test)]
mod tests;
