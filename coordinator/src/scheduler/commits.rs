//! Commits: a worker's result (published only after its guarded `Complete` won) and a
//! worker's failure report.

use bytes::Bytes;
use tracing::{info, warn};
use wf_proto::v1;
use wf_shared::age::JobResult;
use wf_shared::job::{FailureKind, JobEvent, Phase, Token};
use wf_shared::plan::{JobIdentity, JobKey};

use super::{Scheduler, SchedulerError};
use crate::store::StoreError;

impl Scheduler {
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
}
