//! Reports: a sweep planned again on its dataset (cached), its verified results read
//! into the age matrix, and the report built off the async threads.

use std::sync::Arc;

use wf_shared::age::{AgeMatrix, JobResult, ModelRun};
use wf_shared::job::SweepId;
use wf_shared::spec::SweepConfig;

use super::reuse::Expected;
use super::{Planned, Scheduler, SchedulerError, lock};
use crate::report::{self, SweepReport};
use crate::store::SweepRecord;

impl Scheduler {
    pub(super) async fn planned(&self, record: &SweepRecord) -> Result<Arc<Planned>, SchedulerError> {
        if let Some(planned) = lock(&self.plans).get(&record.id) {
            return Ok(planned.clone());
        }
        let config = SweepConfig::from_toml(&record.spec_toml).map_err(SchedulerError::InvalidSpec)?;
        let (dataset, plan) = self.plan(&config).await?;
        let planned = Arc::new(Planned { config, plan, dataset });
        lock(&self.plans).insert(record.id.clone(), planned.clone());
        Ok(planned)
    }

    /// The sweep's report from its committed results.
    pub async fn report(&self, id: &SweepId) -> Result<SweepReport, SchedulerError> {
        let record = self.store.sweep(id).await?.ok_or_else(|| SchedulerError::UnknownSweep(id.to_string()))?;
        let planned = self.planned(&record).await?;
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
            runs.push(ModelRun::of_job(job, result));
        }
        let matrix = AgeMatrix { horizon: planned.config.primary_horizon, max_age: planned.config.max_age, runs };
        let id = id.to_string();
        let planned = planned.clone();
        tokio::task::spawn_blocking(move || {
            let input = report::ReportInput {
                sweep_id: &id,
                config: &planned.config,
                plan: &planned.plan,
                panel: &planned.dataset.panel,
                dataset_hash: planned.dataset.content_hash,
            };
            report::build_full(input, &matrix, missing)
        })
        .await
        .map_err(|e| SchedulerError::Internal(format!("report builder panicked: {e}")))
    }
}
