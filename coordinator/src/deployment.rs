//! Persistent deployments (`wf live deploy | advance | status | list | rollback`, `wf
//! predict`): one model configuration, train window, seed and policy, advanced over the
//! panel's days with the live decisions ([`wf_shared::decision`]), each day scored by the live
//! version's own model ([`wf_worker::observer::PanelObserver`]).
//!
//! Everything lives in the artifact store, under `live/<id>/`:
//!
//! | file | written | holds |
//! |---|---|---|
//! | `deployment.json` | once, create-only | the spec (TOML text), model, window, seed, policy, start date |
//! | `state.json` | after every decision day and at the end of an advance | [`LiveState`]: versions, decisions, switches, the next day |
//! | `versions/<n>.safetensors` | once per version, create-only | the version's weights with its job key and dataset hash |
//! | `predictions/<date>.parquet` | by `wf predict` | date, rank, code, score, version |
//!
//! A process killed mid-advance leaves the state of its last decision day; the next
//! advance processes the days after it again, which decide the same (the days and the
//! models are the same), and a version whose weights were written before the kill is
//! loaded rather than trained again: no decision is lost or repeated.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use wf_data::dataset::{DataRoots, Dataset};
use wf_shared::decision::{LivePolicy, LiveState, RECENT_DAYS, RetrainFailure, Version};
use wf_shared::drift::DriftReference;
use wf_shared::plan::{Job, JobKey, Plan, PlanInput};
use wf_shared::spec::SweepConfig;
use wf_worker::artifact::{ArtifactMeta, from_bytes, model_file};
use wf_worker::faults::{Fault, Faults};
use wf_worker::job::run_job;
use wf_worker::model::Ranker;
use wf_worker::observer::PanelObserver;

use crate::artifact::ArtifactStore;
use crate::simulate::live_decision_days;

/// What a deployment is, fixed when it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    /// The sweep spec's TOML text: the dataset, the plan and the model configuration.
    pub spec: String,
    pub model: String,
    pub window: u32,
    pub seed: u64,
    /// As `wf live deploy --policy` took it (a cadence or a policy).
    pub policy: String,
    pub from: chrono::NaiveDate,
    /// Days a retrained version runs in shadow before it may replace the live one.
    #[serde(default)]
    pub shadow_days: u32,
    /// The tenant it belongs to: a coordinator's `Predict` answers only that tenant's
    /// callers (and admins); others are told it does not exist.
    #[serde(default = "local_tenant")]
    pub tenant: String,
}

fn local_tenant() -> String {
    crate::auth::LOCAL_TENANT.to_string()
}

/// Why a deployment command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("{0}")]
    Invalid(String),
    #[error("deployment {0:?} does not exist (`wf live list` shows them)")]
    Unknown(String),
    #[error("deployment {0:?} exists already (`wf live status {0}`)")]
    Exists(String),
    #[error("{0}")]
    Conflict(String),
    /// A prediction asked for a day the deployment has not processed yet.
    #[error("{0}")]
    NotProcessed(String),
    #[error(transparent)]
    Artifact(#[from] crate::artifact::ArtifactError),
    #[error(transparent)]
    Live(#[from] wf_shared::decision::LiveError),
    #[error(transparent)]
    Planning(#[from] wf_data::planning::PlanningError),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

type Result<T> = std::result::Result<T, DeploymentError>;

/// A deployment opened for work: its record, spec, dataset, plan and state.
pub struct Opened {
    pub record: DeploymentRecord,
    pub config: SweepConfig,
    pub dataset: Dataset,
    pub plan: Plan,
    pub model: usize,
    pub policy: LivePolicy,
    pub state: Option<LiveState>,
    /// The panel's per-day digests for the spec: what its retrains' keys and its history
    /// digest are combined from.
    days: wf_shared::dataset::DayView,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("record", &self.record).finish_non_exhaustive()
    }
}

impl Opened {
    /// The line's jobs by retrain day.
    pub fn jobs(&self) -> BTreeMap<usize, &Job> {
        self.plan.line_jobs(self.model, self.record.window, self.record.seed)
    }

    /// The retrain of day `day`: the training-only job of the deployment's line
    /// ([`wf_shared::plan::training_job`]), whose key stays as the panel grows.
    pub fn training_job(&self, day: usize) -> Result<Job> {
        let universe = self.dataset.panel.daily_universe();
        let input = PlanInput::of_panel(&self.dataset.panel, &self.dataset.digests, &universe);
        let (seed, window) = (self.record.seed, self.record.window);
        wf_shared::plan::training_job(&self.config, &input, &self.days, self.model, seed, window, day).map_err(|e| {
            DeploymentError::Invalid(format!("{}: the retrain of {}: {e}", self.record.id, self.date(day)))
        })
    }

    /// The digest of its panel's history before day `next_day` ([`LiveState::history`]).
    pub fn history(&self, next_day: usize) -> wf_shared::DatasetHash {
        let next_day = next_day.min(self.days.days());
        let matured = next_day.saturating_sub(self.config.longest_horizon() as usize + 1);
        self.days.data_digest(0..next_day, 0..matured, 0..0)
    }

    /// Refuses a panel whose days before `state.next_day` are not the ones processed.
    fn check_history(&self, state: &LiveState) -> Result<()> {
        let Some(recorded) = state.history else { return Ok(()) };
        let calendar = self.dataset.panel.calendar();
        if state.next_day > calendar.len() || self.history(state.next_day) != recorded {
            return Err(DeploymentError::Invalid(format!(
                "{}: its panel's history changed: the days before {} are not the ones it processed (a day \
                 inserted, removed or corrected in {}); deploy again on the new history",
                self.record.id,
                calendar.date(state.next_day).map_or_else(|| format!("day {}", state.next_day), |d| d.to_string()),
                self.config.panel
            )));
        }
        Ok(())
    }

    /// Its decision days, through the panel's last day.
    pub fn decision_days(&self) -> Result<Vec<usize>> {
        live_decision_days(&self.plan, &self.policy, self.dataset.panel.calendar(), self.config.start)
            .map_err(|e| DeploymentError::Invalid(e.to_string()))
    }

    /// The date of calendar day `day`.
    pub fn date(&self, day: usize) -> String {
        self.dataset.panel.calendar().date(day).map(|d| d.to_string()).unwrap_or_default()
    }
}

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

/// What an advance did.
#[derive(Debug)]
pub struct Advanced {
    /// The deployment, with its state as stored.
    pub opened: Opened,
    /// Days processed (decided) and stored.
    pub days: usize,
    /// The retrain it stopped before, being trained elsewhere: its day and job.
    pub waiting: Option<(usize, JobKey)>,
}

/// Deployments in an artifact store. Its methods block, on a runtime of their own (call
/// them outside async code, e.g. in `spawn_blocking`).
#[derive(Debug)]
pub struct Deployments {
    store: ArtifactStore,
    /// Always `Some` until dropped (then shut down without blocking, which is allowed
    /// inside async code, where a server drops it).
    runtime: Option<tokio::runtime::Runtime>,
    /// Where their datasets may be read from.
    roots: DataRoots,
    /// Faults injected into retrains trained in this process (tests and drills).
    faults: Option<Faults>,
}

impl Deployments {
    /// Deployments in `store`, reading datasets anywhere (the local CLI).
    pub fn new(store: ArtifactStore) -> anyhow::Result<Self> {
        Self::within(store, DataRoots::Any)
    }

    /// Deployments in `store` whose datasets must be under `roots` (a server).
    pub fn within(store: ArtifactStore, roots: DataRoots) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Self { store, runtime: Some(runtime), roots, faults: None })
    }

    /// These deployments with `faults` injected into the retrains trained in this
    /// process (read once at start: [`Faults::from_env`]).
    pub fn with_faults(mut self, faults: Option<Faults>) -> Self {
        self.faults = faults;
        self
    }

    /// A trainer in this process on `device`, with these deployments' faults.
    pub fn local_trainer(&self, device: Device) -> LocalTrainer {
        LocalTrainer { device, faults: self.faults.clone() }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => unreachable!("the runtime is taken only on drop"),
        }
    }

    pub fn ids(&self) -> Result<Vec<String>> {
        Ok(self.block_on(self.store.live_ids())?)
    }

    fn file(&self, id: &str, name: &str) -> Result<Option<Bytes>> {
        Ok(self.block_on(self.store.live_file(id, name))?)
    }

    fn put(&self, id: &str, name: &str, bytes: Vec<u8>, create_only: bool) -> Result<bool> {
        Ok(self.block_on(self.store.put_live_file(id, name, Bytes::from(bytes), create_only))?)
    }

    pub fn record(&self, id: &str) -> Result<DeploymentRecord> {
        let bytes = self.file(id, "deployment.json")?.ok_or_else(|| DeploymentError::Unknown(id.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| DeploymentError::Invalid(format!("{id}/deployment.json: {e}")))
    }

    pub fn state(&self, id: &str) -> Result<Option<LiveState>> {
        let Some(bytes) = self.file(id, "state.json")? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| DeploymentError::Invalid(format!("{id}/state.json: {e}")))
    }

    /// Saves `state` as the next revision of the one it was read as: refused when another
    /// writer saved in between (a rollback while an advance runs), so neither's decisions
    /// are silently lost. (A check then a write: it narrows the window to a moment; one
    /// writer per deployment at a time is the rule.)
    pub fn save_state(&self, id: &str, state: &mut LiveState) -> Result<()> {
        let stored = self.state(id)?.map_or(0, |s| s.revision);
        if stored != state.revision {
            return Err(DeploymentError::Conflict(format!(
                "{id} changed while this command ran (state revision {stored}, read as {}): another command saved it; \
                 run this one again",
                state.revision
            )));
        }
        state.revision += 1;
        let bytes = serde_json::to_vec(state).map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        self.put(id, "state.json", bytes, false).map(|_| ())
    }

    /// Reads the record and loads what it needs: spec, dataset, plan, state.
    pub fn open(&self, id: &str) -> Result<Opened> {
        let record = self.record(id)?;
        let config = SweepConfig::from_toml(&record.spec)
            .map_err(|e| DeploymentError::Invalid(format!("{id}: its spec no longer reads: {e}")))?;
        let dataset = wf_data::dataset::open(&config.panel, &config.horizons, config.features.as_deref(), &self.roots)
            .and_then(|source| source.whole())
            .map_err(|e| DeploymentError::Other(e.into()))?;
        let plan = wf_data::planning::plan_sweep(&config, &dataset)?;
        let model = config
            .models
            .iter()
            .position(|m| m.name == record.model)
            .ok_or_else(|| DeploymentError::Invalid(format!("{id}: the spec has no model {}", record.model)))?;
        let policy: LivePolicy =
            record.policy.parse().map_err(|e| DeploymentError::Invalid(format!("{id}: policy: {e}")))?;
        let state = self.state(id)?;
        let universe = dataset.panel.daily_universe();
        let input = PlanInput::of_panel(&dataset.panel, &dataset.digests, &universe);
        let days = wf_shared::plan::day_view(&config, &input).map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        Ok(Opened { record, config, dataset, plan, model, policy, state, days })
    }

    /// Creates deployment `record.id` and trains its first version: the line's first
    /// job retrained on or after `record.from`.
    /// Returns it opened, with its state.
    pub fn deploy(&self, record: DeploymentRecord, device: &Device) -> Result<Opened> {
        let id = record.id.clone();
        let text = serde_json::to_vec_pretty(&record).map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        // Created now, or left by a deploy that stopped before its first version's state
        // (the same record and no state): that one is finished here.
        if !self.put(&id, "deployment.json", text, true)? && (self.record(&id)? != record || self.state(&id)?.is_some())
        {
            return Err(DeploymentError::Exists(id));
        }
        let mut opened = self.open(&id)?;
        let from = opened.dataset.panel.calendar().index_on_or_after(record.from);
        let jobs = opened.jobs();
        let (_, first) = jobs.range(from..).next().ok_or_else(|| {
            DeploymentError::Invalid(format!(
                "no job of {} (window {}) is retrained on or after {}",
                record.model, record.window, record.from
            ))
        })?;
        let first = opened.training_job(first.retrain_day)?;
        // Trained and stored now (the model itself is served by `advance` and `predict`).
        self.version_model(&opened, 1, &first, &self.local_trainer(device.clone()), device)?;
        let training = DriftReference::of(&opened.dataset.panel, first.train_days.clone()).training;
        let version = Version::new(first.retrain_day, first.key.to_string(), Some(training));
        let days = opened.decision_days()?;
        let mut state =
            LiveState::new(opened.policy.clone(), opened.config.primary_horizon, opened.config.max_age, days, version)
                .on_basis(opened.config.basis);
        state.shadow_days = opened.record.shadow_days as usize;
        state.history = Some(opened.history(state.next_day));
        self.save_state(&id, &mut state)?;
        opened.state = Some(state);
        Ok(opened)
    }

    /// Version `number`'s model, trained by `job`: loaded from its stored file when it
    /// is there (and is that job's), otherwise trained by `trainer` and stored
    /// (create-only); `None` while `trainer` has it trained elsewhere.
    fn version_model(
        &self,
        opened: &Opened,
        number: u32,
        job: &Job,
        trainer: &dyn Retrainer,
        device: &Device,
    ) -> Result<Option<Box<dyn Ranker>>> {
        let id = &opened.record.id;
        let name = format!("versions/{number}.safetensors");
        let (bytes, stored) = match self.file(id, &name)? {
            Some(bytes) => (bytes.to_vec(), true),
            None => match trainer.model_file(opened, job)? {
                Some(bytes) => (bytes, false),
                None => return Ok(None),
            },
        };
        let (model, meta) =
            from_bytes(&bytes, device).map_err(|e| DeploymentError::Invalid(format!("{id}/{name}: {e}")))?;
        if meta.job_key != job.key.to_string() {
            return Err(DeploymentError::Invalid(format!(
                "{id}/{name} holds job {}, the retrain of {} is job {}",
                &meta.job_key[..meta.job_key.len().min(16)],
                opened.date(job.retrain_day),
                job.key.short()
            )));
        }
        if !stored {
            self.put(id, &name, bytes, true)?;
        }
        Ok(Some(model))
    }

    /// Advances deployment `id` over the days after its last processed one, up to `to`
    /// (default: the panel's last day), having `trainer` train what it decides;
    /// `progress` hears each day. Stops before a retrain that `trainer` has trained
    /// elsewhere, with the state stored after the last decision day before it (the next
    /// advance continues from there and decides the same).
    pub fn advance(
        &self,
        id: &str,
        to: Option<chrono::NaiveDate>,
        device: &Device,
        trainer: &dyn Retrainer,
        progress: &mut dyn FnMut(&Opened, usize, usize),
    ) -> Result<Advanced> {
        let mut opened = self.open(id)?;
        let mut state = opened.state.take().ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
        opened.check_history(&state)?;
        state.decision_days = opened.decision_days()?;
        let panel = &opened.dataset.panel;
        let final_day = panel.calendar().len().saturating_sub(1);
        let last = match to {
            // Before the first trading day: nothing to process.
            Some(date) => match panel.calendar().index_on_or_before(date) {
                Some(day) => day.min(final_day),
                None => {
                    return Ok(Advanced { opened: Opened { state: Some(state), ..opened }, days: 0, waiting: None });
                }
            },
            None => final_day,
        };
        let mut observer = PanelObserver::new(
            panel,
            &opened.config.horizons,
            opened.config.primary_horizon,
            opened.config.k,
            panel.calendar().len().saturating_sub(1),
            device.clone(),
        )
        .ok_or_else(|| DeploymentError::Invalid("the panel has no target for the primary horizon".into()))?;
        // Every version's model is served, so a rollback to any of them reads the same.
        for version in &state.versions {
            let job = opened.training_job(version.retrain_day)?;
            let model = self.version_model(&opened, version.number, &job, trainer, device)?.ok_or_else(|| {
                DeploymentError::Invalid(format!(
                    "{id}: the file of version {} is missing and is being trained again; advance again later",
                    version.number
                ))
            })?;
            observer.add(version.retrain_day, model.into(), job.train_days.clone());
        }
        let first = state.next_day;
        let mut processed = 0;
        let mut waiting = None;
        for day in first..=last {
            let decision = state.advance(day, &mut observer)?.cloned();
            if let Some(decision) = decision {
                if decision.retrain {
                    let job = opened.training_job(day)?;
                    let number = state.versions.len() as u32 + 1;
                    let model = match self.version_model(&opened, number, &job, trainer, device) {
                        Ok(Some(model)) => model,
                        Ok(None) => {
                            waiting = Some((day, job.key));
                            break;
                        }
                        Err(error) => {
                            self.record_retrain_failure(id, day, &job, &error);
                            return Err(error);
                        }
                    };
                    let training = observer.add(day, model.into(), job.train_days.clone());
                    state.promote(Version::new(day, job.key.to_string(), Some(training)))?;
                }
                state.history = Some(opened.history(state.next_day));
                self.save_state(id, &mut state)?;
            }
            processed += 1;
            progress(&opened, day, last);
        }
        if waiting.is_some() {
            // This day and the days before it since the last decision day are not
            // stored: the stored state is where the next advance continues.
            state = self.state(id)?.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
            processed = state.next_day.saturating_sub(first);
        } else {
            state.history = Some(opened.history(state.next_day));
            self.save_state(id, &mut state)?;
        }
        if !observer.failures.is_empty() {
            tracing::warn!(deployment = id, failures = ?observer.failures, "days the live model could not score");
        }
        drop(observer);
        opened.state = Some(state);
        Ok(Advanced { opened, days: processed, waiting })
    }

    /// Adds a failed retrain of `day` to the stored state (the last one saved: this
    /// advance's unsaved days are dropped, so the next advance processes them again).
    /// Failing to record it is logged, not returned: the retrain's error is the news.
    fn record_retrain_failure(&self, id: &str, day: usize, job: &Job, error: &DeploymentError) {
        tracing::error!(deployment = id, job = %job.key.short(), %error, "retrain failed");
        let recorded = self.state(id).and_then(|stored| {
            let mut stored = stored.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
            stored.retrain_failed(RetrainFailure {
                day,
                job_key: job.key.to_string(),
                error: error.to_string(),
                at: chrono::Utc::now().timestamp(),
            });
            self.save_state(id, &mut stored)
        });
        if let Err(failure) = recorded {
            tracing::warn!(deployment = id, %failure, "could not record the failed retrain");
        }
    }

    /// Rolls deployment `id` back to version `to` (default: the previous live one).
    pub fn rollback(&self, id: &str, to: Option<u32>) -> Result<(LiveState, u32)> {
        self.record(id)?;
        let mut state = self.state(id)?.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
        let version = state.rollback(to)?;
        self.save_state(id, &mut state)?;
        Ok((state, version))
    }

    /// The model of version `number` of deployment `id`.
    pub fn load_version(&self, id: &str, number: u32, device: &Device) -> Result<(Box<dyn Ranker>, ArtifactMeta)> {
        let name = format!("versions/{number}.safetensors");
        let bytes = self.file(id, &name)?.ok_or_else(|| DeploymentError::Invalid(format!("{id}/{name} is missing")))?;
        from_bytes(&bytes, device).map_err(|e| DeploymentError::Invalid(format!("{id}/{name}: {e}")))
    }

    /// Writes `predictions/<date>-v<version>.parquet` of deployment `id` unless it is there.
    pub fn put_predictions(&self, id: &str, date: &str, version: u32, parquet: Vec<u8>) -> Result<()> {
        self.put(id, &format!("predictions/{date}-v{version}.parquet"), parquet, true).map(|_| ())
    }
}

impl Drop for Deployments {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One ranked code of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub rank: usize,
    pub code: String,
    pub score: f64,
}

/// A deployment's ranking of a day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub deployment: String,
    pub date: String,
    pub version: u32,
    pub job_key: String,
    /// Stocks ranked that day.
    pub stocks: usize,
    /// Scoring and ranking time (the model and panel in memory).
    pub milliseconds: f64,
    pub top: Vec<Ranked>,
}

/// What a [`Predictor`] keeps of a deployment between calls.
struct Loaded {
    /// The tenant of its record (fixed at deploy).
    tenant: String,
    config: SweepConfig,
    dataset: Dataset,
    /// The panel file's modification time and length when it was read (`None`: a
    /// synthetic panel): a file grown by `wf live ingest` or prepared again is read again.
    stamp: Option<(std::time::SystemTime, u64)>,
}

/// The modification time and length of the panel file `uri` (`None` for a synthetic one).
fn file_stamp(uri: &str) -> Option<(std::time::SystemTime, u64)> {
    if wf_data::dataset::synth_spec(uri).is_some() {
        return None;
    }
    let metadata = std::fs::metadata(uri).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Serves predictions: each deployment's panel and each version's model are loaded once
/// and kept (weights never change; a deployment's state is read at every call, so a
/// promotion or rollback by another process shows at once; its panel is read again when
/// the file changed, so days ingested and advanced by another process show too).
pub struct Predictor {
    deployments: Deployments,
    device: Device,
    /// Trains what [`Self::advance_pending`] decides ([`LocalTrainer`] on `device`
    /// unless set).
    trainer: Box<dyn Retrainer>,
    /// Deployments whose advance waits for a retrain on the workers: since when, and its
    /// job.
    waiting: std::sync::Mutex<HashMap<String, (std::time::Instant, JobKey)>>,
    loaded: std::sync::Mutex<HashMap<String, std::sync::Arc<Loaded>>>,
    models: std::sync::Mutex<HashMap<(String, u32), std::sync::Arc<dyn Ranker>>>,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor").field("deployments", &self.deployments).finish_non_exhaustive()
    }
}

/// The largest `k` a prediction may ask for.
pub const MAX_PREDICTION_K: usize = 100_000;

impl Predictor {
    pub fn new(deployments: Deployments, device: Device) -> Self {
        Self {
            trainer: Box::new(deployments.local_trainer(device.clone())),
            deployments,
            device,
            waiting: Default::default(),
            loaded: Default::default(),
            models: Default::default(),
        }
    }

    /// Has `trainer` train the retrains [`Self::advance_pending`] decides.
    pub fn with_trainer(self, trainer: Box<dyn Retrainer>) -> Self {
        Self { trainer, ..self }
    }

    pub fn deployments(&self) -> &Deployments {
        &self.deployments
    }

    /// Publishes every deployment's `wf_live_*` metrics from its stored state (see
    /// [`crate::telemetry`]); a deployment that cannot be read is logged and skipped.
    pub fn publish_metrics(&self) {
        let ids = match self.deployments.ids() {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "cannot list the live deployments");
                return;
            }
        };
        for id in ids {
            match self.deployments.state(&id) {
                Ok(Some(state)) => {
                    // Dates need the deployment's calendar: its panel, loaded once and kept.
                    let loaded = self.loaded(&id);
                    if let Err(error) = &loaded {
                        tracing::warn!(deployment = %id, %error, "cannot load the deployment's panel: no dates");
                    }
                    let calendar = loaded.as_ref().ok().map(|l| l.dataset.panel.calendar());
                    publish(&id, &state, calendar);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(deployment = %id, %error, "cannot read the deployment"),
            }
        }
    }

    /// Advances every deployment whose panel holds days after its last processed one, as
    /// `wf live advance` does, its retrains trained by this predictor's trainer (up to
    /// one the workers are still training: `wf_live_retrain_waiting_seconds`). Returns
    /// the days processed per deployment advanced. A deployment that cannot be advanced is
    /// logged and tried again at the next call (a failed retrain is also recorded in its
    /// state, which `wf_live_retrain_failing` reads).
    pub fn advance_pending(&self) -> Vec<(String, usize)> {
        let ids = match self.deployments.ids() {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "cannot list the live deployments");
                return Vec::new();
            }
        };
        let mut advanced = Vec::new();
        for id in ids {
            let pending = self.loaded(&id).and_then(|loaded| {
                let days = loaded.dataset.panel.calendar().len();
                Ok(self.deployments.state(&id)?.map_or(0, |state| days.saturating_sub(state.next_day)))
            });
            match pending {
                Ok(0) => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(deployment = %id, %error, "cannot read the deployment");
                    continue;
                }
            }
            // Still waiting for the same retrain: advancing again would read the panel and
            // score the days up to it only to stop there again.
            let waited = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied();
            if let Some((since, key)) = waited
                && self.trainer.still_training(&key)
            {
                let gauge = metrics::gauge!("wf_live_retrain_waiting_seconds", "deployment" => id.clone());
                gauge.set(since.elapsed().as_secs_f64());
                continue;
            }
            match self.deployments.advance(&id, None, &self.device, self.trainer.as_ref(), &mut |_, _, _| {}) {
                Ok(done) => {
                    let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let waited = match done.waiting {
                        Some((day, job)) => {
                            let since = waiting.entry(id.clone()).or_insert_with(|| (std::time::Instant::now(), job)).0;
                            tracing::info!(
                                deployment = %id,
                                days = done.days,
                                retrain = %done.opened.date(day),
                                job = %job.short(),
                                waited_seconds = since.elapsed().as_secs(),
                                "deployment advanced up to a retrain the workers are training; it continues once committed"
                            );
                            since.elapsed().as_secs_f64()
                        }
                        None => {
                            waiting.remove(&id);
                            tracing::info!(deployment = %id, days = done.days, "deployment advanced");
                            0.0
                        }
                    };
                    metrics::gauge!("wf_live_retrain_waiting_seconds", "deployment" => id.clone()).set(waited);
                    advanced.push((id, done.days));
                }
                Err(error) => {
                    tracing::warn!(deployment = %id, %error, "cannot advance the deployment; trying again next period");
                }
            }
        }
        advanced
    }

    /// The tenant deployment `id` belongs to (kept with its panel: no read per call).
    pub fn tenant_of(&self, id: &str) -> Result<String> {
        Ok(self.loaded(id)?.tenant.clone())
    }

    /// The deployment's spec and panel, read again when its panel file changed.
    fn loaded(&self, id: &str) -> Result<std::sync::Arc<Loaded>> {
        if let Some(loaded) = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id)
            && loaded.stamp == file_stamp(&loaded.config.panel)
        {
            return Ok(loaded.clone());
        }
        // The panel's stamp before it is read: a file replaced while it is read (an
        // ingest renames the new panel over the old) then differs at the next call and
        // is read again. Taken after the read, the new file's stamp would stand for the
        // old panel's days, and no later day would ever be seen.
        let record = self.deployments.record(id)?;
        let panel = SweepConfig::from_toml(&record.spec).map(|config| config.panel).unwrap_or_default();
        let stamp = file_stamp(&panel);
        let opened = self.deployments.open(id)?;
        let loaded = std::sync::Arc::new(Loaded {
            tenant: opened.record.tenant,
            config: opened.config,
            dataset: opened.dataset,
            stamp,
        });
        self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.to_string(), loaded.clone());
        Ok(loaded)
    }

    fn model(&self, id: &str, version: u32) -> Result<std::sync::Arc<dyn Ranker>> {
        let key = (id.to_string(), version);
        if let Some(model) = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Ok(model.clone());
        }
        let (model, _) = self.deployments.load_version(id, version, &self.device)?;
        let model: std::sync::Arc<dyn Ranker> = model.into();
        self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, model.clone());
        Ok(model)
    }

    /// Deployment `id`'s ranking of `date` (default: its last processed day) by the
    /// version live that day, the top `k` (default: the spec's K); every ranked code is
    /// written to `predictions/<date>-v<version>.parquet` once.
    pub fn predict(&self, id: &str, date: Option<chrono::NaiveDate>, k: Option<usize>) -> Result<Prediction> {
        if k.is_some_and(|k| k == 0 || k > MAX_PREDICTION_K) {
            return Err(DeploymentError::Invalid(format!("k: must be between 1 and {MAX_PREDICTION_K}")));
        }
        let loaded = self.loaded(id)?;
        let state =
            self.deployments.state(id)?.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
        let panel = &loaded.dataset.panel;
        let calendar = panel.calendar();
        let date_of = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
        let last = state.next_day.checked_sub(1).filter(|d| *d >= state.versions[0].retrain_day);
        let day = match date {
            Some(date) => calendar
                .index_of(date)
                .ok_or_else(|| DeploymentError::Invalid(format!("date: {date} is not a trading day of the panel")))?,
            None => last.ok_or_else(|| {
                DeploymentError::NotProcessed(format!("{id} has processed no day yet: `wf live advance` first"))
            })?,
        };
        if last.is_none_or(|last| day > last) {
            return Err(DeploymentError::NotProcessed(format!(
                "date: {} is not processed yet (the deployment is at {}): `wf live advance {id}` first",
                date_of(day),
                last.map_or_else(|| "no day".to_string(), date_of)
            )));
        }
        let version = state
            .version_on(day)
            .ok_or_else(|| DeploymentError::Invalid(format!("date: {} is before the first version", date_of(day))))?;
        let model = self.model(id, version.number)?;
        let column = loaded.config.horizons.iter().position(|h| *h == loaded.config.primary_horizon).unwrap_or(0);
        let started = std::time::Instant::now();
        let ranking = rank_day(model.as_ref(), panel, day, column, &self.device)
            .map_err(|e| DeploymentError::Other(anyhow::anyhow!("scoring {}: {e}", date_of(day))))?;
        let milliseconds = started.elapsed().as_secs_f64() * 1e3;
        let date = date_of(day);
        let mut csv = String::from("date,rank,code,score,version\n");
        for (rank, (code, score)) in ranking.codes.iter().zip(&ranking.scores).enumerate() {
            csv.push_str(&format!("{date},{},{code},{score},{}\n", rank + 1, version.number));
        }
        let parquet = wf_data::csv_to_parquet("predictions.csv", csv.as_bytes()).map_err(anyhow::Error::from)?;
        self.deployments.put_predictions(id, &date, version.number, parquet)?;
        let k = k.unwrap_or_else(|| loaded.config.k.for_universe(ranking.codes.len()));
        Ok(Prediction {
            deployment: id.to_string(),
            date,
            version: version.number,
            job_key: version.job_key.clone(),
            stocks: ranking.codes.len(),
            milliseconds,
            top: ranking
                .codes
                .iter()
                .zip(&ranking.scores)
                .take(k)
                .enumerate()
                .map(|(rank, (code, score))| Ranked { rank: rank + 1, code: code.clone(), score: *score })
                .collect(),
        })
    }
}

/// The drift threshold of `wf_live_drift_share`: a feature drifted when its PSI over the
/// live version's last [`DRIFT_DAYS`] measured days exceeds it.
pub const DRIFT_THETA: f64 = 0.25;
pub const DRIFT_DAYS: usize = 5;

/// One deployment's metrics; ages in trading days, dates (with `calendar`) as Unix
/// seconds of their midnight UTC.
fn publish(id: &str, state: &LiveState, calendar: Option<&wf_shared::calendar::TradingCalendar>) {
    use metrics::{counter, gauge};
    let label = [("deployment", id.to_string())];
    let last = state.next_day.saturating_sub(1);
    let live = state.live_version();
    gauge!("wf_live_model_age_days", &label).set(state.live_age() as f64);
    let promoted = state.switches.iter().rev().find(|s| !s.rollback).map_or(live.retrain_day, |s| s.day);
    gauge!("wf_live_days_since_retrain", &label).set(last.saturating_sub(promoted) as f64);
    gauge!("wf_live_versions", &label).set(state.versions.len() as f64);
    gauge!("wf_live_processed_days", &label).set((state.next_day - state.versions[0].retrain_day) as f64);
    let (delta, rank_ic, _) = live.recent(RECENT_DAYS, state.basis);
    gauge!("wf_live_recent_delta_p_at_k", &label).set(delta.unwrap_or(f64::NAN));
    gauge!("wf_live_recent_rank_ic", &label).set(rank_ic.unwrap_or(f64::NAN));
    let drift = live.drift_share(DRIFT_DAYS, DRIFT_THETA).unwrap_or(f64::NAN);
    gauge!("wf_live_drift_share", &label).set(drift);
    gauge!("wf_live_in_shadow", &label).set(f64::from(u8::from(state.candidate.is_some())));
    let mut firings: std::collections::BTreeMap<&'static str, u64> = std::collections::BTreeMap::new();
    for decision in state.decisions.iter().filter(|d| d.retrain) {
        if decision.readings.is_empty() {
            *firings.entry("cadence").or_default() += 1;
        }
        for reading in decision.readings.iter().filter(|r| r.fired) {
            *firings.entry(reading.trigger.kind()).or_default() += 1;
        }
    }
    for (reason, count) in firings {
        counter!("wf_live_trigger_firings_total", &[label[0].clone(), ("reason", reason.to_string())]).absolute(count);
    }
    let promotions = state.switches.iter().skip(1).filter(|s| !s.rollback).count() as u64;
    counter!("wf_live_promotions_total", &label).absolute(promotions);
    counter!("wf_live_rollbacks_total", &label).absolute(state.switches.iter().filter(|s| s.rollback).count() as u64);
    let rejected = state.shadows.iter().filter(|s| !s.promoted).count() as u64;
    counter!("wf_live_shadow_rejections_total", &label).absolute(rejected);
    counter!("wf_live_retrain_failures_total", &label).absolute(state.retrain_failures_total);
    gauge!("wf_live_retrain_failing", &label).set(f64::from(u8::from(state.retrain_failing())));
    let seconds = |day: usize| {
        calendar.and_then(|c| c.date(day)).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc().timestamp() as f64)
    };
    if let (Some(retrained), Some(processed)) = (seconds(live.retrain_day), seconds(last)) {
        gauge!("wf_live_model_retrained_timestamp_seconds", &label).set(retrained);
        gauge!("wf_live_last_processed_timestamp_seconds", &label).set(processed);
    }
}

/// A day's ranking: the codes of the day's stocks with a score, by descending score
/// (ties by code), and their scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub codes: Vec<String>,
    pub scores: Vec<f64>,
}

/// Ranks `day` of `panel` with `model` at output `column`: what `wf predict` serves.
pub fn rank_day(
    model: &dyn Ranker,
    panel: &wf_shared::panel::Panel,
    day: usize,
    column: usize,
    device: &Device,
) -> candle_core::Result<Ranking> {
    let scores = wf_worker::train::score_day(model, panel, day, column, device)?;
    let codes: Vec<&str> =
        panel.stock()[panel.rows_of_day(day)].iter().map(|s| panel.codes()[*s as usize].as_str()).collect();
    let mut order: Vec<usize> = (0..scores.len()).filter(|i| scores[*i].is_finite()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(codes[*a].cmp(codes[*b])));
    Ok(Ranking {
        codes: order.iter().map(|i| codes[*i].to_string()).collect(),
        scores: order.iter().map(|i| scores[*i]).collect(),
    })
}

/// A deployment id: `<model>-w<window>-<8 hex>` of the spec text, model, window, seed,
/// policy and start date.
pub fn deployment_id(record: &DeploymentRecord) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [
        &record.spec,
        &record.model,
        &record.window.to_string(),
        &record.seed.to_string(),
        &record.policy,
        &record.from.to_string(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    // Another tenant's deployment of the same line is another deployment (the local
    // tenant's ids are as they were before tenants).
    if record.tenant != crate::auth::LOCAL_TENANT {
        hasher.update(record.tenant.as_bytes());
    }
    let safe: String =
        record.model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("{safe}-w{}-{}", record.window, &hasher.finalize().to_hex()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"name = "deployment-unit"
[dataset]
panel = "synth:stocks=30,days=400,seed=2"
[evaluation]
start = 2021-08-02
end = 2022-03-31
[plan]
train_windows = [126]
cadences = ["monthly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 42
[metrics]
k = 10
bootstrap_samples = 20
bootstrap_seed = 1
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = { epochs = 2 }
"#;

    const LOCAL: LocalTrainer = LocalTrainer { device: Device::Cpu, faults: None };

    /// Deployment `id` of the linear model on `SPEC`, retrained monthly from 2021-08-02.
    fn monthly(id: &str) -> DeploymentRecord {
        DeploymentRecord {
            id: id.into(),
            spec: SPEC.into(),
            model: "linear".into(),
            window: 126,
            seed: 0,
            policy: "monthly".into(),
            from: chrono::NaiveDate::from_ymd_opt(2021, 8, 2).expect("date"),
            shadow_days: 0,
            tenant: local_tenant(),
        }
    }

    /// A deployment goes on deciding as days are appended to its panel file: past the
    /// spec's `[evaluation] end` and past the panel it was deployed on, with the same
    /// decisions, versions and switches as a deployment advanced on the longer panel in
    /// one go (its retrains are training-only jobs, whose keys do not move as the panel
    /// grows).
    #[test]
    fn a_deployment_decides_past_the_specs_end_as_its_panel_grows() {
        use wf_shared::synth::{SynthSpec, generate};
        let start = chrono::NaiveDate::from_ymd_opt(2021, 1, 4).expect("date");
        let market = generate(&SynthSpec { stocks: 30, days: 400, start, seed: 2, null: false }).expect("market");
        let bars = wf_shared::Bars::new(market.bars).expect("bars");
        let spec = wf_shared::PanelSpec { horizons: vec![1, 5] };
        let long = wf_shared::build_panel(&bars, &spec);
        let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date");
        let cut = long.calendar().index_on_or_before(date(2022, 4, 20)).expect("day");
        let short = wf_shared::build_panel(&bars.truncated(cut), &spec);
        let dir = tempfile::tempdir().expect("dir");
        let deployments =
            Deployments::new(ArtifactStore::open(&dir.path().display().to_string()).expect("store")).expect("runtime");
        let deploy = |id: &str, panel: &wf_shared::Panel| {
            let path = dir.path().join(format!("{id}.parquet"));
            wf_data::panel_file::write_panel(&path, panel).expect("panel written");
            let spec = SPEC.replace("synth:stocks=30,days=400,seed=2", &path.display().to_string());
            let record = DeploymentRecord {
                id: id.into(),
                spec,
                model: "linear".into(),
                window: 126,
                seed: 0,
                policy: "ΔP@K<0.02 over 21d or age>=42d".into(),
                from: date(2021, 8, 2),
                shadow_days: 0,
                tenant: local_tenant(),
            };
            deployments.deploy(record, &Device::Cpu).expect("deployed");
            deployments.advance(id, None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).expect("advanced");
            path
        };
        let grown = deploy("grown", &short);
        let before = deployments.state("grown").expect("read").expect("state");
        assert_eq!(before.next_day, cut + 1, "every day of the shorter panel processed");
        // A long-running predictor (a coordinator's) follows the panel file as it grows.
        let predictor = Predictor::new(
            Deployments::new(ArtifactStore::open(&dir.path().display().to_string()).expect("store")).expect("runtime"),
            Device::Cpu,
        );
        let date_of = |day: usize| long.calendar().date(day).expect("day").to_string();
        assert_eq!(predictor.predict("grown", None, Some(5)).expect("prediction").date, date_of(cut));
        // Decided after the spec's end, before the panel's.
        let end = long.calendar().index_on_or_before(date(2022, 3, 31)).expect("day");
        assert!(before.decisions.iter().any(|d| d.day > end), "no decision after the spec's end");

        // The panel file grows; the deployment goes on from its next day.
        wf_data::panel_file::write_panel(&grown, &long).expect("panel written");
        let days = deployments.advance("grown", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).expect("advanced").days;
        assert_eq!(days, long.calendar().len() - cut - 1);
        let after = deployments.state("grown").expect("read").expect("state");
        deploy("straight", &long);
        let straight = deployments.state("straight").expect("read").expect("state");
        assert!(after.decisions.iter().any(|d| d.day > cut), "no decision on the appended days");
        assert!(after.versions.iter().any(|v| v.retrain_day > cut), "no retrain on the appended days");
        assert_eq!(after.decisions, straight.decisions);
        assert_eq!(after.versions, straight.versions);
        assert_eq!(after.switches, straight.switches);
        assert_eq!(after.next_day, long.calendar().len());
        let latest = predictor.predict("grown", None, Some(5)).expect("a prediction on the grown panel");
        assert_eq!(latest.date, date_of(long.calendar().len() - 1));

        // A panel whose processed days changed (one feature value of a processed day
        // corrected) is refused, and the state is left as it was.
        let mut parts = long.into_parts();
        let row = parts.day.iter().position(|d| *d as usize == cut - 30).expect("a row");
        parts.features[0][row] += 0.5;
        let changed = wf_shared::Panel::new(parts).expect("panel");
        wf_data::panel_file::write_panel(&grown, &changed).expect("panel written");
        let refused = deployments.advance("grown", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).expect_err("refused");
        assert!(refused.to_string().contains("history changed"), "{refused}");
        assert_eq!(deployments.state("grown").expect("read").expect("state"), after);
    }

    /// A deployment whose retrains are trained elsewhere (the workers) stops before each
    /// one until it is trained, with its state stored as of the last decision day before
    /// it, and then goes on: in the end it decided exactly what a deployment trained in
    /// process decided, and no day was decided twice or skipped.
    #[test]
    fn an_advance_waits_for_retrains_trained_elsewhere_and_decides_the_same() {
        /// Answers "being trained" at the first ask for each job, the model at the next.
        struct Elsewhere(std::sync::Mutex<std::collections::BTreeSet<JobKey>>);
        impl Retrainer for Elsewhere {
            fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>> {
                if self.0.lock().expect("lock").insert(job.key) {
                    return Ok(None);
                }
                LOCAL.model_file(opened, job)
            }
        }
        let dir = tempfile::tempdir().expect("dir");
        let deployments =
            Deployments::new(ArtifactStore::open(&dir.path().display().to_string()).expect("store")).expect("runtime");
        for id in ["here", "elsewhere"] {
            deployments.deploy(monthly(id), &Device::Cpu).expect("deployed");
        }
        let here = deployments.advance("here", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).expect("advanced");
        assert!(here.waiting.is_none());
        let here_days = here.days;
        let trainer = Elsewhere(Default::default());
        let mut waits = 0;
        let mut days = 0;
        loop {
            let before = deployments.state("elsewhere").expect("read").expect("state");
            let mut seen = Vec::new();
            let advanced = deployments
                .advance("elsewhere", None, &Device::Cpu, &trainer, &mut |_, day, _| seen.push(day))
                .expect("advanced");
            let stored = deployments.state("elsewhere").expect("read").expect("state");
            let returned = advanced.opened.state.as_ref().expect("state");
            assert_eq!(
                (returned.next_day, returned.revision),
                (stored.next_day, stored.revision),
                "returned != stored"
            );
            assert_eq!(advanced.days, stored.next_day - before.next_day);
            days += advanced.days;
            let Some((day, job)) = advanced.waiting else { break };
            waits += 1;
            // Stopped before the retrain's day, with nothing after the last stored
            // decision kept; the next advance starts there.
            assert!(stored.next_day <= day, "stopped at {day}, stored up to {}", stored.next_day);
            assert!(seen.iter().all(|d| *d < day), "a day after the retrain was processed");
            assert!(stored.decisions.iter().all(|d| d.day < day));
            assert!(!stored.versions.iter().any(|v| v.job_key == job.to_string()), "the waited-for version is not in");
            // The next ask has it trained.
            assert!(waits < 50, "no progress");
        }
        let read = |id: &str| deployments.state(id).expect("read").expect("state");
        let (here, elsewhere) = (read("here"), read("elsewhere"));
        assert_eq!(waits, here.versions.len() - 1, "one wait per retrain");
        assert_eq!(days, here_days, "every day decided once");
        assert_eq!(elsewhere.decisions, here.decisions);
        assert_eq!(elsewhere.versions, here.versions);
        assert_eq!(elsewhere.switches, here.switches);
        assert_eq!(elsewhere.next_day, here.next_day);
    }

    /// A coordinator's advance loop does not advance a deployment again while the retrain
    /// it waits for is still being trained (it would stop at the same day): the trainer is
    /// asked only whether the job is still training; once it is not, the advance goes on.
    #[test]
    fn a_waiting_deployment_is_not_advanced_again_until_its_retrain_is_trained() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        struct Queue {
            asked: Arc<AtomicUsize>,
            training: Arc<AtomicBool>,
        }
        impl Retrainer for Queue {
            fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>> {
                self.asked.fetch_add(1, Ordering::SeqCst);
                if self.training.load(Ordering::SeqCst) { Ok(None) } else { LOCAL.model_file(opened, job) }
            }
            fn still_training(&self, _key: &JobKey) -> bool {
                self.training.load(Ordering::SeqCst)
            }
        }
        let dir = tempfile::tempdir().expect("dir");
        let store = || ArtifactStore::open(&dir.path().display().to_string()).expect("store");
        Deployments::new(store()).expect("runtime").deploy(monthly("d"), &Device::Cpu).expect("deployed");
        let (asked, training) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(true)));
        let trainer = Queue { asked: asked.clone(), training: training.clone() };
        let predictor =
            Predictor::new(Deployments::new(store()).expect("runtime"), Device::Cpu).with_trainer(Box::new(trainer));
        predictor.advance_pending();
        let stopped = predictor.deployments().state("d").expect("read").expect("state");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "the first retrain is asked for");
        predictor.advance_pending();
        predictor.advance_pending();
        assert_eq!(asked.load(Ordering::SeqCst), 1, "advanced again while the retrain was training");
        assert_eq!(predictor.deployments().state("d").expect("read").expect("state").revision, stopped.revision);
        training.store(false, Ordering::SeqCst);
        predictor.advance_pending();
        let done = predictor.deployments().state("d").expect("read").expect("state");
        assert!(done.next_day > stopped.next_day && done.versions.len() > 2, "it went on once trained");
    }

    /// Two writers of one deployment: the one that read an older revision is refused
    /// rather than overwriting the other's save (a rollback during an advance).
    #[test]
    fn a_save_over_another_writers_save_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let deployments =
            Deployments::new(ArtifactStore::open(&dir.path().display().to_string()).expect("store")).expect("runtime");
        deployments.deploy(monthly("d"), &Device::Cpu).expect("deployed");
        let advanced = deployments.advance("d", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).expect("advanced");
        assert!(advanced.days > 100 && advanced.opened.state.expect("state").versions.len() > 3);
        // Two commands read the same revision; the first to save wins.
        let mut stale = deployments.state("d").expect("read").expect("state");
        let (rolled, _) = deployments.rollback("d", None).expect("rolled back");
        assert_eq!(rolled.revision, stale.revision + 1);
        let refused = deployments.save_state("d", &mut stale).expect_err("a stale save");
        assert!(matches!(refused, DeploymentError::Conflict(_)), "{refused}");
        let stored = deployments.state("d").expect("read").expect("state");
        assert_eq!(stored, rolled, "the rollback stands");
        // Advancing again reads the rollback and continues from it.
        deployments.advance("d", None, &Device::Cpu, &LOCAL, &mut |_, _, _| {}).expect("advanced again");
        let after = deployments.state("d").expect("read").expect("state");
        assert!(after.switches.iter().any(|s| s.rollback));
    }
}
