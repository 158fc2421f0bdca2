use proptest::prelude::*;

use super::*;

const POLICY: RetryPolicy =
    RetryPolicy { max_attempts: 3, max_expiries: 4, backoff_base_ms: 1_000, backoff_cap_ms: 8_000 };
const NOW: UnixMs = 100_000;
/// The epoch of the table's states.
const EPOCH: u64 = 7;

fn token(attempt: u32) -> Token {
    Token { epoch: EPOCH, attempt }
}

fn state(phase: Phase, attempts_made: u32) -> JobState {
    JobState {
        phase,
        attempts_made,
        epoch: EPOCH,
        failures: 0,
        expiries: 0,
        preemptions: 0,
        last_error: None,
        salt: 42,
        max_ms: None,
    }
}

fn changed(result: Result<Applied, TransitionError>) -> JobState {
    match result {
        Ok(Applied::Changed(next)) => next,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn leased(attempt: u32, expires_at: UnixMs) -> JobState {
    state(Phase::Leased { worker: "w1".into(), expires_at, deadline: None }, attempt)
}

fn lease(worker: &str, lease_ms: i64) -> JobEvent {
    JobEvent::Lease { worker: worker.into(), lease_ms, epoch: EPOCH, max_ms: None }
}

fn fail(attempt: u32, kind: FailureKind) -> JobEvent {
    JobEvent::Fail { token: token(attempt), worker: "w1".into(), kind, error: "boom".into() }
}

fn beat(attempt: u32) -> JobEvent {
    JobEvent::Heartbeat { token: token(attempt), worker: "w1".into(), lease_ms: 30 }
}

fn complete(attempt: u32) -> JobEvent {
    JobEvent::Complete { token: token(attempt), worker: "w1".into() }
}

/// What the table expects of an event.
#[derive(Debug, PartialEq)]
enum Expect {
    To(&'static str),
    Unchanged,
    Stale,
    NotHolder,
    Illegal,
}

fn outcome(result: Result<Applied, TransitionError>) -> Expect {
    match result {
        Ok(Applied::Changed(next)) => Expect::To(next.phase.name()),
        Ok(Applied::Unchanged) => Expect::Unchanged,
        Err(TransitionError::Stale { .. }) => Expect::Stale,
        Err(TransitionError::NotHolder { .. }) => Expect::NotHolder,
        Err(TransitionError::Illegal { .. }) => Expect::Illegal,
    }
}

#[test]
fn every_state_event_pair_has_the_documented_outcome() {
    use Expect::*;
    let queued = state(Phase::Queued { not_before: NOW }, 1);
    let backing_off = state(Phase::Queued { not_before: NOW + 1 }, 1);
    let live = leased(2, NOW + 10);
    let expired = leased(2, NOW);
    let succeeded = state(Phase::Succeeded { worker: "w1".into(), at: NOW }, 2);
    let dead = state(Phase::DeadLettered, 2);
    let cancelled = state(Phase::Cancelled, 2);
    let hung = state(Phase::Leased { worker: "w1".into(), expires_at: NOW + 10, deadline: Some(NOW) }, 2);
    let lease = lease("w2", 30);
    let older_epoch = JobEvent::Lease { worker: "w2".into(), lease_ms: 30, epoch: EPOCH - 1, max_ms: None };
    let intruder = |event: JobEvent| match event {
        JobEvent::Heartbeat { token, lease_ms, .. } => JobEvent::Heartbeat { token, worker: "w9".into(), lease_ms },
        JobEvent::Complete { token, .. } => JobEvent::Complete { token, worker: "w9".into() },
        JobEvent::Fail { token, kind, error, .. } => JobEvent::Fail { token, worker: "w9".into(), kind, error },
        other => other,
    };
    let previous_epoch = |event: JobEvent| match event {
        JobEvent::Heartbeat { token, worker, lease_ms } => {
            JobEvent::Heartbeat { token: Token { epoch: EPOCH - 1, ..token }, worker, lease_ms }
        }
        JobEvent::Complete { token, worker } => {
            JobEvent::Complete { token: Token { epoch: EPOCH - 1, ..token }, worker }
        }
        other => other,
    };

    #[rustfmt::skip]
    let table: Vec<(&str, &JobState, JobEvent, Expect)> = vec![
        ("queued",      &queued,      lease.clone(),                      To("leased")),
        ("queued",      &queued,      older_epoch,                        Illegal),
        ("backing off", &backing_off, lease.clone(),                      Illegal),
        ("queued",      &queued,      beat(1),                            Illegal),
        ("queued",      &queued,      beat(0),                            Stale),
        ("queued",      &queued,      complete(1),                        Illegal),
        ("queued",      &queued,      fail(1, FailureKind::Retryable),    Illegal),
        // Orphans: leases newer than any the (rolled back) state handed out.
        ("queued",      &queued,      beat(2),                            To("leased")),
        ("queued",      &queued,      complete(2),                        To("succeeded")),
        ("queued",      &queued,      fail(2, FailureKind::Permanent),    Unchanged),
        ("queued",      &queued,      previous_epoch(complete(2)),        Stale),
        ("queued",      &queued,      JobEvent::Expire,                   Illegal),
        ("queued",      &queued,      JobEvent::Cancel,                   To("cancelled")),
        ("queued",      &queued,      JobEvent::Resubmit,                 Illegal),
        ("leased",      &live,        lease.clone(),                      Illegal),
        ("leased",      &live,        beat(2),                            To("leased")),
        ("leased",      &live,        beat(1),                            Stale),
        ("leased",      &live,        beat(3),                            Stale),
        ("leased",      &live,        complete(2),                        To("succeeded")),
        ("leased",      &live,        complete(1),                        Stale),
        ("leased",      &live,        fail(2, FailureKind::Retryable),    To("queued")),
        ("leased",      &live,        fail(2, FailureKind::Preempted),    To("queued")),
        ("leased",      &live,        fail(2, FailureKind::Permanent),    To("dead_lettered")),
        ("leased",      &live,        fail(1, FailureKind::Permanent),    Stale),
        ("leased",      &live,        previous_epoch(beat(2)),            Stale),
        ("leased",      &live,        previous_epoch(complete(2)),        Stale),
        ("leased",      &live,        intruder(beat(2)),                  NotHolder),
        ("leased",      &live,        intruder(complete(2)),              NotHolder),
        ("leased",      &live,        intruder(fail(2, FailureKind::Permanent)), NotHolder),
        ("leased",      &live,        JobEvent::Expire,                   Illegal),
        ("expired",     &expired,     JobEvent::Expire,                   To("queued")),
        ("hung",        &hung,        JobEvent::Expire,                   To("queued")),
        ("hung",        &hung,        beat(2),                            To("leased")),
        ("expired",     &expired,     complete(2),                        To("succeeded")),
        ("leased",      &live,        JobEvent::Cancel,                   To("cancelled")),
        ("leased",      &live,        JobEvent::Resubmit,                 Illegal),
        ("succeeded",   &succeeded,   lease.clone(),                      Illegal),
        ("succeeded",   &succeeded,   beat(2),                            Illegal),
        ("succeeded",   &succeeded,   complete(2),                        Unchanged),
        ("succeeded",   &succeeded,   intruder(complete(2)),              NotHolder),
        ("succeeded",   &succeeded,   complete(1),                        Stale),
        ("succeeded",   &succeeded,   complete(3),                        Stale),
        ("succeeded",   &succeeded,   fail(2, FailureKind::Retryable),    Illegal),
        ("succeeded",   &succeeded,   JobEvent::Expire,                   Illegal),
        ("succeeded",   &succeeded,   JobEvent::Cancel,                   Illegal),
        ("succeeded",   &succeeded,   JobEvent::Resubmit,                 To("queued")),
        ("dead",        &dead,        lease.clone(),                      Illegal),
        ("dead",        &dead,        complete(2),                        Illegal),
        ("dead",        &dead,        complete(1),                        Stale),
        ("dead",        &dead,        fail(2, FailureKind::Permanent),    Illegal),
        ("dead",        &dead,        JobEvent::Expire,                   Illegal),
        ("dead",        &dead,        JobEvent::Cancel,                   Illegal),
        ("dead",        &dead,        JobEvent::Resubmit,                 To("queued")),
        ("cancelled",   &cancelled,   lease.clone(),                      Illegal),
        ("cancelled",   &cancelled,   beat(2),                            Illegal),
        ("cancelled",   &cancelled,   complete(2),                        Illegal),
        ("cancelled",   &cancelled,   fail(2, FailureKind::Retryable),    Illegal),
        ("cancelled",   &cancelled,   JobEvent::Expire,                   Illegal),
        ("cancelled",   &cancelled,   JobEvent::Cancel,                   Unchanged),
        ("cancelled",   &cancelled,   JobEvent::Resubmit,                 To("queued")),
    ];
    for (name, from, event, expected) in table {
        assert_eq!(outcome(from.apply(&event, NOW, &POLICY)), expected, "{name} + {event:?}");
    }
}

#[test]
fn a_success_whose_result_was_refused_is_queued_again_and_old_attempts_stay_fenced() {
    let now = 1_000;
    let mut job = JobState::new(now, 1);
    job = changed(job.apply(&lease("w1", 100), now, &POLICY));
    job = changed(job.apply(&complete(1), now, &POLICY));
    let queued = changed(job.apply(&JobEvent::Resubmit, now + 5, &POLICY));
    assert_eq!(queued.phase, Phase::Queued { not_before: now + 5 });
    assert_eq!(queued.attempts_made, 1);
    assert!(queued.apply(&complete(1), now + 6, &POLICY).is_err(), "the old attempt is stale");
    let leased = changed(queued.apply(&lease("w1", 100), now + 7, &POLICY));
    assert_eq!(leased.current_token(), Some(token(2)));
}

#[test]
fn a_resubmitted_dead_letter_gets_a_fresh_retry_budget_and_keeps_its_attempt_count() {
    let mut job = JobState::new(NOW, 3);
    let mut now = NOW;
    for attempt in 1..=POLICY.max_attempts {
        now += 100_000;
        job = changed(job.apply(&lease("w1", 10), now, &POLICY));
        job = changed(job.apply(&fail(attempt, FailureKind::Retryable), now, &POLICY));
    }
    assert_eq!(job.phase, Phase::DeadLettered);
    let now = now + 5;
    let revived = changed(job.apply(&JobEvent::Resubmit, now, &POLICY));
    assert_eq!(revived.phase, Phase::Queued { not_before: now });
    assert_eq!((revived.failures, revived.attempts_made), (0, POLICY.max_attempts));
    // The last dead attempt's late report stays stale; the next lease is a new attempt.
    let late = revived.apply(&complete(POLICY.max_attempts), now + 1, &POLICY);
    assert!(late.is_err());
    let leased = changed(revived.apply(&lease("w1", 10), now + 1, &POLICY));
    assert_eq!(leased.current_token(), Some(token(POLICY.max_attempts + 1)));
}

#[test]
fn a_lease_names_the_next_attempt_and_its_deadline() {
    let event = JobEvent::Lease { worker: "w".into(), lease_ms: 500, epoch: EPOCH, max_ms: Some(9_000) };
    let Ok(Applied::Changed(next)) = JobState::new(NOW, 1).apply(&event, NOW, &POLICY) else { panic!("lease refused") };
    assert_eq!(next.current_token(), Some(token(1)));
    assert_eq!(next.phase, Phase::Leased { worker: "w".into(), expires_at: NOW + 500, deadline: Some(NOW + 9_000) });
    assert_eq!(next.phase.due_at(), Some(NOW + 500));
    // Heartbeats extend the lease, never the hard deadline; the reaper looks at the earlier.
    let beat = JobEvent::Heartbeat { token: token(1), worker: "w".into(), lease_ms: 500 };
    let late = changed(next.apply(&beat, NOW + 8_800, &POLICY));
    assert_eq!(late.phase.due_at(), Some(NOW + 9_000));
    let given_up = changed(late.apply(&JobEvent::Expire, NOW + 9_000, &POLICY));
    assert!(matches!(given_up.phase, Phase::Queued { .. }));
    assert_eq!((given_up.failures, given_up.expiries), (1, 0), "a hung job is a failure");
    // A job's own limit (its sweep's) wins over the lease event's.
    let own = JobState::new(NOW, 1).with_max_ms(Some(4_000));
    let leased = changed(own.apply(&event, NOW, &POLICY));
    assert!(matches!(leased.phase, Phase::Leased { deadline: Some(d), .. } if d == NOW + 4_000), "{leased:?}");
}

#[test]
fn retryable_failures_back_off_then_dead_letter_after_max_attempts() {
    let mut job = JobState::new(0, 9);
    let mut now = 0;
    for attempt in 1..=POLICY.max_attempts {
        let Ok(Applied::Changed(next)) = job.apply(&lease("w1", 10), now, &POLICY) else {
            panic!("attempt {attempt} not leased")
        };
        let Ok(Applied::Changed(next)) = next.apply(&fail(attempt, FailureKind::Retryable), now, &POLICY) else {
            panic!("failure refused")
        };
        job = next;
        if attempt < POLICY.max_attempts {
            let Phase::Queued { not_before } = job.phase else { panic!("not requeued: {job:?}") };
            let delay = not_before - now;
            let full = (POLICY.backoff_base_ms << (attempt - 1)).min(POLICY.backoff_cap_ms);
            assert!(
                (full / 2..=full).contains(&delay),
                "attempt {attempt}: delay {delay} outside [{}, {full}]",
                full / 2
            );
            now = not_before;
        }
    }
    assert_eq!(job.phase, Phase::DeadLettered);
    assert_eq!(job.failures, POLICY.max_attempts);
    assert_eq!(job.last_error.as_deref(), Some("boom"));
}

#[test]
fn preemptions_are_counted_apart_and_do_not_use_the_retry_budget() {
    let mut job = JobState::new(0, 3);
    for attempt in 1..=POLICY.max_attempts * 2 {
        let Ok(Applied::Changed(next)) = job.apply(&lease("w1", 10), 0, &POLICY) else {
            panic!("attempt {attempt} not leased")
        };
        let Ok(Applied::Changed(next)) = next.apply(&fail(attempt, FailureKind::Preempted), 0, &POLICY) else {
            panic!("preemption refused")
        };
        job = next;
    }
    assert_eq!(job.phase, Phase::Queued { not_before: 0 });
    assert_eq!((job.failures, job.preemptions, job.attempts_made), (0, 6, 6));
}

#[test]
fn expiries_are_counted_apart_from_failures_with_their_own_limit() {
    let mut job = JobState::new(0, 3);
    let mut now = 0;
    for attempt in 1..=POLICY.max_expiries {
        job = changed(job.apply(&lease("w1", 10), now, &POLICY));
        assert_eq!(job.current_token(), Some(token(attempt)));
        now += 10;
        job = changed(job.apply(&JobEvent::Expire, now, &POLICY));
        if let Phase::Queued { not_before } = job.phase {
            now = not_before;
        }
    }
    assert_eq!(job.phase, Phase::DeadLettered);
    assert_eq!((job.failures, job.expiries), (0, POLICY.max_expiries));
    const { assert!(POLICY.max_expiries > POLICY.max_attempts, "more expiries than failures are allowed") };
}

#[test]
fn an_orphaned_lease_is_taken_back_and_the_next_lease_is_newer() {
    // The store lost the grant of attempt 3 (and everything after attempt 2's grant).
    let rolled_back = state(Phase::Queued { not_before: NOW }, 2);
    let taken_back = changed(rolled_back.apply(&beat(3), NOW, &POLICY));
    assert_eq!(taken_back.current_token(), Some(token(3)));
    assert!(matches!(&taken_back.phase, Phase::Leased { worker, .. } if worker == "w1"));
    // A job re-created from nothing by the reconciler takes back any lease.
    let fresh = JobState::new(NOW, 1);
    let done = changed(fresh.apply(&complete(5), NOW, &POLICY));
    assert_eq!((done.phase.name(), done.token()), ("succeeded", token(5)));
    // After it expires, the next lease (in the coordinator's new epoch) is newer still.
    let expired = changed(taken_back.apply(&JobEvent::Expire, NOW + 30, &POLICY));
    let next_epoch = JobEvent::Lease { worker: "w2".into(), lease_ms: 30, epoch: EPOCH + 1, max_ms: None };
    let Phase::Queued { not_before } = expired.phase else { panic!("not queued: {expired:?}") };
    let again = changed(expired.apply(&next_epoch, not_before, &POLICY));
    assert!(again.token() > token(3));
    assert_eq!(again.token(), Token { epoch: EPOCH + 1, attempt: 4 });
}

#[test]
fn backoff_grows_is_capped_and_spreads_by_salt() {
    let policy = RetryPolicy { max_attempts: 10, max_expiries: 10, backoff_base_ms: 100, backoff_cap_ms: 1_000 };
    for failures in 1..=10 {
        let full = (100_i64 << (failures - 1)).min(1_000);
        for salt in 0..50 {
            let delay = policy.backoff_ms(failures, salt);
            assert!((full / 2..=full).contains(&delay), "failures {failures}, salt {salt}: {delay}");
        }
    }
    let distinct: std::collections::BTreeSet<i64> = (0..50).map(|salt| policy.backoff_ms(4, salt)).collect();
    assert!(distinct.len() > 20, "jitter barely spreads: {distinct:?}");
    assert_eq!(policy.backoff_ms(u32::MAX, 1), policy.backoff_ms(u32::MAX, 1));
}

fn event_strategy() -> impl Strategy<Value = JobEvent> {
    let token = (0_u64..3, 0_u32..6).prop_map(|(epoch, attempt)| Token { epoch, attempt });
    let worker = (0_usize..2).prop_map(|w| ["w0", "w1"][w].to_string());
    prop_oneof![
        (0_i64..50, 0_u64..3, proptest::option::of(0_i64..80), worker.clone())
            .prop_map(|(lease_ms, epoch, max_ms, worker)| JobEvent::Lease { worker, lease_ms, epoch, max_ms }),
        (token.clone(), worker.clone(), 0_i64..50).prop_map(|(token, worker, lease_ms)| JobEvent::Heartbeat {
            token,
            worker,
            lease_ms
        }),
        (token.clone(), worker.clone()).prop_map(|(token, worker)| JobEvent::Complete { token, worker }),
        (token, worker, 0_usize..3).prop_map(|(token, worker, kind)| {
            let kind = [FailureKind::Retryable, FailureKind::Permanent, FailureKind::Preempted][kind];
            JobEvent::Fail { token, worker, kind, error: "e".into() }
        }),
        Just(JobEvent::Expire),
        Just(JobEvent::Cancel),
        Just(JobEvent::Resubmit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random histories: attempts never decrease, terminal states stay terminal, a
    /// stale attempt is never accepted, and at most one result is committed (per
    /// result: a success is resubmitted only when its result was refused on reuse).
    #[test]
    fn random_histories_keep_the_invariants(
        events in proptest::collection::vec((event_strategy(), 0_i64..40), 1..60)
    ) {
        let policy = RetryPolicy { max_attempts: 3, max_expiries: 4, backoff_base_ms: 5, backoff_cap_ms: 20 };
        let mut job = JobState::new(0, 5);
        let mut now = 0;
        let mut commits = 0;
        for (event, step) in events {
            now += step;
            let before = job.clone();
            match job.apply(&event, now, &policy) {
                Ok(Applied::Changed(next)) => {
                    // Only a resubmission leaves a terminal state.
                    let resubmitted = event == JobEvent::Resubmit;
                    prop_assert!(!before.phase.is_terminal() || resubmitted, "{before:?} left a terminal state on {event:?}");
                    if resubmitted && matches!(before.phase, Phase::Succeeded { .. }) {
                        commits = 0;
                    }
                    prop_assert!(next.token() >= before.token(), "the token went back on {:?}", event);
                    if let Some(sender) = event.sender() {
                        // Accepted from the holder of the current lease, or from an orphan
                        // newer than anything the state handed out (on a queued job).
                        let holder = matches!(&before.phase, Phase::Leased { worker, .. } if worker == sender.worker);
                        let current = before.current_token() == Some(sender.token) && holder;
                        let orphan = matches!(before.phase, Phase::Queued { .. }) && sender.token > before.token();
                        prop_assert!(current || orphan, "{:?} accepted on {:?}", event, before);
                    }
                    if matches!(next.phase, Phase::Succeeded { .. }) {
                        commits += 1;
                    }
                    job = next;
                }
                Ok(Applied::Unchanged) => prop_assert!(
                    before.phase.is_terminal() || matches!(event, JobEvent::Fail { .. }),
                    "{:?} changed nothing on {:?}", event, before
                ),
                Err(_) => {}
            }
            prop_assert!(commits <= 1);
        }
    }
}
