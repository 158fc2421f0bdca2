//! Reports: a sweep planned again on its dataset (cached), its verified results read
//! into the age matrix, and the report built off the async threads.

use std::sync::Arc;

use wf_shared::age::{AgeMatrix, JobResult, ModelRun};
use wf_shared::job::{Phase, SweepId};
use wf_shared::plan::JobKey;
use wf_shared::spec::SweepConfig;

use super::reuse::Expected;
use super::{Planned, Scheduler, SchedulerError, lock};
use crate::report::{self, SweepReport};
use crate::store::SweepRecord;

impl Scheduler {
    /// Of the jobs of `record` without a usable result (`missing`, as key text), queues
    /// again those whose result was refused or never published: the job store holds them
    /// as succeeded for longer than a lease period (so not a commit still publishing), or
    /// holds no state for them (results reused at submission, or state lost) while their
    /// sweep counts them as done. Returns their keys.
    pub(super) async fn requeue_lost_results(
        &self,
        record: &SweepRecord,
        missing: &[String],
    ) -> Result<Vec<String>, SchedulerError> {
        if missing.is_empty() || record.cancelled {
            return Ok(Vec::new());
        }
        let keys: Vec<JobKey> = missing.iter().filter_map(|text| JobKey::try_from(text.clone()).ok()).collect();
        let done: std::collections::BTreeSet<&JobKey> = record.precomputed.iter().collect();
        let now = self.clock.now_ms();
        let (mut lost, mut stateless) = (Vec::new(), Vec::new());
        for (key, state) in keys.iter().zip(self.store.states(&keys).await?) {
            match state.map(|s| s.phase) {
                Some(Phase::Succeeded { at, .. }) if now - at >= self.config.lease_ms => lost.push(*key),
                None if done.contains(key) => stateless.push(*key),
                _ => {}
            }
        }
        let mut requeued = self.store.resubmit(&record.id, &lost, now).await?;
        if !stateless.is_empty() {
            // Queued afresh: a new epoch first, so that no token an earlier state of these
            // jobs handed out can be handed out again (as the reconciler does).
            self.new_epoch("results without a job state were refused; their jobs are queued afresh").await?;
            requeued += self.store.enqueue_limited(&record.id, &stateless, record.max_job_ms, now).await?;
        }
        if requeued == 0 {
            return Ok(Vec::new());
        }
        tracing::warn!(sweep = %record.id, jobs = requeued, "completed jobs without a usable result queued again");
        metrics::counter!("wf_results_requeued_total").increment(requeued as u64);
        self.work.notify_waiters();
        self.changed();
        Ok(lost.iter().chain(&stateless).map(JobKey::to_string).collect())
    }

    pub(super) async fn planned(&self, record: &SweepRecord) -> Result<Arc<Planned>, SchedulerError> {
        if let Some(planned) = lock(&self.plans).get(&record.id) {
            return Ok(planned.clone());
        }
        let config = SweepConfig::from_toml(&record.spec_toml).map_err(SchedulerError::InvalidSpec)?;
        let (summary, plan, market) = self.plan(&config).await?;
        let planned = Arc::new(Planned { config, plan, summary, market });
        lock(&self.plans).insert(record.id.clone(), planned.clone());
        Ok(planned)
    }

    /// The sweep's report from its committed results. A job that completed but whose
    /// result is damaged (refused when read) or was never published is queued again, and
    /// the report, built from the rest meanwhile, says so.
    pub fn report<'a>(
        &'a self,
        id: &'a SweepId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<SweepReport, SchedulerError>> + Send + 'a>> {
        // Boxed: compiled once, here, not again in each crate that awaits it.
        Box::pin(self.reporting(id))
    }

    async fn reporting(&self, id: &SweepId) -> Result<SweepReport, SchedulerError> {
        let record = self.store.sweep(id).await?.ok_or_else(|| SchedulerError::UnknownSweep(id.to_string()))?;
        if record.training.is_some() {
            return Err(SchedulerError::InvalidArgument(wf_proto::ConversionError {
                field: "sweep_id".into(),
                reason: format!(
                    "{id} is a live deployment's retrain ({}): it has no report; `wf live status` shows the deployment",
                    record.name
                ),
            }));
        }
        let planned = self.planned(&record).await?;
        let dataset = self.loaded(&planned.config, &planned.summary).await?;
        let mut runs = Vec::with_capacity(planned.plan.jobs.len());
        let mut missing = Vec::new();
        for job in &planned.plan.jobs {
            // A result refused here is reported as missing (and set aside for a rerun).
            let Some(message) = self.verified_result(&job.key, Expected::Planned(&job.identity)).await? else {
                missing.push(job.key.to_string());
                continue;
            };
            let result = JobResult::try_from(message)
                .map_err(|e| SchedulerError::Internal(format!("result of job {} is invalid: {e}", job.key.short())))?;
            runs.push(ModelRun::of_job(job, result, &dataset.panel));
        }
        let requeued = self.requeue_lost_results(&record, &missing).await?;
        let matrix = AgeMatrix {
            horizon: planned.config.primary_horizon,
            max_age: planned.config.max_age,
            runs,
            basis: planned.config.basis,
        };
        let id = id.to_string();
        let planned = planned.clone();
        tokio::task::spawn_blocking(move || {
            let input = report::ReportInput {
                sweep_id: &id,
                config: &planned.config,
                plan: &planned.plan,
                panel: &dataset.panel,
                dataset_hash: dataset.content_hash,
                market: planned.market.as_deref(),
                statistics: true,
                lookahead: planned.summary.lookahead.as_deref(),
            };
            let mut report = report::build_full(input, &matrix, missing);
            report.requeued = requeued;
            report
        })
        .await
        .map_err(|e| SchedulerError::Internal(format!("report builder panicked: {e}")))
    }
}
