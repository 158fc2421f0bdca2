//! `MemoryJobStore`: the job store of `wf run`, in one process, behind one mutex.
//!
//! Indices mirror the Redis layout: queued jobs ordered by (not before, key), leased jobs
//! by (deadline, key), so leasing and reaping touch only what is due.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use wf_shared::job::{Applied, JobEvent, JobState, Phase, RetryPolicy, SweepId, UnixMs};
use wf_shared::plan::JobKey;

use super::{EpochCheck, JobRecord, JobStore, Lease, QueueDepth, Repaired, StoreError, SweepRecord};

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<JobKey, JobRecord>,
    ready: BTreeSet<(UnixMs, JobKey)>,
    /// Leased jobs by when the reaper must look at them ([`Phase::due_at`]).
    leased: BTreeSet<(UnixMs, JobKey)>,
    dead: BTreeSet<JobKey>,
    sweeps: BTreeMap<SweepId, SweepRecord>,
    /// The epoch marker: none until the scheduler starts an epoch (a process's memory
    /// starts empty, so every start is a new epoch).
    epoch: Option<u64>,
}

/// Where `phase` belongs in the indices.
#[derive(Debug, PartialEq, Eq)]
enum Index {
    Ready(UnixMs),
    Leased(UnixMs),
    Dead,
    None,
}

fn index_of(phase: &Phase) -> Index {
    match phase {
        Phase::Queued { not_before } => Index::Ready(*not_before),
        Phase::Leased { .. } => Index::Leased(phase.due_at().unwrap_or(UnixMs::MAX)),
        Phase::DeadLettered => Index::Dead,
        _ => Index::None,
    }
}

impl Inner {
    /// Replaces `key`'s state and keeps the indices in step.
    fn write(&mut self, key: JobKey, next: JobState) {
        let Some(record) = self.jobs.get_mut(&key) else { return };
        match index_of(&record.state.phase) {
            Index::Ready(at) => self.ready.remove(&(at, key)),
            Index::Leased(at) => self.leased.remove(&(at, key)),
            Index::Dead => self.dead.remove(&key),
            Index::None => false,
        };
        match index_of(&next.phase) {
            Index::Ready(at) => self.ready.insert((at, key)),
            Index::Leased(at) => self.leased.insert((at, key)),
            Index::Dead => self.dead.insert(key),
            Index::None => false,
        };
        record.state = next;
    }

    fn apply(
        &mut self,
        key: &JobKey,
        event: &JobEvent,
        now: UnixMs,
        policy: &RetryPolicy,
    ) -> Result<JobState, StoreError> {
        let record = self.jobs.get(key).ok_or_else(|| StoreError::UnknownJob(key.short()))?;
        match record.state.apply(event, now, policy)? {
            Applied::Unchanged => Ok(record.state.clone()),
            Applied::Changed(next) => {
                self.write(*key, next.clone());
                Ok(next)
            }
        }
    }
}

/// Jobs and sweeps in memory; lost when the process exits.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    policy: RetryPolicy,
    inner: Mutex<Inner>,
}

impl MemoryJobStore {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an index half-written (each write
        // completes before the guard drops), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    fn policy(&self) -> RetryPolicy {
        self.policy
    }

    async fn enqueue_limited(
        &self,
        sweep: &SweepId,
        keys: &[JobKey],
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut added = 0;
        for key in keys {
            if inner.jobs.contains_key(key) {
                continue;
            }
            let state = JobState::new(now, key.salt()).with_max_ms(max_ms);
            inner.jobs.insert(*key, JobRecord { sweep: sweep.clone(), state });
            inner.ready.insert((now, *key));
            added += 1;
        }
        Ok(added)
    }

    async fn resubmit(&self, sweep: &SweepId, keys: &[JobKey], now: UnixMs) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut resubmitted = 0;
        for key in keys {
            let Some(record) = inner.jobs.get(key) else { continue };
            if !matches!(record.state.phase, Phase::DeadLettered | Phase::Cancelled | Phase::Succeeded { .. }) {
                continue;
            }
            inner.apply(key, &JobEvent::Resubmit, now, &self.policy)?;
            if let Some(record) = inner.jobs.get_mut(key) {
                record.sweep = sweep.clone();
            }
            resubmitted += 1;
        }
        Ok(resubmitted)
    }

    async fn lease(
        &self,
        worker: &str,
        lease_ms: i64,
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<Option<Lease>, StoreError> {
        let mut inner = self.lock();
        let epoch = inner.epoch.ok_or(StoreError::EpochLost)?;
        let Some(&(not_before, key)) = inner.ready.first() else { return Ok(None) };
        if not_before > now {
            return Ok(None);
        }
        let event = JobEvent::Lease { worker: worker.to_string(), lease_ms, epoch, max_ms };
        let state = inner.apply(&key, &event, now, &self.policy)?;
        let Phase::Leased { expires_at, .. } = state.phase else {
            return Err(StoreError::Corrupt { key: key.short(), reason: "a granted lease is not leased".into() });
        };
        let sweep = inner
            .jobs
            .get(&key)
            .map(|record| record.sweep.clone())
            .ok_or_else(|| StoreError::UnknownJob(key.short()))?;
        Ok(Some(Lease { key, sweep, token: state.token(), expires_at }))
    }

    async fn epoch_check(&self) -> Result<EpochCheck, StoreError> {
        Ok(self.lock().epoch.map_or(EpochCheck::Lost, EpochCheck::Current))
    }

    async fn start_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        self.lock().epoch = Some(epoch);
        Ok(())
    }

    async fn repair(&self, _now: UnixMs) -> Result<Repaired, StoreError> {
        // Every write keeps the indices in step under one lock; this checks that it did.
        let mut inner = self.lock();
        let (mut ready, mut leased, mut dead) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for (key, record) in &inner.jobs {
            match index_of(&record.state.phase) {
                Index::Ready(at) => ready.insert((at, *key)),
                Index::Leased(at) => leased.insert((at, *key)),
                Index::Dead => dead.insert(*key),
                Index::None => false,
            };
        }
        let fixed = inner.ready.symmetric_difference(&ready).count()
            + inner.leased.symmetric_difference(&leased).count()
            + inner.dead.symmetric_difference(&dead).count();
        (inner.ready, inner.leased, inner.dead) = (ready, leased, dead);
        Ok(Repaired { fixed, unowned: Vec::new() })
    }

    async fn set_owner(&self, _key: &JobKey, _sweep: &SweepId) -> Result<(), StoreError> {
        // A job in memory always has its owner.
        Ok(())
    }

    async fn apply(&self, key: &JobKey, event: &JobEvent, now: UnixMs) -> Result<JobState, StoreError> {
        self.lock().apply(key, event, now, &self.policy)
    }

    async fn leased(&self) -> Result<Vec<JobKey>, StoreError> {
        Ok(self.lock().leased.iter().map(|(_, key)| *key).collect())
    }

    async fn reap(&self, now: UnixMs) -> Result<Vec<JobKey>, StoreError> {
        let mut inner = self.lock();
        let due: Vec<JobKey> =
            inner.leased.iter().take_while(|(deadline, _)| *deadline <= now).map(|(_, key)| *key).collect();
        for key in &due {
            inner.apply(key, &JobEvent::Expire, now, &self.policy)?;
        }
        Ok(due)
    }

    async fn job(&self, key: &JobKey) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.lock().jobs.get(key).cloned())
    }

    async fn states(&self, keys: &[JobKey]) -> Result<Vec<Option<JobState>>, StoreError> {
        let inner = self.lock();
        Ok(keys.iter().map(|key| inner.jobs.get(key).map(|record| record.state.clone())).collect())
    }

    async fn depth(&self) -> Result<QueueDepth, StoreError> {
        let inner = self.lock();
        Ok(QueueDepth {
            queued: inner.ready.len() as u64,
            leased: inner.leased.len() as u64,
            dead_lettered: inner.dead.len() as u64,
        })
    }

    async fn put_sweep(&self, sweep: &SweepRecord) -> Result<(), StoreError> {
        self.lock().sweeps.insert(sweep.id.clone(), sweep.clone());
        Ok(())
    }

    async fn sweep(&self, id: &SweepId) -> Result<Option<SweepRecord>, StoreError> {
        Ok(self.lock().sweeps.get(id).cloned())
    }

    async fn sweeps(&self) -> Result<Vec<SweepRecord>, StoreError> {
        Ok(self.lock().sweeps.values().cloned().collect())
    }
}
