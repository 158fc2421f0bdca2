//! Recovery: rebuilding the job store from the artifact store, the record of truth,
//! after the store lost state (Redis restarted empty, a flush, an eviction), and
//! repairing a partial loss (a deleted set, a lost owner).

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use wf_shared::plan::JobKey;

use wf_shared::job::Phase;

use super::reuse::Expected;
use super::{Reconciled, Scheduler, SchedulerError};
use crate::store::SweepRecord;

/// How far back (past a lease period) a reconciliation looks for completed jobs whose
/// result was never published: ten minutes, several reconciliation periods by default.
/// Older ones are found by the next report or submission, which read every result.
const RECENT_MS: i64 = 600_000;

impl Scheduler {
    /// Rebuilds what the job store lost (Redis restarted empty, a flush, an eviction)
    /// from the artifact store, the record of truth: every sweep whose record is missing
    /// is restored, and every job of a sweep that is not cancelled, has no committed
    /// result and is unknown to the job store is queued again, in a new epoch (so that
    /// no lease token the lost state handed out can be handed out again). Indices that
    /// disagree with job states are repaired, jobs that lost their owner get it back, and
    /// jobs recently completed whose result was never published are queued again (not in
    /// the grace period after a start, when their winning attempt may still republish).
    /// Staging files of interrupted result writes are removed. Idempotent.
    pub async fn reconcile(&self) -> Result<Reconciled, SchedulerError> {
        let mut reconciled = Reconciled::default();
        // One new epoch per reconciliation, however many sweeps lost jobs.
        let mut epoch_started = false;
        let now = self.clock.now_ms();
        let repaired = self.store.repair(now).await?;
        if repaired.fixed > 0 {
            warn!(fixed = repaired.fixed, "job store indices disagreed with job states; repaired");
            metrics::counter!("wf_store_repairs_total").increment(repaired.fixed as u64);
            reconciled.repaired += repaired.fixed;
        }
        let mut unowned: BTreeSet<JobKey> = repaired.unowned.into_iter().collect();
        // In the grace period after a start or a new epoch, the attempt that won a commit
        // whose publication a crash cut off may still be retrying its report (which
        // publishes the result): its job is not queued again before the grace ends.
        let in_grace = now < self.grace_until.load(std::sync::atomic::Ordering::SeqCst);
        match self.artifacts.sweep_staging(std::time::Duration::from_secs(600)).await {
            Ok(0) => {}
            Ok(swept) => warn!(swept, "removed staging files of interrupted result writes"),
            Err(error) => warn!(%error, "cannot sweep staging files"),
        }
        for id in self.artifacts.sweep_ids().await? {
            let record = match self.store.sweep(&id).await? {
                Some(record) => record,
                None => {
                    let Some(bytes) = self.artifacts.sweep_file(&id, "sweep.json").await? else { continue };
                    let record: SweepRecord = match serde_json::from_slice(&bytes) {
                        Ok(record) => record,
                        Err(error) => {
                            warn!(sweep = %id, %error, "unreadable sweep record in the artifact store; skipped");
                            continue;
                        }
                    };
                    self.store.put_sweep(&record).await?;
                    reconciled.sweeps_restored += 1;
                    record
                }
            };
            if record.cancelled {
                continue;
            }
            let mut lost = Vec::new();
            let mut unpublished = Vec::new();
            let mut record = record;
            let known: BTreeSet<JobKey> = record.precomputed.iter().copied().collect();
            let mut committed = Vec::new();
            for (key, state) in record.jobs.iter().zip(self.store.states(&record.jobs).await?) {
                if unowned.remove(key) {
                    self.store.set_owner(key, &id).await?;
                    reconciled.repaired += 1;
                }
                if let Some(state) = state {
                    // Completed a while ago (not a commit still publishing), recently
                    // enough that no earlier reconciliation looked, and no result.
                    if let Phase::Succeeded { at, .. } = state.phase {
                        let age = now - at;
                        let window = self.config.lease_ms..self.config.lease_ms + RECENT_MS;
                        if !in_grace && window.contains(&age) && !self.artifacts.has_result(key).await? {
                            unpublished.push(*key);
                        }
                    }
                    continue;
                }
                if self.verified_result(key, Expected::KeyOnly).await?.is_none() {
                    lost.push(*key);
                } else if !known.contains(key) {
                    committed.push(*key);
                }
            }
            if !committed.is_empty() {
                // Committed results whose job states were lost count as done.
                record.precomputed.extend(committed);
                self.store.put_sweep(&record).await?;
            }
            if !lost.is_empty() {
                // The store lost these jobs, and with them the tokens of their leases.
                if !epoch_started {
                    self.new_epoch("jobs were lost from the job store").await?;
                    epoch_started = true;
                }
                reconciled.jobs_requeued += self.store.enqueue_limited(&id, &lost, record.max_job_ms, now).await?;
            }
            if !unpublished.is_empty() {
                warn!(sweep = %id, jobs = unpublished.len(), "completed jobs whose result was never published; queued again");
                reconciled.jobs_requeued += self.store.resubmit(&id, &unpublished, now).await?;
            }
        }
        if reconciled != Reconciled::default() {
            warn!(
                sweeps = reconciled.sweeps_restored,
                jobs = reconciled.jobs_requeued,
                repaired = reconciled.repaired,
                "the job store had lost state; restored from the artifact store"
            );
            metrics::counter!("wf_reconciled_jobs_total").increment(reconciled.jobs_requeued as u64);
            self.work.notify_waiters();
            self.changed();
        }
        Ok(reconciled)
    }

    /// Reconciles at once, then every `reconcile_every`, until `shutdown`.
    pub async fn reconcile_until(&self, shutdown: CancellationToken) {
        let Some(period) = self.config.reconcile_every else { return };
        loop {
            if let Err(error) = self.reconcile().await {
                warn!(%error, "reconciliation failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    }
}
