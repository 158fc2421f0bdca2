//! A model-based check of the scheduler over both job stores (in memory, and a real
//! `redis-server`): several workers lease, heartbeat, report, fail, repeat reports and
//! report with stale leases in a random order, while the clock jumps past leases and,
//! on Redis, the store loses everything (FLUSHALL, then a reconciliation). After every
//! step it checks:
//! - no (job, token) is ever granted twice, and a job's tokens only grow;
//! - a job is committed at most once, and its committed bytes (marked with the token
//!   that reported them) are those of the job's latest grant, the lease holder; after a
//!   loss, those of a lease the store lost (an orphan) that no later grant superseded
//!   in the store's eyes: the store cannot know which of two lost leases was later;
//! - a committed result never changes, and a succeeded job never leaves that state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wf_proto::stored::Stored;
use wf_shared::job::{FailureKind, Phase, RetryPolicy, SweepId, Token};
use wf_shared::plan::JobKey;

use super::tests::ManualClock;
use super::*;
use crate::store::{MemoryJobStore, RedisJobStore};
use crate::testing::RedisServer;

const JOBS: usize = 6;
const WORKERS: usize = 3;
const STEPS: usize = 250;
const LEASE_MS: i64 = 1_000;
const POLICY: RetryPolicy = RetryPolicy { max_attempts: 4, max_expiries: 8, backoff_base_ms: 10, backoff_cap_ms: 40 };

/// The identity of job `n` (its key is the identity's hash, as the scheduler checks).
fn identity(n: usize) -> String {
    format!("{{\"model-check-job\":{n}}}")
}

/// A result whose training seconds mark the token that reported it.
fn result(n: usize, token: Token) -> v1::JobResult {
    let mut result = v1::JobResult { identity: identity(n), ..crate::testing::noop_result() };
    if let Some(training) = result.training.as_mut() {
        training.seconds = token.epoch as f64 * 1_000.0 + f64::from(token.attempt);
    }
    result
}

/// The token a committed result file was reported with.
fn committed_token(bytes: &[u8]) -> f64 {
    let stored = Stored::read(bytes).expect("a committed result reads back");
    stored.into_result().expect("sealed").training.expect("training").seconds
}

/// What a worker of the model holds: the job index, its key, the token.
type Held = (usize, JobKey, Token);

/// A scheduler on `store` with a manual clock, and a sweep of [`JOBS`] jobs queued
/// (its record also in the artifact store, for reconciliations).
struct Setup {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    scheduler: Arc<Scheduler>,
    keys: Vec<JobKey>,
}

async fn setup(store: &Arc<dyn JobStore>, seed: u64) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let artifacts = ArtifactStore::open(&dir.path().display().to_string()).expect("artifacts");
    let config = SchedulerConfig {
        lease_ms: LEASE_MS,
        poll_ms: 10,
        data_roots: wf_data::dataset::DataRoots::Any,
        reconcile_every: None,
        job_limit: JobLimit::Unlimited,
        ..SchedulerConfig::default()
    };
    let scheduler = Arc::new(Scheduler::new(store.clone(), artifacts.clone(), clock.clone(), config));
    let keys: Vec<JobKey> = (0..JOBS).map(|n| JobKey::of_identity(&identity(n))).collect();
    let sweep = SweepRecord {
        id: SweepId::from_entropy(seed),
        name: "model".into(),
        spec_toml: String::new(),
        dataset: wf_shared::DatasetRef {
            uri: "synth:model".into(),
            content_hash: wf_shared::DatasetHash::from_bytes([1; 32]),
        },
        jobs: keys.clone(),
        precomputed: Vec::new(),
        jobs_before_dedup: JOBS as u64,
        submitted_at: 0,
        cancelled: false,
        max_job_ms: None,
        tenant: "t".into(),
        training: None,
    };
    let record = serde_json::to_vec(&sweep).expect("record");
    artifacts.put_sweep_file(&sweep.id, "sweep.json", Bytes::from(record)).await.expect("sweep file");
    store.put_sweep(&sweep).await.expect("sweep");
    store.enqueue(&sweep.id, &keys, clock.now_ms()).await.expect("enqueue");
    Setup { dir, clock, scheduler, keys }
}

/// Runs one random history of `seed` over `store`; `flush` empties the store (None: a
/// store that cannot lose data).
async fn history(store: Arc<dyn JobStore>, flush: Option<&(dyn Fn() + Sync)>, seed: u64) {
    let Setup { dir, clock, scheduler, keys } = setup(&store, seed).await;
    let index: BTreeMap<JobKey, usize> = keys.iter().enumerate().map(|(n, key)| (*key, n)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let workers: Vec<String> = (0..WORKERS).map(|w| format!("w{w}")).collect();
    let mut holding: Vec<Option<Held>> = vec![None; WORKERS];
    let mut past: Vec<Vec<Held>> = vec![Vec::new(); WORKERS];
    let mut granted: BTreeSet<(JobKey, Token)> = BTreeSet::new();
    // Losses so far, and for each grant the losses before it: a grant made before the
    // latest loss may come back as an orphan.
    let mut losses = 0usize;
    let mut generation: BTreeMap<(JobKey, Token), usize> = BTreeMap::new();
    let mut latest: BTreeMap<JobKey, Token> = BTreeMap::new();
    let mut committed: BTreeMap<JobKey, (Token, Vec<u8>)> = BTreeMap::new();
    let mut succeeded: BTreeSet<JobKey> = BTreeSet::new();
    let context = |step: usize, what: &str| format!("seed {seed}, step {step}: {what}");

    for step in 0..STEPS {
        let w = rng.random_range(0..WORKERS);
        let worker = workers[w].as_str();
        match (rng.random_range(0..100), holding[w]) {
            (0..30, None) => {
                if let Some(lease) = scheduler.lease(worker, Duration::ZERO).await.expect("lease") {
                    let (key, token) = (lease.lease.key, lease.lease.token);
                    assert!(granted.insert((key, token)), "{}", context(step, &format!("{token} granted twice")));
                    if let Some(previous) = latest.get(&key) {
                        assert!(token > *previous, "{}", context(step, &format!("{token} after {previous}")));
                    }
                    latest.insert(key, token);
                    generation.insert((key, token), losses);
                    holding[w] = Some((index[&key], key, token));
                }
            }
            (0..30, Some(_)) | (30..45, Some(_)) => {
                let Some((n, key, token)) = holding[w] else { continue };
                let reported = scheduler.report_result(&key, token, worker, result(n, token)).await;
                if reported.is_ok() {
                    let bytes = std::fs::read(dir.path().join(format!("results/{key}.pb"))).expect("published");
                    let orphan = generation.get(&(key, token)).is_some_and(|g| *g < losses);
                    assert!(
                        orphan || latest.get(&key) == Some(&token),
                        "{}",
                        context(step, "a result of a superseded lease")
                    );
                    assert_eq!(committed_token(&bytes), token.epoch as f64 * 1_000.0 + f64::from(token.attempt));
                    if let Some((first, first_bytes)) = committed.get(&key) {
                        assert_eq!((first, first_bytes), (&token, &bytes), "{}", context(step, "committed twice"));
                    }
                    committed.insert(key, (token, bytes));
                }
                past[w].push((n, key, token));
                holding[w] = None;
            }
            (45..60, Some((_, key, token))) if scheduler.heartbeat(&key, token, worker).await.is_err() => {
                past[w].push(holding[w].take().expect("held"));
            }
            (60..68, Some((_, key, token))) => {
                let kind = if rng.random_range(0..4) == 0 { FailureKind::Preempted } else { FailureKind::Retryable };
                let _ = scheduler.report_failure(&key, token, worker, kind, "model failure").await;
                past[w].push(holding[w].take().expect("held"));
            }
            (68..78, _) if !past[w].is_empty() => {
                // A late or repeated report of a lease this worker held before.
                let (n, key, token) = past[w][rng.random_range(0..past[w].len())];
                let before = std::fs::read(dir.path().join(format!("results/{key}.pb"))).ok();
                let reported = scheduler.report_result(&key, token, worker, result(n, token)).await;
                let after = std::fs::read(dir.path().join(format!("results/{key}.pb"))).ok();
                if reported.is_ok() && before.is_none() {
                    // An orphan of a loss, or a republication: the latest grant only.
                    let orphan = generation.get(&(key, token)).is_some_and(|g| *g < losses);
                    assert!(
                        orphan || latest.get(&key) == Some(&token),
                        "{}",
                        context(step, "a stale report published")
                    );
                    let bytes = after.clone().expect("published");
                    if let Some((first, _)) = committed.get(&key) {
                        assert_eq!(first, &token, "{}", context(step, "another attempt republished"));
                    }
                    committed.insert(key, (token, bytes));
                } else {
                    assert_eq!(before, after, "{}", context(step, "a repeated or stale report changed a result"));
                }
            }
            (78..90, _) => {
                clock.0.fetch_add(rng.random_range(100..2 * LEASE_MS), Ordering::SeqCst);
                scheduler.reap_once().await.expect("reap");
            }
            (90..93, _) if flush.is_some() => {
                if let Some(flush) = flush {
                    flush();
                    losses += 1;
                }
                scheduler.reconcile().await.expect("reconcile");
            }
            _ => {}
        }
        // Terminal stays terminal; committed bytes never change.
        for (key, state) in keys.iter().zip(store.states(&keys).await.expect("states")) {
            match state.map(|s| s.phase) {
                Some(Phase::Succeeded { .. }) => {
                    succeeded.insert(*key);
                }
                Some(phase) => {
                    assert!(
                        !succeeded.contains(key),
                        "{}",
                        context(step, &format!("a succeeded job became {}", phase.name()))
                    );
                }
                None => {}
            }
        }
        for (key, (_, bytes)) in &committed {
            let now = std::fs::read(dir.path().join(format!("results/{key}.pb"))).expect("a committed result");
            assert_eq!(&now, bytes, "{}", context(step, "a committed result changed"));
        }
    }
    assert!(!committed.is_empty(), "seed {seed}: nothing was ever committed; the history tests nothing");
}

#[tokio::test]
async fn random_histories_over_the_memory_store_keep_the_fencing_invariants() {
    for seed in 0..24 {
        history(Arc::new(MemoryJobStore::new(POLICY)), None, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_histories_over_redis_with_data_loss_keep_the_fencing_invariants() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let flush = || {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut connection = client.get_connection().expect("connection");
        let () = redis::cmd("FLUSHALL").query(&mut connection).expect("FLUSHALL");
    };
    for seed in 0..12 {
        let store = RedisJobStore::connect(&url, &format!("model-{seed}"), POLICY).await.expect("connect");
        history(Arc::new(store), Some(&flush), seed).await;
    }
}

/// Workers truly concurrent (tasks on a multi-threaded runtime) over one scheduler, with
/// expiries, failures, repeated and stale reports. At the end: no token was granted
/// twice, and every committed result is the one of its job's last grant (once a job is
/// committed nothing more is granted, and only the holder of the latest grant can commit).
async fn concurrent_history(store: Arc<dyn JobStore>, seed: u64) {
    let Setup { dir, clock, scheduler, keys } = setup(&store, seed).await;
    let grants = Arc::new(std::sync::Mutex::new(Vec::<(JobKey, Token)>::new()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (scheduler, clock, grants, keys) = (scheduler.clone(), clock.clone(), grants.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed * 31 + w);
            let worker = format!("w{w}");
            let mut held: Option<(usize, JobKey, Token)> = None;
            let mut past = Vec::new();
            for _ in 0..150 {
                match (rng.random_range(0..100), held) {
                    (0..40, None) => {
                        if let Some(lease) = scheduler.lease(&worker, Duration::ZERO).await.expect("lease") {
                            let n = keys.iter().position(|k| *k == lease.lease.key).expect("a known job");
                            lock(&grants).push((lease.lease.key, lease.lease.token));
                            held = Some((n, lease.lease.key, lease.lease.token));
                        }
                    }
                    (0..55, Some((n, key, token))) => {
                        let _ = scheduler.report_result(&key, token, &worker, result(n, token)).await;
                        past.push((n, key, token));
                        held = None;
                    }
                    (55..70, Some((_, key, token))) => {
                        if scheduler.heartbeat(&key, token, &worker).await.is_err() {
                            held = None;
                        }
                    }
                    (70..75, Some((_, key, token))) => {
                        let _ = scheduler.report_failure(&key, token, &worker, FailureKind::Retryable, "x").await;
                        held = None;
                    }
                    (75..85, _) if !past.is_empty() => {
                        let (n, key, token) = past[rng.random_range(0..past.len())];
                        let _ = scheduler.report_result(&key, token, &worker, result(n, token)).await;
                    }
                    (85..95, _) => {
                        clock.0.fetch_add(rng.random_range(100..2 * LEASE_MS), Ordering::SeqCst);
                        scheduler.reap_once().await.expect("reap");
                    }
                    _ => tokio::task::yield_now().await,
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a worker task");
    }
    let grants = lock(&grants).clone();
    let distinct: BTreeSet<_> = grants.iter().collect();
    assert_eq!(distinct.len(), grants.len(), "seed {seed}: a token was granted twice: {grants:?}");
    let mut committed = 0;
    for key in &keys {
        let Ok(bytes) = std::fs::read(dir.path().join(format!("results/{key}.pb"))) else { continue };
        let last = grants.iter().filter(|(k, _)| k == key).map(|(_, t)| *t).max().expect("a committed job was granted");
        assert_eq!(committed_token(&bytes), last.epoch as f64 * 1_000.0 + f64::from(last.attempt), "seed {seed}");
        committed += 1;
    }
    assert!(committed > 0, "seed {seed}: nothing was committed; the history tests nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_over_both_stores_commit_only_the_last_grant() {
    let server = RedisServer::start().expect("redis-server");
    for seed in 0..8 {
        concurrent_history(Arc::new(MemoryJobStore::new(POLICY)), seed).await;
        let store =
            RedisJobStore::connect(&server.url(), &format!("concurrent-{seed}"), POLICY).await.expect("connect");
        concurrent_history(Arc::new(store), seed).await;
    }
}
