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
            let leased = match self.store.lease(worker, lease_ms, max_ms, self.clock.now_ms()).await {
                Err(StoreError::EpochLost) => {
                    self.ensure_epoch().await?;
                    self.store.lease(worker, lease_ms, max_ms, self.clock.now_ms()).await?
                }
                other => other?,
            };
            if let Some(lease) = leased {
                if self.complete_if_committed(&lease, worker).await? {
                    continue;
                }
                let record = self.sweep_record(&lease.sweep).await?;
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
