//! Recovery: rebuilding the job store from the artifact store, the record of truth,
//! after the store lost state (Redis restarted empty, a flush, an eviction).

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use wf_shared::plan::JobKey;

use super::reuse::Expected;
use super::{Reconciled, Scheduler, SchedulerError};
use crate::store::SweepRecord;

impl Scheduler {
    /// Rebuilds what the job store lost (Redis restarted empty, a flush, an eviction)
    /// from the artifact store, the record of truth: every sweep whose record is missing
    /// is restored, and every job of a sweep that is not cancelled, has no committed
    /// result and is unknown to the job store is queued again. Idempotent.
    pub async fn reconcile(&self) -> Result<Reconciled, SchedulerError> {
        let mut reconciled = Reconciled::default();
        let now = self.clock.now_ms();
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
            let mut record = record;
            let known: BTreeSet<JobKey> = record.precomputed.iter().copied().collect();
            let mut committed = Vec::new();
            for (key, state) in record.jobs.iter().zip(self.store.states(&record.jobs).await?) {
                if state.is_some() {
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
                reconciled.jobs_requeued += self.store.enqueue(&id, &lost, now).await?;
            }
        }
        if reconciled != Reconciled::default() {
            warn!(
                sweeps = reconciled.sweeps_restored,
                jobs = reconciled.jobs_requeued,
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
