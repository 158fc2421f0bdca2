//! The conformance suite every `JobStore` adapter must pass, driven by a manual clock
//! (explicit `now` values). Each check gets a fresh, empty store from the factory.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use wf_shared::job::{FailureKind, JobEvent, Phase, RetryPolicy, SweepId, Token, TransitionError};
use wf_shared::plan::JobKey;

use super::{JobStore, StoreError, SweepRecord};

/// The policy the suite runs under.
pub const POLICY: RetryPolicy =
    RetryPolicy { max_attempts: 3, max_expiries: 4, backoff_base_ms: 1_000, backoff_cap_ms: 4_000 };
const T0: i64 = 1_700_000_000_000;
const LEASE: i64 = 30_000;
/// The epoch every check's store starts in.
pub const EPOCH: u64 = 3;

/// Attempt `attempt`'s token in [`EPOCH`].
fn tok(attempt: u32) -> Token {
    Token { epoch: EPOCH, attempt }
}

/// A job key for tests: `n` as 64 hex digits.
pub fn key(n: u64) -> JobKey {
    JobKey::try_from(format!("{n:064x}")).unwrap_or_else(|_| unreachable!("64 hex digits are a valid key"))
}

fn sweep() -> SweepId {
    SweepId::from_entropy(1)
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

fn stale(result: Result<impl std::fmt::Debug, StoreError>) -> bool {
    matches!(result, Err(StoreError::Transition(TransitionError::Stale { .. })))
}

type Outcome = Result<(), String>;

/// Runs every check against fresh stores from `make`; returns the failures, named.
pub async fn run<F, Fut>(make: F) -> Vec<String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobStore>>,
{
    let mut failures = Vec::new();
    macro_rules! checks {
        ($($name:ident),* $(,)?) => {$(
            let store = make().await;
            let outcome = match store.start_epoch(EPOCH).await {
                Ok(()) => $name(store).await,
                Err(error) => Err(format!("cannot start epoch {EPOCH}: {error}")),
            };
            if let Err(error) = outcome {
                failures.push(format!("{}: {error}", stringify!($name)));
            }
        )*};
    }
    checks!(
        enqueue_is_idempotent_across_sweeps,
        leases_go_oldest_first_and_only_when_ready,
        heartbeats_extend_only_the_current_attempt,
        stale_report_is_rejected_and_changes_nothing,
        lease_expiry_requeues_job_with_next_attempt,
        leased_lists_the_jobs_leased_now,
        failures_back_off_then_dead_letter_after_max_attempts,
        permanent_failure_dead_letters_at_once,
        preemption_requeues_at_once_and_is_counted_apart,
        cancelled_jobs_are_never_leased,
        sweeps_are_stored_and_listed,
        concurrent_workers_never_share_a_job,
        apply_from_an_outdated_read_decides_again,
        resubmission_requeues_the_jobs_that_ended_but_not_the_live_ones,
        events_from_another_worker_are_refused,
        a_new_epoch_fences_old_tokens_but_keeps_live_leases,
        an_orphaned_lease_completes_a_queued_job,
        hung_jobs_fail_at_their_hard_deadline_despite_heartbeats,
        repair_finds_nothing_to_fix_in_a_consistent_store,
    );
    failures
}

async fn enqueue_is_idempotent_across_sweeps(store: Arc<dyn JobStore>) -> Outcome {
    let added = store.enqueue(&sweep(), &[key(1), key(2), key(3)], T0).await.map_err(|e| e.to_string())?;
    check(added == 3, || format!("first enqueue added {added}, expected 3"))?;
    let other = SweepId::from_entropy(2);
    let added = store.enqueue(&other, &[key(3), key(4)], T0).await.map_err(|e| e.to_string())?;
    check(added == 1, || format!("second enqueue added {added}, expected 1 (key 3 is known)"))?;
    let record = store.job(&key(3)).await.map_err(|e| e.to_string())?.ok_or("key 3 missing")?;
    check(record.sweep == sweep(), || format!("key 3 changed owner to {}", record.sweep))?;
    let depth = store.depth().await.map_err(|e| e.to_string())?;
    check(depth.queued == 4, || format!("queued {depth:?}, expected 4"))
}

async fn resubmission_requeues_the_jobs_that_ended_but_not_the_live_ones(store: Arc<dyn JobStore>) -> Outcome {
    let keys = [key(1), key(2), key(3), key(4), key(5)];
    store.enqueue(&sweep(), &keys, T0).await.map_err(|e| e.to_string())?;
    // key 1 succeeds (then its result is refused on reuse: the caller resubmits it), key 2
    // is dead-lettered, key 3 is cancelled, key 4 is leased, key 5 stays queued.
    for expected in [key(1), key(2)] {
        let lease = store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
        check(lease.key == expected, || format!("leased {:?}, expected {expected:?}", lease.key))?;
    }
    store.complete(&key(1), tok(1), "w", T0).await.map_err(|e| e.to_string())?;
    store.fail(&key(2), tok(1), "w", FailureKind::Permanent, "bad", T0).await.map_err(|e| e.to_string())?;
    store.cancel(&[key(3)], T0).await.map_err(|e| e.to_string())?;
    let live = store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    check(live.key == key(4), || format!("leased {:?}, expected key 4", live.key))?;
    let later = SweepId::from_entropy(9);
    let count = store.resubmit(&later, &keys, T0 + 1).await.map_err(|e| e.to_string())?;
    check(count == 3, || format!("resubmitted {count}, expected 3 (keys 1, 2 and 3)"))?;
    let depth = store.depth().await.map_err(|e| e.to_string())?;
    check(depth == super::QueueDepth { queued: 4, leased: 1, dead_lettered: 0 }, || format!("{depth:?}"))?;
    for (n, owner) in [(1, later.clone()), (2, later.clone()), (3, later.clone()), (4, sweep()), (5, sweep())] {
        let record = store.job(&key(n)).await.map_err(|e| e.to_string())?.ok_or("job missing")?;
        check(record.sweep == owner, || format!("key {n} is owned by {}, expected {owner}", record.sweep))?;
    }
    let dead = store.job(&key(2)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    check(dead.failures == 0 && dead.attempts_made == 1, || format!("resubmitted state {dead:?}"))?;
    // The old attempt stays stale; the next lease of key 2 is attempt 2.
    let late = store.complete(&key(2), tok(1), "w", T0 + 2).await;
    check(matches!(late, Err(StoreError::Transition(_))), || format!("the dead attempt's report: {late:?}"))?;
    let mut leased = Vec::new();
    while let Some(lease) = store.lease("w", LEASE, None, T0 + 2).await.map_err(|e| e.to_string())? {
        leased.push((lease.key, lease.token.attempt, lease.sweep));
    }
    leased.sort();
    let expected =
        vec![(key(1), 2, later.clone()), (key(2), 2, later.clone()), (key(3), 1, later), (key(5), 1, sweep())];
    // The lease of key 4 was left alone.
    check(leased == expected, || format!("leased {leased:?}, expected {expected:?}"))
}

async fn apply_from_an_outdated_read_decides_again(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1)], T0).await.map_err(|e| e.to_string())?;
    store.lease("w1", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let read = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    // The job moves after the read: attempt 1 expires and attempt 2 is leased.
    store.reap(T0 + LEASE).await.map_err(|e| e.to_string())?;
    let later = T0 + LEASE + POLICY.backoff_cap_ms;
    store.lease("w2", LEASE, None, later).await.map_err(|e| e.to_string())?.ok_or("no second lease")?;
    let late =
        store.apply_from(&key(1), &read, &JobEvent::Complete { token: tok(1), worker: "w1".into() }, later).await;
    check(stale(late), || "a completion decided on an outdated read was accepted".into())?;
    let current = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    let event = JobEvent::Complete { token: tok(2), worker: "w2".into() };
    let done = store.apply_from(&key(1), &current, &event, later).await.map_err(|e| e.to_string())?;
    check(matches!(done.phase, Phase::Succeeded { ref worker, .. } if worker == "w2"), || format!("{done:?}"))
}

async fn leases_go_oldest_first_and_only_when_ready(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(2)], T0).await.map_err(|e| e.to_string())?;
    store.enqueue(&sweep(), &[key(1)], T0 + 5).await.map_err(|e| e.to_string())?;
    let none = store.lease("w", LEASE, None, T0 - 1).await.map_err(|e| e.to_string())?;
    check(none.is_none(), || format!("leased before anything was ready: {none:?}"))?;
    let first = store.lease("w", LEASE, None, T0 + 10).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    check(first.key == key(2) && first.token == tok(1), || format!("first lease {first:?}, expected key 2 attempt 1"))?;
    check(first.expires_at == T0 + 10 + LEASE, || format!("deadline {}", first.expires_at))?;
    check(first.sweep == sweep(), || format!("sweep {}", first.sweep))?;
    let second = store.lease("w", LEASE, None, T0 + 10).await.map_err(|e| e.to_string())?.ok_or("no second lease")?;
    check(second.key == key(1), || format!("second lease {second:?}"))?;
    let third = store.lease("w", LEASE, None, T0 + 10).await.map_err(|e| e.to_string())?;
    check(third.is_none(), || format!("leased a job twice: {third:?}"))?;
    let depth = store.depth().await.map_err(|e| e.to_string())?;
    check(depth.leased == 2 && depth.queued == 0, || format!("{depth:?}"))
}

async fn heartbeats_extend_only_the_current_attempt(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1)], T0).await.map_err(|e| e.to_string())?;
    let lease = store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let state = store.heartbeat(&lease.key, tok(1), "w", LEASE, T0 + 20_000).await.map_err(|e| e.to_string())?;
    check(matches!(state.phase, Phase::Leased { expires_at, .. } if expires_at == T0 + 20_000 + LEASE), || {
        format!("heartbeat did not extend: {state:?}")
    })?;
    // The old deadline passes; the extended lease is not reaped.
    let reaped = store.reap(T0 + LEASE + 1).await.map_err(|e| e.to_string())?;
    check(reaped.is_empty(), || format!("reaped a live lease: {reaped:?}"))?;
    check(stale(store.heartbeat(&lease.key, tok(2), "w", LEASE, T0).await), || "heartbeat of attempt 2 accepted".into())
}

async fn stale_report_is_rejected_and_changes_nothing(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1)], T0).await.map_err(|e| e.to_string())?;
    store.lease("w1", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    // Attempt 1 goes silent, its lease expires, attempt 2 completes.
    store.reap(T0 + LEASE).await.map_err(|e| e.to_string())?;
    let later = T0 + LEASE + POLICY.backoff_cap_ms;
    let second = store.lease("w2", LEASE, None, later).await.map_err(|e| e.to_string())?.ok_or("no second lease")?;
    check(second.token == tok(2), || format!("second lease has token {}", second.token))?;
    store.complete(&key(1), tok(2), "w2", later).await.map_err(|e| e.to_string())?;
    let committed = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    check(stale(store.complete(&key(1), tok(1), "w1", later).await), || "a stale completion was accepted".into())?;
    check(stale(store.fail(&key(1), tok(1), "w1", FailureKind::Retryable, "late", later).await), || {
        "a stale failure was accepted".into()
    })?;
    let duplicate = store.complete(&key(1), tok(2), "w2", later + 1).await.map_err(|e| e.to_string())?;
    check(duplicate == committed, || "a duplicate completion changed the state".into())?;
    let after = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    check(after == committed, || format!("state changed from {committed:?} to {after:?}"))?;
    check(matches!(after.phase, Phase::Succeeded { ref worker, .. } if worker == "w2"), || format!("{after:?}"))
}

async fn leased_lists_the_jobs_leased_now(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(21), key(22), key(23)], T0).await.map_err(|e| e.to_string())?;
    let none = store.leased().await.map_err(|e| e.to_string())?;
    check(none.is_empty(), || format!("leased before any lease: {none:?}"))?;
    let first = store.lease("w1", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let second = store.lease("w2", LEASE, None, T0 + 1).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let leased = store.leased().await.map_err(|e| e.to_string())?;
    check(leased == vec![first.key, second.key], || format!("leased {leased:?}, in deadline order"))?;
    store.complete(&first.key, first.token, "w1", T0 + 2).await.map_err(|e| e.to_string())?;
    let left = store.leased().await.map_err(|e| e.to_string())?;
    check(left == vec![second.key], || format!("leased after a commit: {left:?}"))
}

async fn lease_expiry_requeues_job_with_next_attempt(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(7)], T0).await.map_err(|e| e.to_string())?;
    store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let early = store.reap(T0 + LEASE - 1).await.map_err(|e| e.to_string())?;
    check(early.is_empty(), || format!("reaped before the deadline: {early:?}"))?;
    let reaped = store.reap(T0 + LEASE).await.map_err(|e| e.to_string())?;
    check(reaped == vec![key(7)], || format!("reaped {reaped:?}"))?;
    let state = store.job(&key(7)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    let Phase::Queued { not_before } = state.phase else { return Err(format!("not requeued: {state:?}")) };
    check(state.expiries == 1 && state.failures == 0, || {
        format!("expiries {}, failures {}", state.expiries, state.failures)
    })?;
    let too_soon = store.lease("w", LEASE, None, not_before - 1).await.map_err(|e| e.to_string())?;
    check(too_soon.is_none(), || "leased during the retry backoff".into())?;
    let again = store.lease("w2", LEASE, None, not_before).await.map_err(|e| e.to_string())?.ok_or("not re-leased")?;
    check(again.token == tok(2), || format!("re-leased with token {}", again.token))
}

async fn failures_back_off_then_dead_letter_after_max_attempts(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1), key(2)], T0).await.map_err(|e| e.to_string())?;
    let mut now = T0;
    for attempt in 1..=POLICY.max_attempts {
        let lease = loop {
            let lease = store.lease("w", LEASE, None, now).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
            if lease.key == key(1) {
                break lease;
            }
            store.complete(&lease.key, lease.token, "w", now).await.map_err(|e| e.to_string())?;
        };
        check(lease.token == tok(attempt), || format!("token {} instead of attempt {attempt}", lease.token))?;
        let state = store
            .fail(&key(1), tok(attempt), "w", FailureKind::Retryable, "always fails", now)
            .await
            .map_err(|e| e.to_string())?;
        match state.phase {
            Phase::Queued { not_before } if attempt < POLICY.max_attempts => now = not_before,
            Phase::DeadLettered if attempt == POLICY.max_attempts => {}
            phase => return Err(format!("after failure {attempt}: {phase:?}")),
        }
    }
    let record = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?;
    check(record.state.last_error.as_deref() == Some("always fails"), || format!("{:?}", record.state.last_error))?;
    check(store.lease("w", LEASE, None, now + 1_000_000).await.map_err(|e| e.to_string())?.is_none(), || {
        "a dead-lettered job was leased".into()
    })?;
    let depth = store.depth().await.map_err(|e| e.to_string())?;
    check(depth.dead_lettered == 1 && depth.queued == 0 && depth.leased == 0, || format!("{depth:?}"))
}

async fn permanent_failure_dead_letters_at_once(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1)], T0).await.map_err(|e| e.to_string())?;
    store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let state =
        store.fail(&key(1), tok(1), "w", FailureKind::Permanent, "bad spec", T0).await.map_err(|e| e.to_string())?;
    check(state.phase == Phase::DeadLettered && state.failures == 1, || format!("{state:?}"))
}

async fn preemption_requeues_at_once_and_is_counted_apart(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1)], T0).await.map_err(|e| e.to_string())?;
    for attempt in 1..=POLICY.max_attempts + 1 {
        let lease = store
            .lease("w", LEASE, None, T0)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not leasable after preemption")?;
        check(lease.token == tok(attempt), || format!("token {}", lease.token))?;
        store
            .fail(&key(1), tok(attempt), "w", FailureKind::Preempted, "SIGTERM", T0)
            .await
            .map_err(|e| e.to_string())?;
    }
    let state = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    check(state.preemptions == POLICY.max_attempts + 1 && state.failures == 0, || format!("{state:?}"))
}

async fn cancelled_jobs_are_never_leased(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1), key(2), key(3)], T0).await.map_err(|e| e.to_string())?;
    let busy = store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    store.complete(&busy.key, tok(1), "w", T0).await.map_err(|e| e.to_string())?;
    let running = store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let cancelled = store.cancel(&[key(1), key(2), key(3)], T0).await.map_err(|e| e.to_string())?;
    check(cancelled == 2, || format!("cancelled {cancelled}, expected the running and the queued job"))?;
    check(store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.is_none(), || {
        "leased a cancelled job".into()
    })?;
    let beat = store.heartbeat(&running.key, running.token, "w", LEASE, T0).await;
    check(matches!(beat, Err(StoreError::Transition(TransitionError::Illegal { .. }))), || {
        format!("heartbeat on a cancelled job: {beat:?}")
    })?;
    let finished = store.job(&busy.key).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    check(matches!(finished.phase, Phase::Succeeded { .. }), || "cancel touched a finished job".into())?;
    let depth = store.depth().await.map_err(|e| e.to_string())?;
    check(depth.queued == 0 && depth.leased == 0, || format!("{depth:?}"))
}

async fn sweeps_are_stored_and_listed(store: Arc<dyn JobStore>) -> Outcome {
    let record = SweepRecord {
        id: SweepId::from_entropy(5),
        name: "s".into(),
        spec_toml: "name = \"s\"".into(),
        dataset: wf_shared::DatasetRef {
            uri: "synth:default".into(),
            content_hash: wf_shared::DatasetHash::from_bytes([3; 32]),
        },
        jobs: vec![key(1), key(2)],
        precomputed: vec![key(2)],
        jobs_before_dedup: 3,
        submitted_at: T0,
        cancelled: false,
        max_job_ms: None,
        tenant: "t".into(),
        // A retrain's line round-trips too.
        training: Some(wf_shared::plan::TrainingLine {
            model: 1,
            seed: 7,
            window: 126,
            retrain: chrono::NaiveDate::from_ymd_opt(2024, 7, 1).expect("date"),
        }),
    };
    store.put_sweep(&record).await.map_err(|e| e.to_string())?;
    let cancelled = SweepRecord { id: SweepId::from_entropy(6), cancelled: true, ..record.clone() };
    store.put_sweep(&cancelled).await.map_err(|e| e.to_string())?;
    let read = store.sweep(&record.id).await.map_err(|e| e.to_string())?;
    check(read.as_ref() == Some(&record), || format!("read back {read:?}"))?;
    let all = store.sweeps().await.map_err(|e| e.to_string())?;
    let ids: BTreeSet<_> = all.iter().map(|s| s.id.clone()).collect();
    check(ids == BTreeSet::from([record.id.clone(), cancelled.id.clone()]), || format!("listed {ids:?}"))?;
    let missing = store.sweep(&SweepId::from_entropy(7)).await.map_err(|e| e.to_string())?;
    check(missing.is_none(), || "found a sweep never stored".into())
}

async fn concurrent_workers_never_share_a_job(store: Arc<dyn JobStore>) -> Outcome {
    let keys: Vec<JobKey> = (0..200).map(key).collect();
    store.enqueue(&sweep(), &keys, T0).await.map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(lease) =
                store.lease(&format!("w{worker}"), LEASE, None, T0).await.map_err(|e| e.to_string())?
            {
                store.complete(&lease.key, lease.token, &format!("w{worker}"), T0).await.map_err(|e| e.to_string())?;
                mine.push(lease.key);
            }
            Ok::<_, String>(mine)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.map_err(|e| e.to_string())??);
    }
    let distinct: BTreeSet<_> = all.iter().collect();
    check(all.len() == 200 && distinct.len() == 200, || {
        format!("{} leases of {} distinct jobs", all.len(), distinct.len())
    })?;
    Ok(())
}

async fn events_from_another_worker_are_refused(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1)], T0).await.map_err(|e| e.to_string())?;
    let lease = store.lease("w1", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let not_holder = |result: Result<_, StoreError>| {
        matches!(result, Err(StoreError::Transition(TransitionError::NotHolder { .. })))
    };
    check(not_holder(store.heartbeat(&lease.key, lease.token, "w2", LEASE, T0).await), || {
        "another worker's heartbeat was accepted".into()
    })?;
    check(not_holder(store.complete(&lease.key, lease.token, "w2", T0).await), || {
        "another worker's result was accepted".into()
    })?;
    check(not_holder(store.fail(&lease.key, lease.token, "w2", FailureKind::Permanent, "x", T0).await), || {
        "another worker's failure was accepted".into()
    })?;
    let state = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    check(matches!(&state.phase, Phase::Leased { worker, .. } if worker == "w1"), || format!("{state:?}"))?;
    let done = store.complete(&lease.key, lease.token, "w1", T0).await.map_err(|e| e.to_string())?;
    check(matches!(done.phase, Phase::Succeeded { .. }), || format!("{done:?}"))
}

async fn a_new_epoch_fences_old_tokens_but_keeps_live_leases(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1), key(2)], T0).await.map_err(|e| e.to_string())?;
    let old = store.lease("w1", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    check(old.token == tok(1), || format!("first token {}", old.token))?;
    store.start_epoch(EPOCH + 1).await.map_err(|e| e.to_string())?;
    let check_epoch = store.epoch_check().await.map_err(|e| e.to_string())?;
    check(check_epoch == super::EpochCheck::Current(EPOCH + 1), || format!("{check_epoch:?}"))?;
    // A lease of the old epoch that the store still records stays valid: no work burnt.
    store.heartbeat(&old.key, old.token, "w1", LEASE, T0 + 1).await.map_err(|e| e.to_string())?;
    let new = store.lease("w2", LEASE, None, T0 + 1).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    check(new.token == Token { epoch: EPOCH + 1, attempt: 1 }, || format!("new token {}", new.token))?;
    // The old epoch's attempt 1 of that job never existed: refused.
    let forged = store.complete(&new.key, tok(1), "w2", T0 + 1).await;
    check(stale(forged), || "a token of the old epoch completed a job leased in the new one".into())
}

async fn an_orphaned_lease_completes_a_queued_job(store: Arc<dyn JobStore>) -> Outcome {
    // As after a loss: the job is queued afresh, but a worker holds attempt 2 of it.
    store.enqueue(&sweep(), &[key(1), key(2)], T0).await.map_err(|e| e.to_string())?;
    let done = store.complete(&key(1), tok(2), "w9", T0).await.map_err(|e| e.to_string())?;
    check(
        matches!(done.phase, Phase::Succeeded { ref worker, .. } if worker == "w9") && done.token() == tok(2),
        || format!("{done:?}"),
    )?;
    // Another orphan takes its lease back by a heartbeat, and the next lease is newer.
    let back = store.heartbeat(&key(2), tok(4), "w8", LEASE, T0).await.map_err(|e| e.to_string())?;
    check(back.current_token() == Some(tok(4)), || format!("{back:?}"))?;
    let depth = store.depth().await.map_err(|e| e.to_string())?;
    check(depth.queued == 0 && depth.leased == 1, || format!("{depth:?}"))?;
    let reaped = store.reap(T0 + LEASE).await.map_err(|e| e.to_string())?;
    check(reaped == vec![key(2)], || format!("reaped {reaped:?}"))?;
    let again = store.lease("w1", LEASE, None, T0 + LEASE + 60_000).await.map_err(|e| e.to_string())?;
    let again = again.ok_or("the job was not leased again")?;
    check(again.token == tok(5), || format!("next token {}", again.token))
}

async fn hung_jobs_fail_at_their_hard_deadline_despite_heartbeats(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1)], T0).await.map_err(|e| e.to_string())?;
    let max = 3 * LEASE;
    let lease = store.lease("w", LEASE, Some(max), T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let mut now = T0;
    while now + LEASE / 2 < T0 + max {
        now += LEASE / 2;
        store.heartbeat(&lease.key, lease.token, "w", LEASE, now).await.map_err(|e| e.to_string())?;
        let reaped = store.reap(now).await.map_err(|e| e.to_string())?;
        check(reaped.is_empty(), || format!("reaped a live, young lease at +{}", now - T0))?;
    }
    let reaped = store.reap(T0 + max).await.map_err(|e| e.to_string())?;
    check(reaped == vec![key(1)], || format!("the hung job was not reaped: {reaped:?}"))?;
    let state = store.job(&key(1)).await.map_err(|e| e.to_string())?.ok_or("job missing")?.state;
    check(state.failures == 1 && state.expiries == 0, || format!("a hung job is a failure: {state:?}"))?;
    check(state.last_error.as_deref().is_some_and(|e| e.contains(wf_shared::job::HUNG)), || format!("{state:?}"))
}

async fn repair_finds_nothing_to_fix_in_a_consistent_store(store: Arc<dyn JobStore>) -> Outcome {
    store.enqueue(&sweep(), &[key(1), key(2), key(3), key(4)], T0).await.map_err(|e| e.to_string())?;
    let a = store.lease("w", LEASE, Some(LEASE * 2), T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let b = store.lease("w", LEASE, None, T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    store.complete(&a.key, a.token, "w", T0).await.map_err(|e| e.to_string())?;
    store.fail(&b.key, b.token, "w", FailureKind::Permanent, "bad", T0).await.map_err(|e| e.to_string())?;
    store.lease("w", LEASE, Some(LEASE / 2), T0).await.map_err(|e| e.to_string())?.ok_or("no lease")?;
    let repaired = store.repair(T0).await.map_err(|e| e.to_string())?;
    check(repaired == super::Repaired::default(), || format!("repaired a consistent store: {repaired:?}"))?;
    let depth = store.depth().await.map_err(|e| e.to_string())?;
    check(depth == super::QueueDepth { queued: 1, leased: 1, dead_lettered: 1 }, || format!("{depth:?}"))
}
