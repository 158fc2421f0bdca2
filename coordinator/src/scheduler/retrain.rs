//! Retrains of live deployments on the workers: a training-only job, queued as a sweep
//! of one job on the same queue, leased, heartbeated, retried, dead-lettered, reconciled
//! and committed (its identity verified) like every sweep's job. Its result carries the
//! trained model (`JobResult.model`), which the deployment stores as its new version.
//!
//! Asking is idempotent: [`Scheduler::retrain`] returns the model once the job has
//! committed, and queues the job only when it is neither committed nor queued nor
//! running; a coordinator restarted in between finds it in the job store (or, after a
//! loss, the reconciler restores it from the sweep record in the artifact store).

use bytes::Bytes;
use tracing::{info, warn};
use wf_shared::DatasetRef;
use wf_shared::job::Phase;
use wf_shared::plan::{JobKey, TrainingLine};

use super::reuse::Expected;
use super::{JobLimit, Scheduler, SchedulerError, default_job_limit_ms};
use crate::store::SweepRecord;

/// The training-only job a deployment asks the workers for.
#[derive(Debug, Clone)]
pub struct RetrainRequest {
    /// Shown as the one-job sweep's name (`wf sweep list`): the deployment and the date.
    pub name: String,
    /// The deployment's spec (TOML text).
    pub spec_toml: String,
    pub tenant: String,
    /// The panel as the coordinator read it. A worker that finds it grown since still
    /// trains the job when the job it builds has the same key.
    pub dataset: DatasetRef,
    pub line: TrainingLine,
    pub key: JobKey,
    /// The job's identity (canonical JSON): a committed result must carry it.
    pub identity: String,
    /// The panel's stocks (for the default limit on one attempt).
    pub stocks: usize,
}

/// Where a retrain stands on the workers.
#[derive(Debug, Clone, PartialEq)]
pub enum Retrain {
    /// Committed: the trained model's file (`wf_worker::artifact::to_bytes`).
    Trained(Vec<u8>),
    /// Queued or running.
    Pending,
    /// It failed on the workers (dead-lettered) with this error; it is queued again, so
    /// the next ask waits for the new attempts.
    Failed(String),
}

impl Scheduler {
    /// The retrain `request` names: its model when committed; otherwise it is queued
    /// (unless it already is) and is pending.
    pub async fn retrain(&self, request: &RetrainRequest) -> Result<Retrain, SchedulerError> {
        let key = &request.key;
        if let Some(result) = self.verified_result(key, Expected::Planned(&request.identity)).await? {
            if result.model.is_empty() {
                return Err(SchedulerError::Internal(format!(
                    "the committed result of training-only job {} holds no model",
                    key.short()
                )));
            }
            return Ok(Retrain::Trained(result.model));
        }
        let record = self.store.job(key).await?;
        let failed = match record.map(|record| record.state) {
            Some(state) if matches!(state.phase, Phase::Queued { .. } | Phase::Leased { .. }) => {
                return Ok(Retrain::Pending);
            }
            Some(state) if matches!(state.phase, Phase::DeadLettered) => {
                Some(state.last_error.unwrap_or_else(|| "dead-lettered".to_string()))
            }
            // Never queued, cancelled, or succeeded without a published result.
            _ => None,
        };
        self.queue_retrain(request).await?;
        Ok(match failed {
            Some(error) => Retrain::Failed(error),
            None => Retrain::Pending,
        })
    }

    /// Whether job `key` is queued or running and not committed: a retrain still being
    /// trained (cheap: one existence check and one job state).
    pub async fn still_training(&self, key: &JobKey) -> Result<bool, SchedulerError> {
        if self.artifacts.has_result(key).await? {
            return Ok(false);
        }
        let state = self.store.job(key).await?.map(|record| record.state.phase);
        Ok(matches!(state, Some(Phase::Queued { .. } | Phase::Leased { .. })))
    }

    /// Queues `request`'s job as a sweep of one job (a new record, so that the job's
    /// owner carries the panel as read now), recorded in the artifact store first.
    async fn queue_retrain(&self, request: &RetrainRequest) -> Result<(), SchedulerError> {
        let config =
            wf_shared::spec::SweepConfig::from_toml(&request.spec_toml).map_err(SchedulerError::InvalidSpec)?;
        let now = self.clock.now_ms();
        let id = self.new_sweep_id(&request.spec_toml, now);
        let max_job_ms = match self.config.job_limit {
            JobLimit::FromSpec => Some(default_job_limit_ms(&config, request.stocks)),
            JobLimit::Fixed(ms) => Some(ms),
            JobLimit::Unlimited => None,
        };
        let record = SweepRecord {
            id: id.clone(),
            name: request.name.clone(),
            spec_toml: request.spec_toml.clone(),
            dataset: request.dataset.clone(),
            jobs: vec![request.key],
            precomputed: Vec::new(),
            jobs_before_dedup: 1,
            submitted_at: now,
            cancelled: false,
            tenant: request.tenant.clone(),
            max_job_ms,
            training: Some(request.line.clone()),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        self.artifacts.put_sweep_file(&id, "sweep.json", Bytes::from(json)).await?;
        self.store.put_sweep(&record).await?;
        let keys = [request.key];
        let queued = self.store.enqueue_limited(&id, &keys, max_job_ms, now).await?
            + self.store.resubmit(&id, &keys, now).await?;
        if queued == 0 {
            warn!(sweep = %id, job = %request.key.short(), "the retrain was not queued (its state changed meanwhile)");
        }
        info!(sweep = %id, job = %request.key.short(), name = %request.name, "retrain queued on the workers");
        metrics::counter!("wf_live_retrains_queued_total").increment(1);
        self.work.notify_waiters();
        self.changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicI64;
    use std::time::Duration;

    use wf_data::dataset::load_dataset;
    use wf_proto::v1;
    use wf_shared::job::FailureKind;
    use wf_shared::plan::{PlanInput, TrainingLine};
    use wf_shared::spec::SweepConfig;

    use super::super::tests::{ManualClock, SPEC, scheduler, serve_with_a_worker};
    use super::*;

    /// The training-only job of the linear model (window 126) retrained on day `day` of
    /// `SPEC`'s panel, asked as a retrain, with the panel's config and dataset.
    fn request_of(day: usize) -> (RetrainRequest, wf_shared::plan::Job, SweepConfig, wf_data::dataset::Dataset) {
        let config = SweepConfig::from_toml(SPEC).expect("spec");
        let dataset = load_dataset(&config.panel, &config.horizons, None).expect("dataset");
        let universe = dataset.panel.daily_universe();
        let input = PlanInput::of_panel(&dataset.panel, &dataset.digests, &universe);
        let retrain = dataset.panel.calendar().date(day).expect("day");
        let line = TrainingLine { model: 0, seed: 0, window: 126, retrain };
        let job = line.job(&config, &input).expect("training job");
        let request = RetrainRequest {
            name: "live d retrain".into(),
            spec_toml: SPEC.into(),
            tenant: "team".into(),
            dataset: DatasetRef { uri: config.panel.clone(), content_hash: dataset.content_hash },
            line,
            key: job.key,
            identity: job.identity.clone(),
            stocks: dataset.panel.codes().len(),
        };
        (request, job, config, dataset)
    }

    /// A real worker (the runtime, over gRPC) trains a queued retrain and reports its
    /// model, which loads as that job's; a retrain whose line builds another job on the
    /// worker's panel (here: another window under the key) is refused for good, and the
    /// ask says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_trains_a_queued_retrain_and_refuses_one_whose_job_differs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let scheduler = Arc::new(scheduler(dir.path(), clock));
        let served = serve_with_a_worker(scheduler.clone()).await;
        let ask_until = |request: RetrainRequest, done: fn(&Retrain) -> bool| {
            let scheduler = scheduler.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                loop {
                    let answer = scheduler.retrain(&request).await.expect("ask");
                    if done(&answer) || tokio::time::Instant::now() > deadline {
                        return answer;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };

        let (request, job, _, _) = request_of(300);
        let Retrain::Trained(model) = ask_until(request, |a| matches!(a, Retrain::Trained(_))).await else {
            panic!("the worker did not train the retrain");
        };
        let (_, meta) = wf_worker::artifact::from_bytes(&model, &candle_core::Device::Cpu).expect("a model file");
        assert_eq!((meta.job_key, meta.seed), (job.key.to_string(), 0));

        let (mut other, _, _, _) = request_of(320);
        other.line.window = 63;
        match ask_until(other, |a| matches!(a, Retrain::Failed(_))).await {
            Retrain::Failed(error) => assert!(error.contains("not the leased"), "{error}"),
            answer => panic!("expected a refusal, got {answer:?}"),
        }
        served.stop().await;
    }

    /// A live retrain asked of the scheduler: queued once however often it is asked,
    /// leased with its training line, queued again after it dead-letters (the ask says it
    /// failed, and why), and answered with the model the worker reported once committed.
    #[tokio::test]
    async fn a_retrain_is_queued_once_retried_after_failing_and_answered_with_its_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let scheduler = scheduler(dir.path(), clock.clone());
        let (request, job, config, dataset) = request_of(300);
        let line = request.line.clone();
        assert!(!scheduler.still_training(&job.key).await.expect("state"), "not queued yet");
        assert_eq!(scheduler.retrain(&request).await.expect("ask"), Retrain::Pending);
        assert!(scheduler.still_training(&job.key).await.expect("state"), "queued");
        assert_eq!(scheduler.retrain(&request).await.expect("ask again"), Retrain::Pending);
        let sweeps = scheduler.store().sweeps().await.expect("sweeps");
        assert_eq!(sweeps.len(), 1, "asked twice, queued once");
        assert_eq!((sweeps[0].training.as_ref(), sweeps[0].tenant.as_str()), (Some(&line), "team"));

        // A worker fails it for good: the next ask reports the error and queues it again.
        let lease = scheduler.lease("w", Duration::ZERO).await.expect("lease").expect("a job");
        assert_eq!((lease.lease.key, lease.training.as_ref()), (job.key, Some(&line)));
        let (token, key) = (lease.lease.token, lease.lease.key);
        scheduler.report_failure(&key, token, "w", FailureKind::Permanent, "no such panel").await.expect("failure");
        match scheduler.retrain(&request).await.expect("ask after the failure") {
            Retrain::Failed(error) => assert!(error.contains("no such panel"), "{error}"),
            other => panic!("expected the failure, got {other:?}"),
        }
        assert_eq!(scheduler.retrain(&request).await.expect("ask"), Retrain::Pending, "queued again");

        // Trained and reported with its model: the ask returns exactly that model.
        let lease = scheduler.lease("w", Duration::ZERO).await.expect("lease").expect("queued again");
        let output = wf_worker::job::run_job(&dataset.panel, &config, &job, &candle_core::Device::Cpu).expect("trains");
        let model = wf_worker::artifact::model_file(&output, &job, &dataset.panel, &dataset.content_hash, &config)
            .expect("model file");
        let result = v1::JobResult { identity: job.identity.clone(), model: model.clone(), ..output.result().into() };
        scheduler.report_result(&key, lease.lease.token, "w", result).await.expect("commit");
        assert_eq!(scheduler.retrain(&request).await.expect("ask"), Retrain::Trained(model));
        assert!(!scheduler.still_training(&job.key).await.expect("state"), "committed");
        assert!(scheduler.lease("w", Duration::ZERO).await.expect("lease").is_none(), "nothing left to train");

        // Its one-job sweeps have no report.
        let id = lease.lease.sweep;
        let refused = scheduler.report(&id).await.expect_err("no report");
        assert!(refused.to_string().contains("live deployment's retrain"), "{refused}");
    }
}
