//! `RedisJobStore`: jobs, queue and sweeps in Redis, for clusters.
//!
//! Every key of a queue shares one hash tag (`wf:{queue}:…`) so that the scripts also
//! run on Redis Cluster:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `jobs` | hash | job key → state (JSON of `JobState`); and the epoch marker: `~epoch`, `~instance` |
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
//!
//! The epoch marker lives in the jobs hash itself, so losing the hash loses the marker,
//! and names the server instance (its run id) that holds it. The lease script is called
//! by its SHA only: a restarted server has forgotten it (NOSCRIPT), and the store then
//! compares the run id before it grants anything (a restart may have rolled the AOF back
//! by up to a second, losing grants that workers still hold).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use wf_shared::job::{Applied, JobEvent, JobState, Phase, RetryPolicy, SweepId, UnixMs};
use wf_shared::plan::JobKey;

use super::{EpochCheck, JobRecord, JobStore, Lease, QueueDepth, Repaired, StoreError, SweepRecord};
use scripts::Scripts;

mod scripts;
mod writes;

/// Races a single transition may lose before giving up (each loss means another
/// writer moved the job; a handful is already unusual).
const MAX_RACES: usize = 16;
/// Ready jobs one read fetches for the lease calls that follow.
const LEASE_CANDIDATES: isize = 32;
/// Keys per enqueue script call.
const ENQUEUE_BATCH: usize = 500;

/// Jobs and sweeps of one queue in Redis.
pub struct RedisJobStore {
    connection: ConnectionManager,
    policy: RetryPolicy,
    keys: [String; 6],
    scripts: Scripts,
    /// Ready jobs read but not yet tried by a lease call, oldest first. Concurrent lease
    /// calls take different ones instead of racing for the oldest.
    candidates: tokio::sync::Mutex<VecDeque<Candidate>>,
    /// The epoch this store grants leases in (0: none yet).
    epoch: AtomicU64,
}

/// The marker's fields in the jobs hash.
const EPOCH_FIELD: &str = "~epoch";
const INSTANCE_FIELD: &str = "~instance";

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

/// How to reach a protected Redis, beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// The password (`AUTH`), when the URL carries none (`WF_REDIS_PASSWORD`).
    pub password: Option<String>,
    /// The CA (PEM) of a `rediss://` server's certificate, when not in the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// How long one command may wait for its answer before it fails; `None`:
    /// [`DEFAULT_RESPONSE_TIMEOUT`]. A connection whose sent data goes unacknowledged for
    /// [`dead_link`] of it is closed by the kernel and made again.
    pub response_timeout: Option<std::time::Duration>,
}

/// How long one Redis command waits for its answer by default: long enough for a Redis
/// half a second away (the network chaos scenario), short enough that a partition is
/// noticed within a few seconds. The client's own default, 500 ms, failed every command
/// at 500 ms of latency.
pub const DEFAULT_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long sent data may go unacknowledged before the kernel closes a Redis connection
/// (`TCP_USER_TIMEOUT`): three command timeouts, at least 10 s.
pub fn dead_link(response_timeout: std::time::Duration) -> std::time::Duration {
    (response_timeout * 3).max(std::time::Duration::from_secs(10))
}

/// `url` without its password, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

impl RedisJobStore {
    /// Connects to `url` (`redis://host:port/db` or `unix:///path`) and uses the queue
    /// named `queue`.
    pub async fn connect(url: &str, queue: &str, policy: RetryPolicy) -> Result<Self, StoreError> {
        Self::connect_with(url, queue, policy, &RedisOptions::default()).await
    }

    /// [`Self::connect`] with a password and a CA for `rediss://` (TLS, rustls).
    pub fn connect_with<'a>(
        url: &'a str,
        queue: &'a str,
        policy: RetryPolicy,
        options: &'a RedisOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, StoreError>> + Send + 'a>> {
        // Boxed: compiled once, here, not again in each crate that awaits it.
        Box::pin(Self::connecting(url, queue, policy, options))
    }

    async fn connecting(
        url: &str,
        queue: &str,
        policy: RetryPolicy,
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        use redis::IntoConnectionInfo as _;
        let mut info = url.into_connection_info()?;
        if info.redis_settings().password().is_none()
            && let Some(password) = &options.password
        {
            info = info.clone().set_redis_settings(info.redis_settings().clone().set_password(password));
        }
        let timeout = options.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        // A command's timeout alone keeps a connection whose path died without a word (a
        // partition, a host gone, a NAT entry dropped): the client makes a connection again
        // only on an I/O error. Keepalive probes and a user timeout make the kernel close
        // it, so the next command finds it broken and a new one is made.
        let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(5))
            .with_interval(std::time::Duration::from_secs(2))
            .with_retries(3);
        let tcp = redis::io::tcp::TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(keepalive)
            .set_user_timeout(dead_link(timeout));
        let info = info.set_tcp_settings(tcp);
        let client = match &options.ca {
            None => redis::Client::open(info)?,
            Some(path) => {
                if !url.starts_with("rediss://") {
                    return Err(StoreError::Backend(format!(
                        "--redis-ca is given but the Redis URL is not rediss:// (TLS): {}",
                        redacted_url(url)
                    )));
                }
                let pem = std::fs::read(path)
                    .map_err(|e| StoreError::Backend(format!("cannot read --redis-ca {}: {e}", path.display())))?;
                redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })?
            }
        };
        // One plain connection first: a wrong password, certificate or port fails at once
        // (the manager would retry for seconds), and a server that wants a password but got
        // none still accepts the connection and refuses every command (NOAUTH).
        let probe_config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout));
        let mut probe = client.get_multiplexed_async_connection_with_config(&probe_config).await?;
        let _: String = redis::cmd("PING").query_async(&mut probe).await?;
        drop(probe);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        let keys = ["jobs", "ready", "leased", "dead", "owner", "sweeps"].map(|name| format!("wf:{{{queue}}}:{name}"));
        Ok(Self {
            connection,
            policy,
            keys,
            scripts: Scripts::new(),
            candidates: Default::default(),
            epoch: AtomicU64::new(0),
        })
    }

    /// Loads the lease script, which is only ever called by its SHA.
    async fn load_lease_script(&self) -> Result<(), StoreError> {
        let _sha: String =
            redis::cmd("SCRIPT").arg("LOAD").arg(&self.scripts.lease_code).query_async(&mut self.connection()).await?;
        Ok(())
    }

    /// The server's run id: it changes on every restart.
    async fn run_id(&self) -> Result<String, StoreError> {
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut self.connection()).await?;
        info.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_string())
            .ok_or_else(|| StoreError::Backend("INFO server has no run_id".into()))
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

    async fn enqueue_limited(
        &self,
        sweep: &SweepId,
        keys: &[JobKey],
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        let mut added = 0;
        for batch in keys.chunks(ENQUEUE_BATCH) {
            let mut invocation = self.invocation(&self.scripts.enqueue);
            invocation.arg(now).arg(sweep.as_str());
            for key in batch {
                invocation.arg(key.to_string()).arg(encode(&JobState::new(now, key.salt()).with_max_ms(max_ms))?);
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

    async fn lease(
        &self,
        worker: &str,
        lease_ms: i64,
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<Option<Lease>, StoreError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if epoch == 0 {
            return Err(StoreError::EpochLost);
        }
        let event = JobEvent::Lease { worker: worker.to_string(), lease_ms, epoch, max_ms };
        for _ in 0..MAX_RACES * LEASE_CANDIDATES as usize {
            let Some(Candidate { key, state, sweep }) = self.next_candidate(now).await? else { return Ok(None) };
            let Ok(Applied::Changed(next)) = state.apply(&event, now, &self.policy) else { continue };
            if !self.write_grant(&key, &state, &next, epoch).await? {
                // Changed since it was read: so may the other kept candidates be.
                self.forget_candidates().await;
                continue;
            }
            let Phase::Leased { expires_at, .. } = next.phase else { continue };
            return Ok(Some(Lease { key, sweep, token: next.token(), expires_at }));
        }
        Ok(None)
    }

    async fn epoch_check(&self) -> Result<EpochCheck, StoreError> {
        let (epoch, instance): (Option<u64>, Option<String>) = redis::pipe()
            .hget(&self.keys[JOBS], EPOCH_FIELD)
            .hget(&self.keys[JOBS], INSTANCE_FIELD)
            .query_async(&mut self.connection())
            .await?;
        let run_id = self.run_id().await?;
        match (epoch, instance) {
            (Some(epoch), Some(instance)) if instance == run_id && epoch > 0 => {
                self.epoch.store(epoch, Ordering::SeqCst);
                Ok(EpochCheck::Current(epoch))
            }
            _ => Ok(EpochCheck::Lost),
        }
    }

    async fn start_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        let run_id = self.run_id().await?;
        self.load_lease_script().await?;
        let () = self
            .connection()
            .hset_multiple(&self.keys[JOBS], &[(EPOCH_FIELD, epoch.to_string()), (INSTANCE_FIELD, run_id)])
            .await?;
        self.epoch.store(epoch, Ordering::SeqCst);
        self.forget_candidates().await;
        Ok(())
    }

    async fn repair(&self, _now: UnixMs) -> Result<Repaired, StoreError> {
        // The count first, then the unowned keys; all as strings.
        let answer: Vec<String> = self
            .invocation(&self.scripts.repair)
            .invoke_async::<Vec<redis::Value>>(&mut self.connection())
            .await?
            .into_iter()
            .map(|value| match value {
                redis::Value::Int(n) => n.to_string(),
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        let mut repaired = Repaired::default();
        for (i, text) in answer.into_iter().enumerate() {
            if i == 0 {
                repaired.fixed = text.parse().map_err(|_| StoreError::Backend(format!("repair answered {text:?}")))?;
                continue;
            }
            let key = JobKey::try_from(text.clone())
                .map_err(|error| StoreError::Corrupt { key: text, reason: format!("{error}") })?;
            repaired.unowned.push(key);
        }
        if repaired.fixed > 0 {
            self.forget_candidates().await;
        }
        Ok(repaired)
    }

    async fn set_owner(&self, key: &JobKey, sweep: &SweepId) -> Result<(), StoreError> {
        let _: bool = self.connection().hset_nx(&self.keys[OWNER], key.to_string(), sweep.as_str()).await?;
        Ok(())
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

    async fn leased(&self) -> Result<Vec<JobKey>, StoreError> {
        let members: Vec<String> = self.connection().zrange(&self.keys[LEASED], 0, -1).await?;
        members
            .into_iter()
            .map(|text| {
                text.clone().try_into().map_err(|error| StoreError::Corrupt { key: text, reason: format!("{error}") })
            })
            .collect()
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
