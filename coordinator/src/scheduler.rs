//! The scheduler: what the coordinator does for each request, over the job store, the
//! artifact store and an injected clock. The gRPC handlers only convert and call here.
//!
//! It holds no state a restart would lose: sweeps and job states are in the job store,
//! manifests and results in the artifact store. What it keeps in memory (loaded
//! datasets, plans) is a cache rebuilt on demand.
//!
//! This file holds submission, progress, leasing, reporting results and reaping; the
//! rest is split by noun: `reuse` (verifying stored results before reuse), `recovery`
//! (the reconciler) and `reports` (building a sweep's report).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wf_data::dataset::{Dataset, load_dataset};
use wf_proto::v1;
use wf_shared::DatasetRef;
use wf_shared::age::JobResult;
use wf_shared::job::{FailureKind, JobEvent, Phase, SweepId, TransitionError, UnixMs};
use wf_shared::plan::{JobKey, Manifest, Plan, plan_panel};
use wf_shared::spec::{SpecErrors, SweepConfig};

use crate::artifact::{ArtifactError, ArtifactStore};
use crate::store::{JobStore, Lease, StoreError, SweepRecord};

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
    /// Directories datasets may be read from; empty allows any path.
    pub data_roots: Vec<std::path::PathBuf>,
    /// How often the server reconciles the job store with the artifact store (the first
    /// time at start); `None`: never (`wf run`, whose store starts empty on purpose).
    pub reconcile_every: Option<Duration>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { lease_ms: 30_000, poll_ms: 250, data_roots: Vec::new(), reconcile_every: Some(Duration::from_secs(60)) }
    }
}

/// What a reconciliation restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Sweeps in the artifact store that the job store had lost.
    pub sweeps_restored: usize,
    /// Jobs without a result that the job store had lost, queued again.
    pub jobs_requeued: usize,
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
    pub status: SweepStatus,
    pub total: u64,
    pub succeeded: u64,
    pub running: u64,
    pub queued: u64,
    pub dead_lettered: u64,
    pub cancelled: u64,
    pub failures: u64,
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
}

impl From<JobLease> for v1::JobLease {
    fn from(granted: JobLease) -> Self {
        Self {
            job_key: granted.lease.key.to_string(),
            attempt: granted.lease.attempt,
            sweep_id: granted.lease.sweep.to_string(),
            spec_toml: granted.spec_toml,
            dataset: Some(granted.dataset.into()),
            lease_ms: u32::try_from(granted.lease_ms).unwrap_or(u32::MAX),
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

/// A sweep planned on its dataset (cached).
#[derive(Debug)]
struct Planned {
    config: SweepConfig,
    plan: Plan,
    dataset: Arc<Dataset>,
}

/// The coordinator's decisions, over its stores.
#[derive(Debug)]
pub struct Scheduler {
    store: Arc<dyn JobStore>,
    artifacts: ArtifactStore,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    datasets: Mutex<HashMap<DatasetKey, Arc<Dataset>>>,
    plans: Mutex<HashMap<SweepId, Arc<Planned>>>,
    sweeps: Mutex<HashMap<SweepId, Arc<SweepRecord>>>,
    /// Wakes lease calls waiting for work.
    work: Notify,
    /// Bumped on every job state change, for progress watchers.
    changes: watch::Sender<u64>,
    submissions: AtomicU64,
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn JobStore>,
        artifacts: ArtifactStore,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
    ) -> Self {
        Self {
            store,
            artifacts,
            clock,
            config,
            datasets: Mutex::default(),
            plans: Mutex::default(),
            sweeps: Mutex::default(),
            work: Notify::new(),
            changes: watch::Sender::new(0),
            submissions: AtomicU64::new(0),
        }
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

    fn check_dataset_path(&self, uri: &str) -> Result<(), SchedulerError> {
        if self.config.data_roots.is_empty() || uri.starts_with("synth:") {
            return Ok(());
        }
        let denied = |reason: String| SchedulerError::InvalidSpec(SpecErrors::one("dataset.panel", reason));
        let path = std::fs::canonicalize(uri).map_err(|e| denied(format!("cannot read {uri}: {e}")))?;
        if self.config.data_roots.iter().any(|root| path.starts_with(root)) {
            Ok(())
        } else {
            Err(denied(format!("{uri} is outside the configured data roots")))
        }
    }

    async fn dataset(&self, config: &SweepConfig) -> Result<Arc<Dataset>, SchedulerError> {
        let uri = config.panel.as_str();
        let cache_key = (uri.to_string(), config.horizons.clone(), config.features.clone());
        if let Some(dataset) = lock(&self.datasets).get(&cache_key) {
            return Ok(dataset.clone());
        }
        self.check_dataset_path(uri)?;
        let (owned_uri, owned_horizons, owned_features) = cache_key.clone();
        let dataset =
            tokio::task::spawn_blocking(move || load_dataset(&owned_uri, &owned_horizons, owned_features.as_deref()))
                .await
                .map_err(|e| SchedulerError::Internal(format!("dataset loader panicked: {e}")))?
                .map_err(|e| SchedulerError::Dataset { uri: uri.to_string(), reason: e.to_string() })?;
        let dataset = Arc::new(dataset);
        lock(&self.datasets).insert(cache_key, dataset.clone());
        Ok(dataset)
    }

    /// Validates `config` (models included) and plans it on its dataset.
    async fn plan(&self, config: &SweepConfig) -> Result<(Arc<Dataset>, Plan), SchedulerError> {
        wf_worker::model::check_models(config).map_err(SchedulerError::InvalidSpec)?;
        let dataset = self.dataset(config).await?;
        let plan = plan_panel(config, &dataset.panel, dataset.content_hash).map_err(SchedulerError::InvalidSpec)?;
        Ok((dataset, plan))
    }

    /// Validates, plans, stores the manifest and queues the jobs without a result.
    pub async fn submit(&self, spec_toml: &str) -> Result<Submitted, SchedulerError> {
        let config = SweepConfig::from_toml(spec_toml).map_err(SchedulerError::InvalidSpec)?;
        let (dataset, plan) = self.plan(&config).await?;
        let now = self.clock.now_ms();
        let entropy = now as u64
            ^ self.submissions.fetch_add(1, Ordering::Relaxed).rotate_left(48)
            ^ blake3::hash(spec_toml.as_bytes()).as_bytes()[0] as u64;
        let id = SweepId::from_entropy(entropy ^ u64::from(std::process::id()).rotate_left(20));

        let manifest = Manifest::new(&config, dataset.content_hash, dataset.panel.calendar(), &plan);
        let manifest = serde_json::to_vec_pretty(&manifest).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        self.artifacts.put_sweep_file(&id, "manifest.json", Bytes::from(manifest)).await?;

        let keys: Vec<JobKey> = plan.jobs.iter().map(|job| job.key).collect();
        let mut precomputed = Vec::new();
        for job in &plan.jobs {
            if self.verified_result(&job.key, Expected::Planned(&job.identity)).await?.is_some() {
                precomputed.push(job.key);
            }
        }
        let record = SweepRecord {
            id: id.clone(),
            name: config.name.clone(),
            spec_toml: spec_toml.to_string(),
            dataset: DatasetRef { uri: config.panel.clone(), content_hash: dataset.content_hash },
            jobs: keys.clone(),
            precomputed: precomputed.clone(),
            jobs_before_dedup: plan.jobs_before_dedup,
            submitted_at: now,
            cancelled: false,
        };
        let record_json = serde_json::to_vec_pretty(&record).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        self.artifacts.put_sweep_file(&id, "sweep.json", Bytes::from(record_json)).await?;
        self.store.put_sweep(&record).await?;
        let done: BTreeSet<JobKey> = precomputed.iter().copied().collect();
        let to_queue: Vec<JobKey> = keys.iter().filter(|key| !done.contains(key)).copied().collect();
        let added = self.store.enqueue(&id, &to_queue, now).await?;
        // Jobs an earlier sweep dead-lettered or cancelled, and jobs whose stored result
        // was just refused, get another chance here.
        let resubmitted = self.store.resubmit(&id, &to_queue, now).await?;
        let added = added + resubmitted;
        lock(&self.plans).insert(id.clone(), Arc::new(Planned { config, plan, dataset }));
        info!(sweep = %id, jobs = keys.len(), queued = added, resubmitted, reused = keys.len() - added, "sweep submitted");
        metrics::counter!("wf_sweeps_submitted_total").increment(1);
        metrics::counter!("wf_jobs_enqueued_total").increment(added as u64);
        metrics::counter!("wf_jobs_reused_total").increment((keys.len() - added) as u64);
        self.work.notify_waiters();
        self.changed();
        Ok(Submitted {
            progress: self.progress(&id).await?,
            jobs_before_dedup: record.jobs_before_dedup,
            jobs: keys.len() as u64,
            reused: (keys.len() - added) as u64,
        })
    }

    async fn sweep_record(&self, id: &SweepId) -> Result<Arc<SweepRecord>, SchedulerError> {
        if let Some(record) = lock(&self.sweeps).get(id)
            && !record.cancelled
        {
            return Ok(record.clone());
        }
        let record = Arc::new(self.store.sweep(id).await?.ok_or_else(|| SchedulerError::UnknownSweep(id.to_string()))?);
        lock(&self.sweeps).insert(id.clone(), record.clone());
        Ok(record)
    }

    /// The sweep's counts, from the job store.
    pub async fn progress(&self, id: &SweepId) -> Result<Progress, SchedulerError> {
        let record = self.store.sweep(id).await?.ok_or_else(|| SchedulerError::UnknownSweep(id.to_string()))?;
        self.progress_of(&record).await
    }

    async fn progress_of(&self, record: &SweepRecord) -> Result<Progress, SchedulerError> {
        let precomputed: BTreeSet<&JobKey> = record.precomputed.iter().collect();
        let mut progress = Progress {
            sweep_id: record.id.to_string(),
            name: record.name.clone(),
            total: record.jobs.len() as u64,
            submitted_at: record.submitted_at,
            ..Progress::default()
        };
        let states = self.store.states(&record.jobs).await?;
        for (key, state) in record.jobs.iter().zip(states) {
            let Some(state) = state else {
                if precomputed.contains(key) {
                    progress.succeeded += 1;
                } else {
                    progress.queued += 1;
                }
                continue;
            };
            progress.failures += u64::from(state.failures);
            progress.preemptions += u64::from(state.preemptions);
            match state.phase {
                Phase::Queued { .. } => progress.queued += 1,
                Phase::Leased { .. } => progress.running += 1,
                Phase::Succeeded { .. } => progress.succeeded += 1,
                Phase::DeadLettered => progress.dead_lettered += 1,
                Phase::Cancelled => progress.cancelled += 1,
            }
        }
        progress.status = if record.cancelled {
            SweepStatus::Cancelled
        } else if progress.queued + progress.running == 0 {
            SweepStatus::Finished
        } else {
            SweepStatus::Running
        };
        Ok(progress)
    }

    pub async fn list(&self) -> Result<Vec<Progress>, SchedulerError> {
        let mut all = Vec::new();
        for record in self.store.sweeps().await? {
            all.push(self.progress_of(&record).await?);
        }
        all.sort_by_key(|p| p.submitted_at);
        Ok(all)
    }

    /// Stops leasing the sweep's jobs; busy workers learn it from their next heartbeat.
    pub async fn cancel(&self, id: &SweepId) -> Result<Progress, SchedulerError> {
        let mut record = self.store.sweep(id).await?.ok_or_else(|| SchedulerError::UnknownSweep(id.to_string()))?;
        record.cancelled = true;
        self.store.put_sweep(&record).await?;
        // The artifact store's copy too: a reconciliation must not bring the sweep back.
        let record_json = serde_json::to_vec_pretty(&record).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        self.artifacts.put_sweep_file(id, "sweep.json", Bytes::from(record_json)).await?;
        lock(&self.sweeps).remove(id);
        let cancelled = self.store.cancel(&record.jobs, self.clock.now_ms()).await?;
        info!(sweep = %id, cancelled, "sweep cancelled");
        self.changed();
        self.progress_of(&record).await
    }

    /// Leases a ready job to `worker`, waiting up to `wait` for one.
    pub async fn lease(&self, worker: &str, wait: Duration) -> Result<Option<JobLease>, SchedulerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let woken = self.work.notified();
            if let Some(lease) = self.store.lease(worker, self.config.lease_ms, self.clock.now_ms()).await? {
                let record = self.sweep_record(&lease.sweep).await?;
                metrics::counter!("wf_leases_total").increment(1);
                self.changed();
                return Ok(Some(JobLease {
                    spec_toml: record.spec_toml.clone(),
                    dataset: record.dataset.clone(),
                    lease_ms: self.config.lease_ms,
                    lease,
                }));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let pause = Duration::from_millis(self.config.poll_ms).min(deadline - now);
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    pub async fn heartbeat(&self, key: &JobKey, attempt: u32) -> Result<HeartbeatAction, SchedulerError> {
        match self.store.heartbeat(key, attempt, self.config.lease_ms, self.clock.now_ms()).await {
            Ok(_) => {
                metrics::counter!("wf_heartbeats_total").increment(1);
                Ok(HeartbeatAction::Continue)
            }
            Err(StoreError::Transition(error)) => {
                let record = self.store.job(key).await?;
                match record.map(|r| r.state.phase) {
                    Some(Phase::Cancelled) => Ok(HeartbeatAction::Cancel),
                    _ => Err(SchedulerError::LeaseLost(error)),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Commits a job's result: only the current attempt may, only once, and only a
    /// result whose identity hashes to the job's key. It is stored sealed: the identity
    /// in full and a checksum (`wf_proto::stored`).
    pub async fn report_result(
        &self,
        key: &JobKey,
        attempt: u32,
        mut result: v1::JobResult,
    ) -> Result<(), SchedulerError> {
        if JobKey::of_identity(&result.identity) != *key {
            let reason = if result.identity.is_empty() {
                "missing (a worker of an earlier protocol?)".to_string()
            } else {
                format!("its hash is not the job key {}: the worker trained another job", key.short())
            };
            metrics::counter!("wf_results_rejected_total").increment(1);
            return Err(wf_proto::ConversionError { field: "result.identity".into(), reason }.into());
        }
        let identity = std::mem::take(&mut result.identity);
        let bytes = Bytes::from(wf_proto::stored::seal(&identity, &result));
        let seconds = JobResult::try_from(result)?.training.seconds;
        let record = self.store.job(key).await?.ok_or_else(|| SchedulerError::UnknownJob(key.short()))?;
        let state = record.state;
        let duplicate = matches!(state.phase, Phase::Succeeded { .. }) && state.attempts_made == attempt;
        if state.current_attempt() != Some(attempt) && !duplicate {
            let error =
                TransitionError::Stale { got: attempt, current: state.attempts_made, phase: state.phase.name() };
            if matches!(state.phase, Phase::Cancelled) {
                // Its sweep was cancelled while it trained: expected, not a fault.
                info!(job = %key.short(), attempt, "result of a cancelled job rejected");
            } else {
                warn!(job = %key.short(), attempt, "stale result rejected");
            }
            metrics::counter!("wf_results_rejected_total").increment(1);
            return Err(SchedulerError::LeaseLost(error));
        }
        let written = self.artifacts.put_result(key, bytes).await?;
        self.store.apply_from(key, &state, &JobEvent::Complete { attempt }, self.clock.now_ms()).await?;
        info!(job = %key.short(), attempt, written, "result committed");
        metrics::counter!("wf_results_committed_total").increment(1);
        metrics::histogram!("wf_job_training_seconds").record(seconds);
        self.changed();
        Ok(())
    }

    pub async fn report_failure(
        &self,
        key: &JobKey,
        attempt: u32,
        kind: FailureKind,
        error: &str,
    ) -> Result<(), SchedulerError> {
        let state = self.store.fail(key, attempt, kind, error, self.clock.now_ms()).await?;
        metrics::counter!("wf_job_failures_total", "kind" => kind.name()).increment(1);
        match state.phase {
            Phase::DeadLettered => metrics::counter!("wf_dead_letters_total").increment(1),
            Phase::Queued { .. } if kind != FailureKind::Preempted => {
                metrics::counter!("wf_job_retries_total").increment(1);
            }
            _ => {}
        }
        warn!(job = %key.short(), attempt, ?kind, phase = state.phase.name(), error, "job failed");
        self.work.notify_waiters();
        self.changed();
        Ok(())
    }

    /// Re-queues expired leases until `shutdown`.
    pub async fn reap_until(&self, shutdown: CancellationToken) {
        let period =
            Duration::from_millis((self.config.lease_ms as u64 / 4).clamp(20, 5_000).min(self.config.poll_ms.max(20)));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.store.reap(self.clock.now_ms()).await {
                Ok(reaped) if !reaped.is_empty() => {
                    metrics::counter!("wf_leases_expired_total").increment(reaped.len() as u64);
                    for key in &reaped {
                        warn!(job = %key.short(), "lease expired; job re-queued");
                    }
                    self.work.notify_waiters();
                    self.changed();
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "reaper failed"),
            }
            match self.store.depth().await {
                Ok(depth) => {
                    metrics::gauge!("wf_queue_jobs", "state" => "queued").set(depth.queued as f64);
                    metrics::gauge!("wf_queue_jobs", "state" => "leased").set(depth.leased as f64);
                    metrics::gauge!("wf_queue_jobs", "state" => "dead_lettered").set(depth.dead_lettered as f64);
                }
                Err(error) => warn!(%error, "cannot read the queue depth"),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod recovery;
mod reports;
mod reuse;
use reuse::Expected;

#[cfg(test)]
mod tests;
