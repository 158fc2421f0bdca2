//! Sweeps: planning and submitting them (tenancy, reuse of committed results), their
//! progress, the list, and cancelling one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::info;
use wf_data::dataset::DatasetSummary;
use wf_shared::DatasetRef;
use wf_shared::backtest::portfolio::Market;
use wf_shared::job::{Phase, SweepId, UnixMs};
use wf_shared::plan::{JobKey, Manifest, Plan};
use wf_shared::spec::{SpecErrors, SweepConfig};

use super::{
    JobLimit, Planned, Progress, Scheduler, SchedulerError, Submitted, SweepStatus, default_job_limit_ms, lock,
};
use crate::store::SweepRecord;

impl Scheduler {
    /// Validates `config` (models included) and plans it on its dataset's summary, within
    /// this coordinator's ceiling on jobs per sweep; a backtest's market is read from the
    /// values at once, so a panel without what it needs is refused at submission.
    pub(super) async fn plan(
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

    /// A fresh sweep id (the time, a counter, the spec and the process mixed).
    pub(super) fn new_sweep_id(&self, spec_toml: &str, now: UnixMs) -> SweepId {
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
        // The trainers its models name are pinned into the text the sweep keeps: every
        // reader of the spec (workers, reports) sees the same identities.
        let (pinned, config) =
            wf_shared::model::pin_trainers(spec_toml, &config, |name| self.config.trainers.pin(name))
                .map_err(SchedulerError::InvalidSpec)?;
        let spec_toml = pinned.as_str();
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
            if self.planned_result(&job.key, &job.identity).await?.is_some() {
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

    pub(super) async fn sweep_record(&self, id: &SweepId) -> Result<Arc<SweepRecord>, SchedulerError> {
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

    pub(super) async fn progress_of(&self, record: &SweepRecord) -> Result<Progress, SchedulerError> {
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
}
