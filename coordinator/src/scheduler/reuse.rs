//! Verified reuse: a committed result stands for a job only after its file has been
//! checked (format, checksum, identity; see `wf_proto::stored`). A result that fails is
//! never reused: it is set aside under `refused/`, logged with the reason and counted
//! in `wf_results_refused_total{reason}`, and the job is trained again.

use tracing::warn;
use wf_proto::stored::{Stored, StoredRefusal};
use wf_proto::v1;
use wf_shared::job::JobEvent;
use wf_shared::plan::{JobKey, identity_differences};

use super::{Scheduler, SchedulerError};
use crate::store::{Lease, StoreError};

/// Which identity a stored result must carry.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expected<'a> {
    /// The planned job's identity, byte for byte.
    Planned(&'a str),
    /// Any identity whose hash is the key (the reconciler, which has keys, not plans).
    KeyOnly,
}

/// The result `stored` holds if it is the result of the job whose identity is `planned`;
/// a refusal names the differences.
pub fn result_for_planned(stored: Stored, planned: &str) -> Result<v1::JobResult, StoredRefusal> {
    stored.result_for(planned, |stored, planned| identity_differences(stored, planned, 4).join("; "))
}

impl Scheduler {
    /// The committed result of the planned job `key` (of identity `identity`), if one
    /// may stand for it: [`Scheduler::verified_result`] with the planned identity.
    pub(super) async fn planned_result(
        &self,
        key: &JobKey,
        identity: &str,
    ) -> Result<Option<v1::JobResult>, SchedulerError> {
        self.verified_result(key, Expected::Planned(identity)).await
    }

    /// A job leased again although its result is committed: the job store lost the
    /// commit (a Redis restarted from an append-only file that missed its last second of
    /// writes acknowledged it, then rolled it back). The committed result stands for the
    /// job, so the lease is completed here and nothing is trained again. Returns whether
    /// it was. One existence check per lease; the result is read only when it exists.
    pub(super) async fn complete_if_committed(&self, lease: &Lease, worker: &str) -> Result<bool, SchedulerError> {
        if !self.artifacts.has_result(&lease.key).await?
            || self.verified_result(&lease.key, Expected::KeyOnly).await?.is_none()
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

    /// The committed result of job `key`, if there is one that may stand for it; a
    /// stored result that may not is set aside (see the module docs).
    pub(super) async fn verified_result(
        &self,
        key: &JobKey,
        expected: Expected<'_>,
    ) -> Result<Option<v1::JobResult>, SchedulerError> {
        let Some(bytes) = self.artifacts.result(key).await? else { return Ok(None) };
        let checked = Stored::read(&bytes).and_then(|stored| match expected {
            Expected::Planned(planned) => result_for_planned(stored, planned),
            Expected::KeyOnly if JobKey::of_identity(&stored.identity) == *key => stored.into_result(),
            Expected::KeyOnly => Err(StoredRefusal::Identity("its hash is not the job key".into())),
        });
        match checked {
            Ok(result) => Ok(Some(result)),
            Err(refusal) => {
                let moved = self.artifacts.set_aside_result(key, self.clock.now_ms()).await?;
                warn!(
                    job = %key.short(),
                    reason = refusal.reason(),
                    moved_to = moved.as_deref().unwrap_or("(already moved)"),
                    "stored result refused, not reused: {refusal}; the job will be trained again"
                );
                metrics::counter!("wf_results_refused_total", "reason" => refusal.reason()).increment(1);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicI64;
    use std::time::Duration;

    use wf_shared::job::SweepId;

    use super::super::tests::{ManualClock, SPEC, compute, run_all, scheduler};
    use super::*;

    /// The result files under `dir`, by job key.
    fn result_file(dir: &std::path::Path, key: &JobKey) -> std::path::PathBuf {
        dir.join(format!("results/{key}.pb"))
    }

    /// A coordinator on `dir` that ran SPEC to the end: it, the sweep and its plan.
    async fn finished_sweep(dir: &std::path::Path) -> (Scheduler, SweepId, Arc<super::super::Planned>) {
        let coordinator = scheduler(dir, Arc::new(ManualClock(AtomicI64::new(1_000_000))));
        let submitted = coordinator.submit(SPEC).await.expect("submit");
        assert_eq!(run_all(&coordinator).await as u64, submitted.jobs);
        let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
        let planned = coordinator.planned(&coordinator.sweep_record(&id).await.expect("record")).await.expect("plan");
        (coordinator, id, planned)
    }

    /// The report's schedule lines without training seconds (measured, so never equal).
    fn quality(report: &crate::report::SweepReport) -> String {
        let mut lines = serde_json::to_value(&report.lines).expect("json");
        for line in lines.as_array_mut().into_iter().flatten() {
            for schedule in line["schedules"].as_array_mut().into_iter().flatten() {
                schedule.as_object_mut().map(|s| s.remove("train_seconds"));
            }
        }
        lines.to_string()
    }

    fn refused_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("refused")).map_or(0, |entries| entries.count())
    }

    #[tokio::test]
    async fn a_result_edited_by_hand_is_not_reused_and_the_job_is_trained_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let (first, id, planned) = finished_sweep(dir.path()).await;
        let reference = first.report(&id).await.expect("report");

        // One byte of one result changed, on a coordinator with a fresh job store and
        // on the one whose store remembers the job as succeeded.
        for fresh in [true, false] {
            let victim = planned.plan.jobs[if fresh { 1 } else { 2 }].key;
            let path = result_file(dir.path(), &victim);
            let mut bytes = std::fs::read(&path).expect("result file");
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x20;
            std::fs::write(&path, bytes).expect("edit");

            let restarted;
            let coordinator = if fresh {
                restarted = scheduler(dir.path(), clock.clone());
                &restarted
            } else {
                &first
            };
            let again = coordinator.submit(SPEC).await.expect("resubmit");
            assert_eq!(again.reused, again.jobs - 1, "the edited result was reused");
            assert!(!path.exists(), "the refused result was not set aside");
            let lease = coordinator.lease("w", Duration::ZERO).await.expect("lease").expect("the job is queued");
            assert_eq!(lease.lease.key, victim);
            coordinator.report_result(&victim, lease.lease.token, "w", compute(&lease)).await.expect("commit");
            let again_id: SweepId = again.progress.sweep_id.parse().expect("id");
            let report = coordinator.report(&again_id).await.expect("report");
            assert!(report.missing.is_empty());
            assert_eq!(quality(&report), quality(&reference), "retrained numbers differ");
        }
        assert_eq!(refused_files(dir.path()), 2);
    }

    #[tokio::test]
    async fn a_report_with_a_damaged_result_still_builds_and_names_it_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (coordinator, id, planned) = finished_sweep(dir.path()).await;
        let victim = planned.plan.jobs[0].key;
        std::fs::write(result_file(dir.path(), &victim), b"not a result").expect("damage");
        let report = coordinator.report(&id).await.expect("the report builds");
        assert_eq!(report.missing, vec![victim.to_string()]);
        assert_eq!(refused_files(dir.path()), 1);

        // A sweep that reused every result (its jobs have no state in this store) finds
        // the damaged one in its report and queues that job afresh.
        let again = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(3_000_000))));
        let reused = again.submit(SPEC).await.expect("resubmit");
        assert_eq!(reused.reused, reused.jobs - 1, "the set-aside result is not reused");
        assert_eq!(run_all(&again).await, 1);
        let second: wf_shared::job::SweepId = reused.progress.sweep_id.parse().expect("id");
        let other = planned.plan.jobs[1].key;
        std::fs::write(result_file(dir.path(), &other), b"damaged too").expect("damage");
        let report = again.report(&second).await.expect("the report builds");
        assert_eq!(
            (report.missing.clone(), report.requeued.clone()),
            (vec![other.to_string()], vec![other.to_string()])
        );
        let lease = again.lease("w", Duration::ZERO).await.expect("lease").expect("queued again");
        assert_eq!(lease.lease.key, other);
        assert!(lease.lease.token.epoch >= 2, "queued afresh in a new epoch: {}", lease.lease.token);
    }

    #[tokio::test]
    async fn another_jobs_result_under_a_key_is_refused_by_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, _, planned) = finished_sweep(dir.path()).await;
        let (a, b) = (planned.plan.jobs[0].key, planned.plan.jobs[1].key);
        // An intact, checksummed result of job a, copied over job b's.
        std::fs::copy(result_file(dir.path(), &a), result_file(dir.path(), &b)).expect("copy");
        let bytes = std::fs::read(result_file(dir.path(), &b)).expect("read");
        let refusal = Stored::read(&bytes)
            .and_then(|stored| {
                stored.result_for(&planned.plan.jobs[1].identity, |s, p| identity_differences(s, p, 4).join("; "))
            })
            .expect_err("another job's result");
        assert_eq!(refusal.reason(), "identity");
        assert!(refusal.to_string().contains("score:") || refusal.to_string().contains("train:"), "{refusal}");
        let again = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(2_000_000))));
        let resubmitted = again.submit(SPEC).await.expect("resubmit");
        assert_eq!(resubmitted.reused, resubmitted.jobs - 1);
        assert_eq!(again.lease("w", Duration::ZERO).await.expect("lease").expect("queued").lease.key, b);
    }

    #[tokio::test]
    async fn a_result_whose_identity_is_not_the_jobs_is_refused_at_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let coordinator = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(1_000_000))));
        coordinator.submit(SPEC).await.expect("submit");
        let lease = coordinator.lease("w", Duration::ZERO).await.expect("lease").expect("a job");
        let mut result = compute(&lease);
        result.identity = result.identity.replace("\"primary_horizon\":5", "\"primary_horizon\":1");
        let refused = coordinator.report_result(&lease.lease.key, lease.lease.token, "w", result.clone()).await;
        assert!(
            matches!(&refused, Err(SchedulerError::InvalidArgument(e)) if e.field == "result.identity"),
            "{refused:?}"
        );
        result.identity.clear();
        assert!(coordinator.report_result(&lease.lease.key, lease.lease.token, "w", result).await.is_err());
        assert!(
            !coordinator.artifacts().has_result(&lease.lease.key).await.expect("head"),
            "a forged result was written"
        );
        // The lease is still the worker's: the true result commits.
        coordinator.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
    }
}
