//! `RedisJobStore`: jobs, queue and sweeps in Redis, for clusters.
//!
//! Every key of a queue shares one hash tag (`wf:{queue}:…`) so that the scripts also
//! run on Redis Cluster:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `jobs` | hash | job key → state (JSON of `JobState`) |
//! | `owner` | hash | job key → the sweep that queued it |
//! | `ready` | sorted set | queued jobs, scored by "not before" (unix ms) |
//! | `leased` | sorted set | leased jobs, scored by lease deadline (unix ms) |
//! | `dead` | hash | dead-lettered job → last error |
//! | `sweeps` | hash | sweep id → sweep record (JSON) |
//!
//! A transition is: read the state, decide with `JobState::apply`, then run the Lua
//! script of that transition, which writes only if the state is still exactly the one
//! read (the guard also checks the attempt). A lost race re-reads and decides again.
//!
//! Leasing reads the oldest ready jobs with their states in one round trip and keeps
//! those it did not take for the next lease calls, so a lease is usually one guarded
//! write. The kept candidates are only a hint: the guard refuses any that changed, and
//! the store forgets them whenever it makes a job ready (which could put an older job
//! ahead of them) or loses a race.

use std::collections::VecDeque;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use wf_shared::job::{Applied, JobEvent, JobState, Phase, RetryPolicy, SweepId, UnixMs};
use wf_shared::plan::JobKey;

use super::{JobRecord, JobStore, Lease, QueueDepth, StoreError, SweepRecord};

const GUARD: &str = include_str!("lua/guard.lua");

/// Races a single transition may lose before giving up (each loss means another
/// writer moved the job; a handful is already unusual).
const MAX_RACES: usize = 16;
/// Ready jobs one read fetches for the lease calls that follow.
const LEASE_CANDIDATES: isize = 32;
/// Keys per enqueue script call.
const ENQUEUE_BATCH: usize = 500;

#[derive(Debug)]
struct Scripts {
    lease: Script,
    heartbeat: Script,
    complete: Script,
    requeue: Script,
    dead_letter: Script,
    cancel: Script,
    enqueue: Script,
    peek: Script,
    resubmit: Script,
}

impl Scripts {
    fn new() -> Self {
        let guarded = |body: &str| Script::new(&format!("{GUARD}\n{body}"));
        Self {
            lease: guarded(include_str!("lua/lease.lua")),
            heartbeat: guarded(include_str!("lua/heartbeat.lua")),
            complete: guarded(include_str!("lua/complete.lua")),
            requeue: guarded(include_str!("lua/requeue.lua")),
            dead_letter: guarded(include_str!("lua/dead_letter.lua")),
            cancel: guarded(include_str!("lua/cancel.lua")),
            resubmit: guarded(include_str!("lua/resubmit.lua")),
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            peek: Script::new(include_str!("lua/peek.lua")),
        }
    }
}

/// Jobs and sweeps of one queue in Redis.
pub struct RedisJobStore {
    connection: ConnectionManager,
    policy: RetryPolicy,
    keys: [String; 6],
    scripts: Scripts,
    /// Ready jobs read but not yet tried by a lease call, oldest first. Concurrent lease
    /// calls take different ones instead of racing for the oldest.
    candidates: tokio::sync::Mutex<VecDeque<Candidate>>,
}

/// A ready job as a lease call read it.
#[derive(Debug)]
struct Candidate {
    key: JobKey,
    state: JobState,
    sweep: SweepId,
}

impl std::fmt::Debug for RedisJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobStore").field("prefix", &self.keys[0]).field("policy", &self.policy).finish()
    }
}

const JOBS: usize = 0;
const READY: usize = 1;
const LEASED: usize = 2;
const DEAD: usize = 3;
const OWNER: usize = 4;
const SWEEPS: usize = 5;

fn encode(state: &JobState) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|error| StoreError::Backend(format!("failed to encode a job state: {error}")))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt { key: key.to_string(), reason: error.to_string() })
}

impl RedisJobStore {
    /// Connects to `url` (`redis://host:port/db` or `unix:///path`) and uses the queue
    /// named `queue`.
    pub async fn connect(url: &str, queue: &str, policy: RetryPolicy) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        let keys = ["jobs", "ready", "leased", "dead", "owner", "sweeps"].map(|name| format!("wf:{{{queue}}}:{name}"));
        Ok(Self { connection, policy, keys, scripts: Scripts::new(), candidates: Default::default() })
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// An invocation of `script` with the queue's keys, in the order every script
    /// expects: KEYS[1] jobs, [2] ready, [3] leased, [4] dead, [5] owner.
    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in [JOBS, READY, LEASED, DEAD, OWNER] {
            invocation.key(&self.keys[key]);
        }
        invocation
    }

    async fn read_state(&self, key: &JobKey) -> Result<JobState, StoreError> {
        let text: Option<String> = self.connection().hget(&self.keys[JOBS], key.to_string()).await?;
        let text = text.ok_or_else(|| StoreError::UnknownJob(key.short()))?;
        decode(&key.short(), &text)
    }

    /// Writes `next` over `current` with the script of that transition; `false` when
    /// another writer got there first.
    async fn write(&self, key: &JobKey, current: &JobState, next: &JobState) -> Result<bool, StoreError> {
        self.write_owned(key, current, next, None).await
    }

    /// [`Self::write`], also handing the job to sweep `owner` (for a resubmission).
    async fn write_owned(
        &self,
        key: &JobKey,
        current: &JobState,
        next: &JobState,
        owner: Option<&SweepId>,
    ) -> Result<bool, StoreError> {
        let (script, extra) = match (&current.phase, &next.phase) {
            (Phase::DeadLettered | Phase::Cancelled | Phase::Succeeded { .. }, Phase::Queued { not_before }) => {
                (&self.scripts.resubmit, not_before.to_string())
            }
            (Phase::Queued { .. }, Phase::Leased { expires_at, .. }) => (&self.scripts.lease, expires_at.to_string()),
            (Phase::Leased { .. }, Phase::Leased { expires_at, .. }) => {
                (&self.scripts.heartbeat, expires_at.to_string())
            }
            (_, Phase::Succeeded { .. }) => (&self.scripts.complete, String::new()),
            (_, Phase::Queued { not_before }) => (&self.scripts.requeue, not_before.to_string()),
            (_, Phase::DeadLettered) => (&self.scripts.dead_letter, next.last_error.clone().unwrap_or_default()),
            (_, Phase::Cancelled) => (&self.scripts.cancel, String::new()),
            (from, to) => {
                return Err(StoreError::Backend(format!(
                    "no script moves a job from {} to {}",
                    from.name(),
                    to.name()
                )));
            }
        };
        let written: Result<i64, redis::RedisError> = self
            .invocation(script)
            .arg(key.to_string())
            .arg(encode(current)?)
            .arg(current.attempts_made)
            .arg(encode(next)?)
            .arg(extra)
            .arg(owner.map_or("", SweepId::as_str))
            .invoke_async(&mut self.connection())
            .await;
        if matches!(next.phase, Phase::Queued { .. }) {
            // A job ready again may be older than the kept candidates.
            self.forget_candidates().await;
        }
        Ok(written? == 1)
    }

    async fn forget_candidates(&self) {
        self.candidates.lock().await.clear();
    }

    /// The oldest ready job no other lease call has taken: a kept candidate, or else
    /// the first of a fresh read of the oldest ready jobs (the rest are kept).
    async fn next_candidate(&self, now: UnixMs) -> Result<Option<Candidate>, StoreError> {
        // Held across the read, so that concurrent calls wait for it rather than read
        // the same jobs again.
        let mut candidates = self.candidates.lock().await;
        if let Some(candidate) = candidates.pop_front() {
            return Ok(Some(candidate));
        }
        let found: Vec<String> = self
            .invocation(&self.scripts.peek)
            .arg(now)
            .arg(LEASE_CANDIDATES)
            .invoke_async(&mut self.connection())
            .await?;
        for candidate in found.chunks_exact(3) {
            let [text, state, sweep] = candidate else { continue };
            let key: JobKey = text
                .clone()
                .try_into()
                .map_err(|error| StoreError::Corrupt { key: text.clone(), reason: format!("{error}") })?;
            let state = decode(&key.short(), state)?;
            let sweep = sweep.parse().map_err(|reason| StoreError::Corrupt { key: key.short(), reason })?;
            candidates.push_back(Candidate { key, state, sweep });
        }
        Ok(candidates.pop_front())
    }

    /// Reads, decides and writes one event, re-reading after a lost race.
    async fn transition(&self, key: &JobKey, event: &JobEvent, now: UnixMs) -> Result<JobState, StoreError> {
        for _ in 0..MAX_RACES {
            let current = self.read_state(key).await?;
            let next = match current.apply(event, now, &self.policy)? {
                Applied::Unchanged => return Ok(current),
                Applied::Changed(next) => next,
            };
            if self.write(key, &current, &next).await? {
                return Ok(next);
            }
        }
        Err(StoreError::Backend(format!(
            "job {} kept changing under {} {} times",
            key.short(),
            event.name(),
            MAX_RACES
        )))
    }
}

#[async_trait]
impl JobStore for RedisJobStore {
    fn policy(&self) -> RetryPolicy {
        self.policy
    }

    async fn enqueue(&self, sweep: &SweepId, keys: &[JobKey], now: UnixMs) -> Result<usize, StoreError> {
        let mut added = 0;
        for batch in keys.chunks(ENQUEUE_BATCH) {
            let mut invocation = self.invocation(&self.scripts.enqueue);
            invocation.arg(now).arg(sweep.as_str());
            for key in batch {
                invocation.arg(key.to_string()).arg(encode(&JobState::new(now, key.salt()))?);
            }
            let count: Result<usize, _> = invocation.invoke_async(&mut self.connection()).await;
            self.forget_candidates().await;
            added += count?;
        }
        Ok(added)
    }

    async fn resubmit(&self, sweep: &SweepId, keys: &[JobKey], now: UnixMs) -> Result<usize, StoreError> {
        let mut resubmitted = 0;
        for (key, state) in keys.iter().zip(self.states(keys).await?) {
            let Some(mut current) = state else { continue };
            for _ in 0..MAX_RACES {
                if !matches!(current.phase, Phase::DeadLettered | Phase::Cancelled | Phase::Succeeded { .. }) {
                    break;
                }
                let Applied::Changed(next) = current.apply(&JobEvent::Resubmit, now, &self.policy)? else { break };
                if self.write_owned(key, &current, &next, Some(sweep)).await? {
                    resubmitted += 1;
                    break;
                }
                current = self.read_state(key).await?;
            }
        }
        Ok(resubmitted)
    }

    async fn lease(&self, worker: &str, lease_ms: i64, now: UnixMs) -> Result<Option<Lease>, StoreError> {
        let event = JobEvent::Lease { worker: worker.to_string(), lease_ms };
        for _ in 0..MAX_RACES * LEASE_CANDIDATES as usize {
            let Some(Candidate { key, state, sweep }) = self.next_candidate(now).await? else { return Ok(None) };
            let Ok(Applied::Changed(next)) = state.apply(&event, now, &self.policy) else { continue };
            if !self.write(&key, &state, &next).await? {
                // Changed since it was read: so may the other kept candidates be.
                self.forget_candidates().await;
                continue;
            }
            let Phase::Leased { expires_at, .. } = next.phase else { continue };
            return Ok(Some(Lease { key, sweep, attempt: next.attempts_made, expires_at }));
        }
        Ok(None)
    }

    async fn apply(&self, key: &JobKey, event: &JobEvent, now: UnixMs) -> Result<JobState, StoreError> {
        self.transition(key, event, now).await
    }

    async fn apply_from(
        &self,
        key: &JobKey,
        current: &JobState,
        event: &JobEvent,
        now: UnixMs,
    ) -> Result<JobState, StoreError> {
        let next = match current.apply(event, now, &self.policy)? {
            Applied::Unchanged => return Ok(current.clone()),
            Applied::Changed(next) => next,
        };
        if self.write(key, current, &next).await? {
            return Ok(next);
        }
        // Moved since the caller read it: decide again on what is there now.
        self.transition(key, event, now).await
    }

    async fn reap(&self, now: UnixMs) -> Result<Vec<JobKey>, StoreError> {
        let due: Vec<String> = self.connection().zrangebyscore(&self.keys[LEASED], "-inf", now).await?;
        let mut reaped = Vec::with_capacity(due.len());
        for text in due {
            let key: JobKey = text
                .clone()
                .try_into()
                .map_err(|error| StoreError::Corrupt { key: text, reason: format!("{error}") })?;
            match self.transition(&key, &JobEvent::Expire, now).await {
                Ok(_) => reaped.push(key),
                // A heartbeat or a report got there first.
                Err(StoreError::Transition(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(reaped)
    }

    async fn job(&self, key: &JobKey) -> Result<Option<JobRecord>, StoreError> {
        let (state, sweep): (Option<String>, Option<String>) = redis::pipe()
            .hget(&self.keys[JOBS], key.to_string())
            .hget(&self.keys[OWNER], key.to_string())
            .query_async(&mut self.connection())
            .await?;
        let (Some(state), Some(sweep)) = (state, sweep) else { return Ok(None) };
        let sweep = sweep.parse().map_err(|reason| StoreError::Corrupt { key: key.short(), reason })?;
        Ok(Some(JobRecord { sweep, state: decode(&key.short(), &state)? }))
    }

    async fn states(&self, keys: &[JobKey]) -> Result<Vec<Option<JobState>>, StoreError> {
        let mut states = Vec::with_capacity(keys.len());
        for batch in keys.chunks(ENQUEUE_BATCH) {
            let fields: Vec<String> = batch.iter().map(JobKey::to_string).collect();
            let texts: Vec<Option<String>> =
                redis::cmd("HMGET").arg(&self.keys[JOBS]).arg(&fields).query_async(&mut self.connection()).await?;
            for (key, text) in batch.iter().zip(texts) {
                states.push(text.map(|text| decode(&key.short(), &text)).transpose()?);
            }
        }
        Ok(states)
    }

    async fn depth(&self) -> Result<QueueDepth, StoreError> {
        let (queued, leased, dead_lettered): (u64, u64, u64) = redis::pipe()
            .zcard(&self.keys[READY])
            .zcard(&self.keys[LEASED])
            .hlen(&self.keys[DEAD])
            .query_async(&mut self.connection())
            .await?;
        Ok(QueueDepth { queued, leased, dead_lettered })
    }

    async fn put_sweep(&self, sweep: &SweepRecord) -> Result<(), StoreError> {
        let text = serde_json::to_string(sweep)
            .map_err(|error| StoreError::Backend(format!("failed to encode sweep {}: {error}", sweep.id)))?;
        let () = self.connection().hset(&self.keys[SWEEPS], sweep.id.as_str(), text).await?;
        Ok(())
    }

    async fn sweep(&self, id: &SweepId) -> Result<Option<SweepRecord>, StoreError> {
        let text: Option<String> = self.connection().hget(&self.keys[SWEEPS], id.as_str()).await?;
        text.map(|text| decode(id.as_str(), &text)).transpose()
    }

    async fn sweeps(&self) -> Result<Vec<SweepRecord>, StoreError> {
        let texts: Vec<String> = self.connection().hvals(&self.keys[SWEEPS]).await?;
        let mut sweeps =
            texts.iter().map(|text| decode::<SweepRecord>("sweeps", text)).collect::<Result<Vec<_>, _>>()?;
        sweeps.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(sweeps)
    }
}
