//! Leases: granting a ready job to a worker, heartbeats that extend the lease, and the
//! reaper that takes expired leases back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wf_shared::job::{Phase, Token};
use wf_shared::plan::JobKey;

use super::{HeartbeatAction, JobLease, JobLimit, Scheduler, SchedulerError};
use crate::store::StoreError;

impl Scheduler {
    /// [`Scheduler::lease`] for a worker running the jobs `holding`: when one of its
    /// lease calls failed in the store, a job leased to it that it is not running (a lease
    /// whose answer it never got) is handed to it again, under its token, before any new
    /// one; without this it would expire, an attempt lost to a fault not the job's.
    pub async fn lease_holding(
        &self,
        worker: &str,
        wait: Duration,
        holding: Option<&[JobKey]>,
    ) -> Result<Option<JobLease>, SchedulerError> {
        let failed_at = super::lock(&self.uncertain).get(worker).map(|u| u.failed_at);
        if let (Some(failed_at), Some(holding)) = (failed_at, holding) {
            if let Some(lease) = self.unanswered_lease(worker, holding).await? {
                metrics::counter!("wf_leases_handed_again_total").increment(1);
                info!(job = %lease.lease.key.short(), worker, "a lease whose answer was lost handed to its worker again");
                return Ok(Some(lease));
            }
            // A command held up by the fault may still run: looked for over a lease period
            // after the last failed call, and no longer.
            if self.clock.now_ms() - failed_at > self.config.lease_ms {
                super::lock(&self.uncertain).remove(worker);
            }
        }
        self.lease(worker, wait).await
    }

    /// A job leased to `worker` that it is not running and was not handed again before,
    /// as a lease to hand it again (recorded as handed, so that concurrent calls of its
    /// slots never get the same one).
    async fn unanswered_lease(&self, worker: &str, holding: &[JobKey]) -> Result<Option<JobLease>, SchedulerError> {
        let holding: std::collections::HashSet<&JobKey> = holding.iter().collect();
        let keys: Vec<JobKey> = self.store.leased().await?.into_iter().filter(|key| !holding.contains(key)).collect();
        let states = self.store.states(&keys).await?;
        for (key, state) in keys.iter().zip(states) {
            let Some(state) = state else { continue };
            let Phase::Leased { worker: holder, expires_at, .. } = &state.phase else { continue };
            if holder != worker {
                continue;
            }
            let token = state.token();
            let claimed = match super::lock(&self.uncertain).get_mut(worker) {
                Some(uncertain) => uncertain.handed.insert((*key, token.attempt)),
                None => false,
            };
            if !claimed {
                continue;
            }
            let Some(record) = self.store.job(key).await? else { continue };
            let lease = crate::store::Lease { key: *key, sweep: record.sweep, token, expires_at: *expires_at };
            let sweep = self.sweep_record(&lease.sweep).await?;
            return Ok(Some(JobLease {
                spec_toml: sweep.spec_toml.clone(),
                dataset: sweep.dataset.clone(),
                lease_ms: self.config.lease_ms,
                training: sweep.training.clone(),
                max_job_ms: sweep.max_job_ms,
                lease,
            }));
        }
        Ok(None)
    }

    /// Records that a lease call of `worker` failed where the store may have granted a
    /// lease: its next calls look for it for a lease period.
    fn mark_uncertain(&self, worker: &str) {
        let now = self.clock.now_ms();
        let mut uncertain = super::lock(&self.uncertain);
        // Workers gone since are forgotten after ten lease periods.
        uncertain.retain(|_, u| now - u.failed_at < self.config.lease_ms * 10);
        uncertain.entry(worker.to_string()).or_default().failed_at = now;
    }

    /// Leases a ready job to `worker`, waiting up to `wait` for one.
    pub async fn lease(&self, worker: &str, wait: Duration) -> Result<Option<JobLease>, SchedulerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let woken = self.work.notified();
            // Jobs carry their sweep's limit; a fixed one applies to any that does not.
            let max_ms = match self.config.job_limit {
                JobLimit::Fixed(ms) => Some(ms),
                JobLimit::FromSpec | JobLimit::Unlimited => None,
            };
            let lease_ms = self.config.lease_ms;
            let granted = match self.store.lease(worker, lease_ms, max_ms, self.clock.now_ms()).await {
                Err(StoreError::EpochLost) => {
                    self.ensure_epoch().await?;
                    self.store.lease(worker, lease_ms, max_ms, self.clock.now_ms()).await
                }
                other => other,
            };
            let leased = granted.inspect_err(|_| self.mark_uncertain(worker))?;
            if let Some(lease) = leased {
                // Granted: an error from here on loses the answer too.
                if self.complete_if_committed(&lease, worker).await.inspect_err(|_| self.mark_uncertain(worker))? {
                    continue;
                }
                let record = self.sweep_record(&lease.sweep).await.inspect_err(|_| self.mark_uncertain(worker))?;
                metrics::counter!("wf_leases_total").increment(1);
                self.changed();
                return Ok(Some(JobLease {
                    spec_toml: record.spec_toml.clone(),
                    dataset: record.dataset.clone(),
                    lease_ms: self.config.lease_ms,
                    training: record.training.clone(),
                    max_job_ms: record.max_job_ms,
                    lease,
                }));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let pause = Duration::from_millis(self.config.poll_ms).min(deadline - now);
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Extends `worker`'s lease `token` of job `key`.
    pub async fn heartbeat(&self, key: &JobKey, token: Token, worker: &str) -> Result<HeartbeatAction, SchedulerError> {
        match self.store.heartbeat(key, token, worker, self.config.lease_ms, self.clock.now_ms()).await {
            Ok(_) => {
                metrics::counter!("wf_heartbeats_total").increment(1);
                Ok(HeartbeatAction::Continue)
            }
            Err(StoreError::Transition(error)) => {
                let record = self.store.job(key).await?;
                match record.map(|r| r.state.phase) {
                    Some(Phase::Cancelled) => Ok(HeartbeatAction::Cancel),
                    _ => Err(SchedulerError::LeaseLost(error)),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Re-queues expired leases until `shutdown`, checking the store's epoch on every
    /// tick. After a start, a new epoch or a store outage it waits one lease period
    /// first, so that workers cut off by the outage can heartbeat again.
    pub async fn reap_until(&self, shutdown: CancellationToken) {
        let period =
            Duration::from_millis((self.config.lease_ms as u64 / 4).clamp(20, 5_000).min(self.config.poll_ms.max(20)));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.reap_once().await
                && !self.store_down.swap(true, Ordering::SeqCst)
            {
                metrics::counter!("wf_store_outages_total").increment(1);
                warn!(%error, "the job store is unreachable; leases will get a grace period when it is back");
            }
        }
    }

    /// One reaper tick: the epoch check, expired leases (after any grace), queue depths.
    pub async fn reap_once(&self) -> Result<(), SchedulerError> {
        self.ensure_epoch().await?;
        // Back from an outage: the grace comes before this tick's reaping, which would
        // otherwise take every lease that ran out while the store was away (the network
        // chaos scenario caught it doing so).
        if self.store_down.swap(false, Ordering::SeqCst) {
            self.grant_grace();
            info!(grace_ms = self.config.lease_ms, "the job store is back; live workers get one lease period");
        }
        let now = self.clock.now_ms();
        if now >= self.grace_until.load(Ordering::SeqCst) {
            let reaped = self.store.reap(now).await?;
            if !reaped.is_empty() {
                let states = self.store.states(&reaped).await?;
                for (key, state) in reaped.iter().zip(states) {
                    let error = state.and_then(|s| s.last_error).unwrap_or_default();
                    if error.contains(wf_shared::job::HUNG) {
                        metrics::counter!("wf_jobs_hung_total").increment(1);
                        warn!(job = %key.short(), error, "job ran past its maximum duration; failed");
                    } else {
                        metrics::counter!("wf_leases_expired_total").increment(1);
                        warn!(job = %key.short(), "lease expired; job re-queued");
                    }
                }
                self.work.notify_waiters();
                self.changed();
            }
        }
        let depth = self.store.depth().await?;
        metrics::gauge!("wf_queue_jobs", "state" => "queued").set(depth.queued as f64);
        metrics::gauge!("wf_queue_jobs", "state" => "leased").set(depth.leased as f64);
        metrics::gauge!("wf_queue_jobs", "state" => "dead_lettered").set(depth.dead_lettered as f64);
        Ok(())
    }
}
