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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wf_data::dataset::{DataRoots, Dataset, DatasetSummary, load_dataset_from, load_summary_from};
use wf_proto::v1;
use wf_shared::DatasetRef;
use wf_shared::age::JobResult;
use wf_shared::backtest::portfolio::Market;
use wf_shared::job::{FailureKind, JobEvent, Phase, SweepId, Token, TransitionError, UnixMs};
use wf_shared::plan::{JobIdentity, JobKey, Manifest, Plan};
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

/// Loads a dataset (or what of it is needed) by URI, horizons and features, within roots.
type DatasetLoader<T> = fn(&str, &[u32], Option<&[String]>, &DataRoots) -> Result<T, wf_data::DataError>;

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

    fn check_dataset_path(&self, uri: &str) -> Result<(), SchedulerError> {
        if let Some(synth) = wf_data::dataset::synth_spec(uri) {
            let denied = |reason: String| SchedulerError::InvalidSpec(SpecErrors::one("dataset.panel", reason));
            let spec = synth.map_err(denied)?;
            let cells = (spec.stocks as u64).saturating_mul(spec.days as u64);
            if cells > self.config.max_synth_cells {
                return Err(denied(format!(
                    "a synthetic market of {} stocks x {} days ({cells} stock-days) is larger than this coordinator's limit of {}",
                    spec.stocks, spec.days, self.config.max_synth_cells
                )));
            }
            return Ok(());
        }
        // Files are checked where they are opened (`load_dataset_from`), through the
        // handle, against the data roots.
        Ok(())
    }

    /// `config`'s dataset, loaded whole (cached).
    async fn dataset(&self, config: &SweepConfig) -> Result<Arc<Dataset>, SchedulerError> {
        self.cached(&self.datasets, config, load_dataset_from).await
    }

    /// What planning reads of `config`'s dataset: a prepared panel's metadata summary (no
    /// value read), else the summary of the loaded dataset (cached).
    async fn summary(&self, config: &SweepConfig) -> Result<Arc<DatasetSummary>, SchedulerError> {
        self.cached(&self.summaries, config, load_summary_from).await
    }

    /// `load` of `config`'s dataset, confined to the data roots, on a blocking thread;
    /// kept in `cache` by URI, horizons and features.
    async fn cached<T: Send + Sync + 'static>(
        &self,
        cache: &Mutex<HashMap<DatasetKey, Arc<T>>>,
        config: &SweepConfig,
        load: DatasetLoader<T>,
    ) -> Result<Arc<T>, SchedulerError> {
        let uri = config.panel.as_str();
        let cache_key = (uri.to_string(), config.horizons.clone(), config.features.clone());
        if let Some(loaded) = lock(cache).get(&cache_key) {
            return Ok(loaded.clone());
        }
        self.check_dataset_path(uri)?;
        let (owned_uri, owned_horizons, owned_features) = cache_key.clone();
        let loaded = tokio::task::spawn_blocking({
            let roots = self.config.data_roots.clone();
            move || load(&owned_uri, &owned_horizons, owned_features.as_deref(), &roots)
        })
        .await
        .map_err(|e| SchedulerError::Internal(format!("dataset loader panicked: {e}")))?
        .map_err(|e| SchedulerError::Dataset { uri: uri.to_string(), reason: e.to_string() })?;
        let loaded = Arc::new(loaded);
        lock(cache).insert(cache_key, loaded.clone());
        Ok(loaded)
    }

    /// Validates `config` (models included) and plans it on its dataset's summary, within
    /// this coordinator's ceiling on jobs per sweep; a backtest's market is read from the
    /// values at once, so a panel without what it needs is refused at submission.
    async fn plan(
        &self,
        config: &SweepConfig,
    ) -> Result<(Arc<DatasetSummary>, Plan, Option<Arc<Market>>), SchedulerError> {
        wf_worker::model::check_models(config).map_err(SchedulerError::InvalidSpec)?;
        let summary = self.summary(config).await?;
        let bounded;
        let config = if config.max_jobs > self.config.max_jobs_per_sweep {
            bounded = SweepConfig { max_jobs: self.config.max_jobs_per_sweep, ..config.clone() };
            &bounded
        } else {
            config
        };
        let plan = wf_shared::plan::plan(config, &summary.plan_input()).map_err(SchedulerError::InvalidSpec)?;
        let market = match &config.backtest {
            None => None,
            Some(grid) => {
                let loaded = self.loaded(config, &summary).await?;
                let (uri, grid) = (config.panel.clone(), grid.clone());
                let market =
                    tokio::task::spawn_blocking(move || wf_data::dataset::backtest_market(&uri, &loaded.panel, &grid))
                        .await
                        .map_err(|e| SchedulerError::Internal(format!("market loader panicked: {e}")))?
                        .map_err(|reason| SchedulerError::InvalidSpec(SpecErrors::one("backtest", reason)))?;
                Some(Arc::new(market))
            }
        };
        Ok((summary, plan, market))
    }

    /// The values of the dataset `summary` describes; refused if they no longer hash as
    /// planned (the file changed since).
    async fn loaded(&self, config: &SweepConfig, summary: &DatasetSummary) -> Result<Arc<Dataset>, SchedulerError> {
        let dataset = self.dataset(config).await?;
        if dataset.content_hash != summary.content_hash {
            return Err(SchedulerError::Dataset {
                uri: config.panel.clone(),
                reason: format!(
                    "its content hash is {}, not {} as when the sweep was planned: the file changed",
                    dataset.content_hash.short(),
                    summary.content_hash.short()
                ),
            });
        }
        Ok(dataset)
    }

    /// A fresh sweep id (the time, a counter, the spec and the process mixed).
    fn new_sweep_id(&self, spec_toml: &str, now: UnixMs) -> SweepId {
        let entropy = now as u64
            ^ self.submissions.fetch_add(1, Ordering::Relaxed).rotate_left(48)
            ^ blake3::hash(spec_toml.as_bytes()).as_bytes()[0] as u64;
        SweepId::from_entropy(entropy ^ u64::from(std::process::id()).rotate_left(20))
    }

    /// [`Self::submit_as`] for the local tenant (no authentication).
    pub async fn submit(&self, spec_toml: &str) -> Result<Submitted, SchedulerError> {
        self.submit_as(spec_toml, crate::auth::LOCAL_TENANT).await
    }

    /// The tenant a sweep belongs to.
    pub async fn tenant_of(&self, id: &SweepId) -> Result<String, SchedulerError> {
        Ok(self.sweep_record(id).await?.tenant.clone())
    }

    /// Validates, plans, stores the manifest and queues the jobs without a result, as a
    /// sweep of `tenant`.
    pub async fn submit_as(&self, spec_toml: &str, tenant: &str) -> Result<Submitted, SchedulerError> {
        let config = SweepConfig::from_toml(spec_toml).map_err(SchedulerError::InvalidSpec)?;
        let (summary, plan, market) = self.plan(&config).await?;
        let now = self.clock.now_ms();
        let id = self.new_sweep_id(spec_toml, now);

        let manifest = Manifest::new(&config, summary.content_hash, &summary.calendar, &plan);
        let manifest = serde_json::to_vec_pretty(&manifest).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        self.artifacts.put_sweep_file(&id, "manifest.json", Bytes::from(manifest)).await?;

        let keys: Vec<JobKey> = plan.jobs.iter().map(|job| job.key).collect();
        let max_job_ms = match self.config.job_limit {
            JobLimit::FromSpec => Some(default_job_limit_ms(&config, summary.stocks)),
            JobLimit::Fixed(ms) => Some(ms),
            JobLimit::Unlimited => None,
        };
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
            dataset: DatasetRef { uri: config.panel.clone(), content_hash: summary.content_hash },
            jobs: keys.clone(),
            precomputed: precomputed.clone(),
            jobs_before_dedup: plan.jobs_before_dedup,
            submitted_at: now,
            cancelled: false,
            max_job_ms,
            tenant: tenant.to_string(),
            training: None,
        };
        let record_json = serde_json::to_vec_pretty(&record).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        self.artifacts.put_sweep_file(&id, "sweep.json", Bytes::from(record_json)).await?;
        self.store.put_sweep(&record).await?;
        let done: BTreeSet<JobKey> = precomputed.iter().copied().collect();
        let to_queue: Vec<JobKey> = keys.iter().filter(|key| !done.contains(key)).copied().collect();
        let added = self.store.enqueue_limited(&id, &to_queue, max_job_ms, now).await?;
        // Jobs an earlier sweep dead-lettered or cancelled, and jobs whose stored result
        // was just refused, get another chance here.
        let resubmitted = self.store.resubmit(&id, &to_queue, now).await?;
        let added = added + resubmitted;
        lock(&self.plans).insert(id.clone(), Arc::new(Planned { config, plan, summary, market }));
        let max_job_seconds = max_job_ms.map(|ms| ms / 1_000);
        info!(sweep = %id, jobs = keys.len(), queued = added, resubmitted, reused = keys.len() - added, ?max_job_seconds, "sweep submitted");
        let tenant = tenant.to_string();
        metrics::counter!("wf_sweeps_submitted_total", "tenant" => tenant.clone()).increment(1);
        metrics::counter!("wf_jobs_enqueued_total", "tenant" => tenant.clone()).increment(added as u64);
        metrics::counter!("wf_jobs_reused_total", "tenant" => tenant).increment((keys.len() - added) as u64);
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
            tenant: record.tenant.clone(),
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
            progress.expiries += u64::from(state.expiries);
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

    /// Stops leasing the sweep's jobs, except those another live sweep still needs
    /// (deduplicated into it); busy workers learn it from their next heartbeat.
    pub async fn cancel(&self, id: &SweepId) -> Result<Progress, SchedulerError> {
        let mut record = self.store.sweep(id).await?.ok_or_else(|| SchedulerError::UnknownSweep(id.to_string()))?;
        let mut needed = BTreeSet::new();
        for other in self.store.sweeps().await? {
            if other.id != *id && !other.cancelled {
                needed.extend(other.jobs);
            }
        }
        record.cancelled = true;
        self.store.put_sweep(&record).await?;
        // The artifact store's copy too: a reconciliation must not bring the sweep back.
        let record_json = serde_json::to_vec_pretty(&record).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        self.artifacts.put_sweep_file(id, "sweep.json", Bytes::from(record_json)).await?;
        lock(&self.sweeps).remove(id);
        let own: Vec<JobKey> = record.jobs.iter().filter(|key| !needed.contains(key)).copied().collect();
        let cancelled = self.store.cancel(&own, self.clock.now_ms()).await?;
        info!(sweep = %id, cancelled, kept_for_other_sweeps = record.jobs.len() - own.len(), "sweep cancelled");
        self.changed();
        self.progress_of(&record).await
    }

    /// Leases a ready job to `worker`, waiting up to `wait` for one.
    pub async fn lease(&self, worker: &str, wait: Duration) -> Result<Option<JobLease>, SchedulerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let woken = self.work.notified();
            // Jobs carry their sweep's limit; a fixed one applies to any that does not.
            let max_ms = match self.config.job_limit {
                JobLimit::Fixed(ms) => Some(ms),
                JobLimit::FromSpec | JobLimit::Unlimited => None,
            };
            let lease_ms = self.config.lease_ms;
            let leased = match self.store.lease(worker, lease_ms, max_ms, self.clock.now_ms()).await {
                Err(StoreError::EpochLost) => {
                    self.ensure_epoch().await?;
                    self.store.lease(worker, lease_ms, max_ms, self.clock.now_ms()).await?
                }
                other => other?,
            };
            if let Some(lease) = leased {
                if self.complete_if_committed(&lease, worker).await? {
                    continue;
                }
                let record = self.sweep_record(&lease.sweep).await?;
                metrics::counter!("wf_leases_total").increment(1);
                self.changed();
                return Ok(Some(JobLease {
                    spec_toml: record.spec_toml.clone(),
                    dataset: record.dataset.clone(),
                    lease_ms: self.config.lease_ms,
                    training: record.training.clone(),
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

    /// A job leased again although its result is committed: the job store lost the
    /// commit (a Redis restarted from an append-only file that missed its last second of
    /// writes acknowledged it, then rolled it back). The committed result stands for the
    /// job, so the lease is completed here and nothing is trained again. Returns whether
    /// it was. One existence check per lease; the result is read only when it exists.
    async fn complete_if_committed(&self, lease: &Lease, worker: &str) -> Result<bool, SchedulerError> {
        if !self.artifacts.has_result(&lease.key).await?
            || self.verified_result(&lease.key, reuse::Expected::KeyOnly).await?.is_none()
        {
            return Ok(false);
        }
        let event = JobEvent::Complete { token: lease.token, worker: worker.to_string() };
        match self.store.apply(&lease.key, &event, self.clock.now_ms()).await {
            Ok(_) => {}
            // This grant was overtaken before it was handed out (it expired, and the
            // attempt granted next committed the result found): it is void, and the job
            // is done; nothing to hand out.
            Err(StoreError::Transition(_)) => return Ok(true),
            Err(error) => return Err(error.into()),
        }
        warn!(
            job = %lease.key.short(),
            token = %lease.token,
            "the job store had lost this job's commit; its committed result stands and the job is not trained again"
        );
        metrics::counter!("wf_results_recovered_total").increment(1);
        self.changed();
        Ok(true)
    }

    /// Extends `worker`'s lease `token` of job `key`.
    pub async fn heartbeat(&self, key: &JobKey, token: Token, worker: &str) -> Result<HeartbeatAction, SchedulerError> {
        match self.store.heartbeat(key, token, worker, self.config.lease_ms, self.clock.now_ms()).await {
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

    /// Commits a job's result. Only the holder of the current lease may, and only with
    /// a result whose identity hashes to the job's key. The result is published (written
    /// to the artifact store, flushed to disk) only after the holder's `Complete` won the
    /// guarded write, so a stale attempt's bytes never become the result. A retried
    /// report of the attempt that won publishes again if the result is missing (the
    /// coordinator stopped between the two). It is stored sealed: the identity in full
    /// and a checksum (`wf_proto::stored`).
    pub async fn report_result(
        &self,
        key: &JobKey,
        token: Token,
        worker: &str,
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
        let result = JobResult::try_from(result)?;
        let seconds = result.training.seconds;
        let record = self.store.job(key).await?.ok_or_else(|| SchedulerError::UnknownJob(key.short()))?;
        let event = JobEvent::Complete { token, worker: worker.to_string() };
        let now = self.clock.now_ms();
        let won = match self.store.apply_from(key, &record.state, &event, now).await {
            Ok(state) => state != record.state,
            Err(StoreError::Transition(error)) => {
                if matches!(record.state.phase, Phase::Cancelled) {
                    // Its sweep was cancelled while it trained: expected, not a fault.
                    info!(job = %key.short(), %token, "result of a cancelled job rejected");
                } else {
                    warn!(job = %key.short(), %token, worker, %error, "result rejected: not the lease holder's");
                }
                metrics::counter!("wf_results_rejected_total").increment(1);
                return Err(SchedulerError::LeaseLost(error));
            }
            Err(error) => return Err(error.into()),
        };
        if !won && self.artifacts.has_result(key).await? {
            // A retried report of the attempt that committed: already published.
            return Ok(());
        }
        self.artifacts.put_result(key, bytes).await?;
        info!(job = %key.short(), %token, worker, republished = !won, "result committed");
        if won {
            metrics::counter!("wf_results_committed_total").increment(1);
            metrics::histogram!("wf_job_training_seconds").record(seconds);
            let kind = JobIdentity::parse(&identity).map_or("unknown", |identity| identity.model.kind_name());
            let (delta, rank_ic) = result.summary();
            if let Some(delta) = delta {
                metrics::histogram!("wf_job_delta_p_at_k", "kind" => kind).record(delta);
            }
            if let Some(rank_ic) = rank_ic {
                metrics::histogram!("wf_job_rank_ic", "kind" => kind).record(rank_ic);
            }
        }
        self.changed();
        Ok(())
    }

    pub async fn report_failure(
        &self,
        key: &JobKey,
        token: Token,
        worker: &str,
        kind: FailureKind,
        error: &str,
    ) -> Result<(), SchedulerError> {
        let state = self.store.fail(key, token, worker, kind, error, self.clock.now_ms()).await?;
        metrics::counter!("wf_job_failures_total", "kind" => kind.name()).increment(1);
        match state.phase {
            Phase::DeadLettered => metrics::counter!("wf_dead_letters_total").increment(1),
            Phase::Queued { .. } if kind != FailureKind::Preempted => {
                metrics::counter!("wf_job_retries_total").increment(1);
            }
            _ => {}
        }
        warn!(job = %key.short(), %token, ?kind, phase = state.phase.name(), error, "job failed");
        self.work.notify_waiters();
        self.changed();
        Ok(())
    }

    /// Re-queues expired leases until `shutdown`, checking the store's epoch on every
    /// tick. After a start, a new epoch or a store outage it waits one lease period
    /// first, so that workers cut off by the outage can heartbeat again.
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
            if let Err(error) = self.reap_once().await {
                if !self.store_down.swap(true, Ordering::SeqCst) {
                    warn!(%error, "the job store is unreachable; leases will get a grace period when it is back");
                }
                continue;
            }
            if self.store_down.swap(false, Ordering::SeqCst) {
                self.grant_grace();
                info!(grace_ms = self.config.lease_ms, "the job store is back; live workers get one lease period");
            }
        }
    }

    /// One reaper tick: the epoch check, expired leases (after any grace), queue depths.
    pub async fn reap_once(&self) -> Result<(), SchedulerError> {
        self.ensure_epoch().await?;
        let now = self.clock.now_ms();
        if now >= self.grace_until.load(Ordering::SeqCst) {
            let reaped = self.store.reap(now).await?;
            if !reaped.is_empty() {
                let states = self.store.states(&reaped).await?;
                for (key, state) in reaped.iter().zip(states) {
                    let error = state.and_then(|s| s.last_error).unwrap_or_default();
                    if error.contains(wf_shared::job::HUNG) {
                        metrics::counter!("wf_jobs_hung_total").increment(1);
                        warn!(job = %key.short(), error, "job ran past its maximum duration; failed");
                    } else {
                        metrics::counter!("wf_leases_expired_total").increment(1);
                        warn!(job = %key.short(), "lease expired; job re-queued");
                    }
                }
                self.work.notify_waiters();
                self.changed();
            }
        }
        let depth = self.store.depth().await?;
        metrics::gauge!("wf_queue_jobs", "state" => "queued").set(depth.queued as f64);
        metrics::gauge!("wf_queue_jobs", "state" => "leased").set(depth.leased as f64);
        metrics::gauge!("wf_queue_jobs", "state" => "dead_lettered").set(depth.dead_lettered as f64);
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod recovery;
mod reports;
mod retrain;
mod reuse;

pub use retrain::{Retrain, RetrainRequest};

use reuse::Expected;
pub use reuse::result_for_planned;

#[cfg(test)]
mod model_check;
#[cfg(test)]
mod tests;
