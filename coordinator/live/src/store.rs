//! Deployments in their files ([`LiveFiles`]): deploy, open, advance, roll back.

use std::sync::Arc;

use bytes::Bytes;
use candle_core::Device;
use wf_data::dataset::DataRoots;
use wf_shared::decision::{LiveState, RetrainFailure, Version};
use wf_shared::drift::DriftReference;
use wf_shared::plan::{Job, JobKey};
use wf_worker::artifact::{ArtifactMeta, from_bytes};
use wf_worker::faults::Faults;
use wf_worker::model::Ranker;
use wf_worker::observer::PanelObserver;

use crate::Boxed;
use crate::files::LiveFiles;
use crate::record::{DeploymentError, DeploymentRecord, Opened, Result};
use crate::trainer::{LocalTrainer, Retrainer};

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

/// Deployments in their files. Its methods are async and bring no runtime of their own:
/// files are awaited, a dataset is read and a retrain trained in this process on the
/// runtime's blocking pool. An advance scores its days on the task that awaits it, so a
/// server awaits it on a blocking thread (`wf_coordinator::server::every`), not on the
/// threads that answer calls.
#[derive(Debug, Clone)]
pub struct Deployments {
    files: Arc<dyn LiveFiles>,
    /// Where their datasets may be read from.
    roots: DataRoots,
    /// Faults injected into retrains trained in this process (tests and drills).
    faults: Option<Faults>,
}

impl Deployments {
    /// Deployments in `files`, reading datasets anywhere (the local CLI).
    pub fn new(files: Arc<dyn LiveFiles>) -> Self {
        Self::within(files, DataRoots::Any)
    }

    /// Deployments in `files` whose datasets must be under `roots` (a server).
    pub fn within(files: Arc<dyn LiveFiles>, roots: DataRoots) -> Self {
        Self { files, roots, faults: None }
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

    pub async fn ids(&self) -> Result<Vec<String>> {
        Ok(self.files.ids().await?)
    }

    async fn file(&self, id: &str, name: &str) -> Result<Option<Bytes>> {
        Ok(self.files.get(id, name).await?)
    }

    async fn put(&self, id: &str, name: &str, bytes: Vec<u8>, create_only: bool) -> Result<bool> {
        Ok(self.files.put(id, name, Bytes::from(bytes), create_only).await?)
    }

    pub async fn record(&self, id: &str) -> Result<DeploymentRecord> {
        let bytes = self.file(id, "deployment.json").await?.ok_or_else(|| DeploymentError::Unknown(id.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| DeploymentError::Invalid(format!("{id}/deployment.json: {e}")))
    }

    pub async fn state(&self, id: &str) -> Result<Option<LiveState>> {
        let Some(bytes) = self.file(id, "state.json").await? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| DeploymentError::Invalid(format!("{id}/state.json: {e}")))
    }

    /// Saves `state` as the next revision of the one it was read as: refused when another
    /// writer saved in between (a rollback while an advance runs), so neither's decisions
    /// are silently lost. (A check then a write: it narrows the window to a moment; one
    /// writer per deployment at a time is the rule.)
    pub async fn save_state(&self, id: &str, state: &mut LiveState) -> Result<()> {
        let stored = self.state(id).await?.map_or(0, |s| s.revision);
        if stored != state.revision {
            return Err(DeploymentError::Conflict(format!(
                "{id} changed while this command ran (state revision {stored}, read as {}): another command saved it; \
                 run this one again",
                state.revision
            )));
        }
        state.revision += 1;
        let bytes = serde_json::to_vec(state).map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        self.put(id, "state.json", bytes, false).await.map(|_| ())
    }

    /// Reads the record and loads what it needs: spec, dataset, plan, state (the dataset
    /// read and planned on the blocking pool).
    pub async fn open(&self, id: &str) -> Result<Opened> {
        let record = self.record(id).await?;
        let roots = self.roots.clone();
        let mut opened = tokio::task::spawn_blocking(move || Opened::load(record, &roots))
            .await
            .map_err(|e| DeploymentError::Other(anyhow::anyhow!("opening {id} stopped: {e}")))??;
        // Read after the dataset, as close as can be to the save it may lead to.
        opened.state = self.state(id).await?;
        Ok(opened)
    }

    /// Creates deployment `record.id` and trains its first version: the line's first
    /// job retrained on or after `record.from`.
    /// Returns it opened, with its state.
    pub fn deploy<'a>(&'a self, record: DeploymentRecord, device: &'a Device) -> Boxed<'a, Result<Opened>> {
        Box::pin(self.deploying(record, device))
    }

    async fn deploying(&self, record: DeploymentRecord, device: &Device) -> Result<Opened> {
        let id = record.id.clone();
        let text = serde_json::to_vec_pretty(&record).map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        // Created now, or left by a deploy that stopped before its first version's state
        // (the same record and no state): that one is finished here.
        if !self.put(&id, "deployment.json", text, true).await?
            && (self.record(&id).await? != record || self.state(&id).await?.is_some())
        {
            return Err(DeploymentError::Exists(id));
        }
        let mut opened = self.open(&id).await?;
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
        self.version_model(&opened, 1, &first, &self.local_trainer(device.clone()), device).await?;
        let training = DriftReference::of(&opened.dataset.panel, first.train_days.clone()).training;
        let version = Version::new(first.retrain_day, first.key.to_string(), Some(training));
        let days = opened.decision_days()?;
        let mut state =
            LiveState::new(opened.policy.clone(), opened.config.primary_horizon, opened.config.max_age, days, version)
                .on_basis(opened.config.basis);
        state.shadow_days = opened.record.shadow_days as usize;
        state.history = Some(opened.history(state.next_day));
        self.save_state(&id, &mut state).await?;
        opened.state = Some(state);
        Ok(opened)
    }

    /// Version `number`'s model, trained by `job`: loaded from its stored file when it
    /// is there (and is that job's), otherwise trained by `trainer` and stored
    /// (create-only); `None` while `trainer` has it trained elsewhere.
    async fn version_model(
        &self,
        opened: &Opened,
        number: u32,
        job: &Job,
        trainer: &dyn Retrainer,
        device: &Device,
    ) -> Result<Option<Box<dyn Ranker>>> {
        let id = &opened.record.id;
        let name = format!("versions/{number}.safetensors");
        let (bytes, stored) = match self.file(id, &name).await? {
            Some(bytes) => (bytes.to_vec(), true),
            None => match trainer.model_file(opened, job).await? {
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
            self.put(id, &name, bytes, true).await?;
        }
        Ok(Some(model))
    }

    /// Advances deployment `id` over the days after its last processed one, up to `to`
    /// (default: the panel's last day), having `trainer` train what it decides;
    /// `progress` hears each day. Stops before a retrain that `trainer` has trained
    /// elsewhere, with the state stored after the last decision day before it (the next
    /// advance continues from there and decides the same).
    pub fn advance<'a>(
        &'a self,
        id: &'a str,
        to: Option<chrono::NaiveDate>,
        device: &'a Device,
        trainer: &'a dyn Retrainer,
        progress: &'a mut (dyn FnMut(&Opened, usize, usize) + Send),
    ) -> Boxed<'a, Result<Advanced>> {
        Box::pin(self.advancing(id, to, device, trainer, progress))
    }

    async fn advancing(
        &self,
        id: &str,
        to: Option<chrono::NaiveDate>,
        device: &Device,
        trainer: &dyn Retrainer,
        progress: &mut (dyn FnMut(&Opened, usize, usize) + Send),
    ) -> Result<Advanced> {
        let mut opened = self.open(id).await?;
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
            let model = self.version_model(&opened, version.number, &job, trainer, device).await?.ok_or_else(|| {
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
                    let model = match self.version_model(&opened, number, &job, trainer, device).await {
                        Ok(Some(model)) => model,
                        Ok(None) => {
                            waiting = Some((day, job.key));
                            break;
                        }
                        Err(error) => {
                            self.record_retrain_failure(id, day, &job, &error).await;
                            return Err(error);
                        }
                    };
                    let training = observer.add(day, model.into(), job.train_days.clone());
                    state.promote(Version::new(day, job.key.to_string(), Some(training)))?;
                }
                state.history = Some(opened.history(state.next_day));
                self.save_state(id, &mut state).await?;
            }
            processed += 1;
            progress(&opened, day, last);
        }
        if waiting.is_some() {
            // This day and the days before it since the last decision day are not
            // stored: the stored state is where the next advance continues.
            state = self.state(id).await?.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
            processed = state.next_day.saturating_sub(first);
        } else {
            state.history = Some(opened.history(state.next_day));
            self.save_state(id, &mut state).await?;
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
    async fn record_retrain_failure(&self, id: &str, day: usize, job: &Job, error: &DeploymentError) {
        tracing::error!(deployment = id, job = %job.key.short(), %error, "retrain failed");
        let recorded = async {
            let mut stored =
                self.state(id).await?.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
            stored.retrain_failed(RetrainFailure {
                day,
                job_key: job.key.to_string(),
                error: error.to_string(),
                at: chrono::Utc::now().timestamp(),
            });
            self.save_state(id, &mut stored).await
        }
        .await;
        if let Err(failure) = recorded {
            tracing::warn!(deployment = id, %failure, "could not record the failed retrain");
        }
    }

    /// Rolls deployment `id` back to version `to` (default: the previous live one).
    pub async fn rollback(&self, id: &str, to: Option<u32>) -> Result<(LiveState, u32)> {
        self.record(id).await?;
        let mut state = self.state(id).await?.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
        let version = state.rollback(to)?;
        self.save_state(id, &mut state).await?;
        Ok((state, version))
    }

    /// The model of version `number` of deployment `id`.
    pub async fn load_version(
        &self,
        id: &str,
        number: u32,
        device: &Device,
    ) -> Result<(Box<dyn Ranker>, ArtifactMeta)> {
        let name = format!("versions/{number}.safetensors");
        let bytes =
            self.file(id, &name).await?.ok_or_else(|| DeploymentError::Invalid(format!("{id}/{name} is missing")))?;
        let (device, file) = (device.clone(), format!("{id}/{name}"));
        tokio::task::spawn_blocking(move || {
            from_bytes(&bytes, &device).map_err(|e| DeploymentError::Invalid(format!("{file}: {e}")))
        })
        .await
        .map_err(|e| DeploymentError::Other(anyhow::anyhow!("loading a model stopped: {e}")))?
    }

    /// Writes `predictions/<date>-v<version>.parquet` of deployment `id` unless it is there.
    pub async fn put_predictions(&self, id: &str, date: &str, version: u32, parquet: Vec<u8>) -> Result<()> {
        self.put(id, &format!("predictions/{date}-v{version}.parquet"), parquet, true).await.map(|_| ())
    }
}
