use proptest::prelude::*;

use super::*;

const POLICY: RetryPolicy = RetryPolicy { max_attempts: 3, backoff_base_ms: 1_000, backoff_cap_ms: 8_000 };
const NOW: UnixMs = 100_000;

fn state(phase: Phase, attempts_made: u32) -> JobState {
    JobState { phase, attempts_made, failures: 0, preemptions: 0, last_error: None, salt: 42 }
}

fn changed(result: Result<Applied, TransitionError>) -> JobState {
    match result {
        Ok(Applied::Changed(next)) => next,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn leased(attempt: u32, expires_at: UnixMs) -> JobState {
    state(Phase::Leased { worker: "w1".into(), expires_at }, attempt)
}

fn fail(attempt: u32, kind: FailureKind) -> JobEvent {
    JobEvent::Fail { attempt, kind, error: "boom".into() }
}

/// What the table expects of an event.
#[derive(Debug, PartialEq)]
enum Expect {
    To(&'static str),
    Unchanged,
    Stale,
    Illegal,
}

fn outcome(result: Result<Applied, TransitionError>) -> Expect {
    match result {
        Ok(Applied::Changed(next)) => Expect::To(next.phase.name()),
        Ok(Applied::Unchanged) => Expect::Unchanged,
        Err(TransitionError::Stale { .. }) => Expect::Stale,
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
    let succeeded = state(Phase::Succeeded { worker: "w1".into() }, 2);
    let dead = state(Phase::DeadLettered, 2);
    let cancelled = state(Phase::Cancelled, 2);
    let lease = JobEvent::Lease { worker: "w2".into(), lease_ms: 30 };
    let beat = |attempt| JobEvent::Heartbeat { attempt, lease_ms: 30 };
    let complete = |attempt| JobEvent::Complete { attempt };

    #[rustfmt::skip]
    let table: Vec<(&str, &JobState, JobEvent, Expect)> = vec![
        ("queued",      &queued,      lease.clone(),                      To("leased")),
        ("backing off", &backing_off, lease.clone(),                      Illegal),
        ("queued",      &queued,      beat(1),                            Illegal),
        ("queued",      &queued,      beat(0),                            Stale),
        ("queued",      &queued,      complete(1),                        Illegal),
        ("queued",      &queued,      complete(2),                        Stale),
        ("queued",      &queued,      fail(1, FailureKind::Retryable),    Illegal),
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
        ("leased",      &live,        JobEvent::Expire,                   Illegal),
        ("expired",     &expired,     JobEvent::Expire,                   To("queued")),
        ("expired",     &expired,     complete(2),                        To("succeeded")),
        ("leased",      &live,        JobEvent::Cancel,                   To("cancelled")),
        ("leased",      &live,        JobEvent::Resubmit,                 Illegal),
        ("succeeded",   &succeeded,   lease.clone(),                      Illegal),
        ("succeeded",   &succeeded,   beat(2),                            Illegal),
        ("succeeded",   &succeeded,   complete(2),                        Unchanged),
        ("succeeded",   &succeeded,   complete(1),                        Stale),
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
    job = changed(job.apply(&JobEvent::Lease { worker: "w".into(), lease_ms: 100 }, now, &POLICY));
    job = changed(job.apply(&JobEvent::Complete { attempt: 1 }, now, &POLICY));
    let queued = changed(job.apply(&JobEvent::Resubmit, now + 5, &POLICY));
    assert_eq!(queued.phase, Phase::Queued { not_before: now + 5 });
    assert_eq!(queued.attempts_made, 1);
    assert!(queued.apply(&JobEvent::Complete { attempt: 1 }, now + 6, &POLICY).is_err(), "the old attempt is stale");
    let leased = changed(queued.apply(&JobEvent::Lease { worker: "w".into(), lease_ms: 100 }, now + 7, &POLICY));
    assert_eq!(leased.current_attempt(), Some(2));
}

#[test]
fn a_resubmitted_dead_letter_gets_a_fresh_retry_budget_and_keeps_its_attempt_count() {
    let mut job = JobState::new(NOW, 3);
    let mut now = NOW;
    for attempt in 1..=POLICY.max_attempts {
        now += 100_000;
        job = changed(job.apply(&JobEvent::Lease { worker: "w".into(), lease_ms: 10 }, now, &POLICY));
        job = changed(job.apply(&fail(attempt, FailureKind::Retryable), now, &POLICY));
    }
    assert_eq!(job.phase, Phase::DeadLettered);
    let now = now + 5;
    let revived = changed(job.apply(&JobEvent::Resubmit, now, &POLICY));
    assert_eq!(revived.phase, Phase::Queued { not_before: now });
    assert_eq!((revived.failures, revived.attempts_made), (0, POLICY.max_attempts));
    // The last dead attempt's late report stays stale; the next lease is a new attempt.
    let late = revived.apply(&JobEvent::Complete { attempt: POLICY.max_attempts }, now + 1, &POLICY);
    assert!(late.is_err());
    let leased = changed(revived.apply(&JobEvent::Lease { worker: "w".into(), lease_ms: 10 }, now + 1, &POLICY));
    assert_eq!(leased.current_attempt(), Some(POLICY.max_attempts + 1));
}

#[test]
fn a_lease_names_the_next_attempt_and_its_deadline() {
    let Ok(Applied::Changed(next)) =
        JobState::new(NOW, 1).apply(&JobEvent::Lease { worker: "w".into(), lease_ms: 500 }, NOW, &POLICY)
    else {
        panic!("lease refused")
    };
    assert_eq!(next.current_attempt(), Some(1));
    assert_eq!(next.phase, Phase::Leased { worker: "w".into(), expires_at: NOW + 500 });
}

#[test]
fn retryable_failures_back_off_then_dead_letter_after_max_attempts() {
    let mut job = JobState::new(0, 9);
    let mut now = 0;
    for attempt in 1..=POLICY.max_attempts {
        let Ok(Applied::Changed(next)) = job.apply(&JobEvent::Lease { worker: "w".into(), lease_ms: 10 }, now, &POLICY)
        else {
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
        let Ok(Applied::Changed(next)) = job.apply(&JobEvent::Lease { worker: "w".into(), lease_ms: 10 }, 0, &POLICY)
        else {
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
fn backoff_grows_is_capped_and_spreads_by_salt() {
    let policy = RetryPolicy { max_attempts: 10, backoff_base_ms: 100, backoff_cap_ms: 1_000 };
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
    let attempt = 0_u32..6;
    prop_oneof![
        (0_i64..50).prop_map(|lease_ms| JobEvent::Lease { worker: "w".into(), lease_ms }),
        (attempt.clone(), 0_i64..50).prop_map(|(attempt, lease_ms)| JobEvent::Heartbeat { attempt, lease_ms }),
        attempt.clone().prop_map(|attempt| JobEvent::Complete { attempt }),
        (attempt, 0_usize..3).prop_map(|(attempt, kind)| {
            let kind = [FailureKind::Retryable, FailureKind::Permanent, FailureKind::Preempted][kind];
            JobEvent::Fail { attempt, kind, error: "e".into() }
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
        let policy = RetryPolicy { max_attempts: 3, backoff_base_ms: 5, backoff_cap_ms: 20 };
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
                    prop_assert!(next.attempts_made >= before.attempts_made);
                    if let Some(attempt) = event.attempt() {
                        prop_assert_eq!(before.current_attempt(), Some(attempt), "stale {:?} accepted", event);
                    }
                    if matches!(next.phase, Phase::Succeeded { .. }) {
                        commits += 1;
                    }
                    job = next;
                }
                Ok(Applied::Unchanged) => prop_assert!(before.phase.is_terminal()),
                Err(_) => {}
            }
            prop_assert!(commits <= 1);
        }
    }
}
