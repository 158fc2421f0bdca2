//! The job state machine: the one place that decides every transition of a queued job.
//!
//! ```text
//!            Lease                    Complete
//!  Queued ───────────────▶ Leased ─────────────▶ Succeeded
//!    ▲                       │
//!    │ retryable failure,    │ permanent failure, or
//!    │ lease expiry,         │ failures reach max_attempts
//!    │ preemption            ▼
//!    └─────────────────── DeadLettered      (any non-terminal) ──Cancel──▶ Cancelled
//! ```
//!
//! Stores (in memory, Redis) read a state, call [`JobState::apply`] with the event, the
//! time and the retry policy, and write the result atomically only if the stored state is
//! still the one they read. Every event from a worker carries the attempt number of its
//! lease: a stale attempt is refused here, so a worker that lost its lease can neither
//! extend it nor commit a result. Terminal states absorb everything except an exact
//! duplicate of the event that ended them, which is accepted and changes nothing.
//!
//! Preemptions (a worker drained by SIGTERM hands its job back) are counted apart from
//! failures and do not use up the retry budget; the attempt number still grows, because
//! it fences leases.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: the clock of persisted deadlines.
pub type UnixMs = i64;

/// How failed jobs are retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Failures (including expired leases) after which a job is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles with each failure.
    pub backoff_base_ms: i64,
    /// Longest delay before a retry.
    pub backoff_cap_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, backoff_base_ms: 1_000, backoff_cap_ms: 60_000 }
    }
}

impl RetryPolicy {
    /// Delay before retrying after the `failures`-th failure: exponential, capped, with
    /// "equal jitter" (half fixed, half spread by `salt`) so that jobs failing together
    /// do not come back together. Deterministic for a given salt.
    pub fn backoff_ms(&self, failures: u32, salt: u64) -> i64 {
        let exponent = failures.saturating_sub(1).min(30);
        let full = self.backoff_base_ms.saturating_mul(1_i64 << exponent).min(self.backoff_cap_ms).max(0);
        let half = full / 2;
        let spread = mix(salt ^ u64::from(failures)) % (half as u64 + 1);
        half + spread as i64
    }
}

/// SplitMix64's finaliser: a well-spread function of the salt.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Why a worker gave a job back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Another attempt may succeed (a machine fault, a lost device).
    Retryable,
    /// Every attempt would fail the same way (a bad spec, a leaking window).
    Permanent,
    /// The worker is shutting down; the job is not at fault.
    Preempted,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Preempted => "preempted",
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Waiting to be leased, not before `not_before`.
    Queued {
        not_before: UnixMs,
    },
    /// Held by `worker` under attempt `attempts_made` until `expires_at`.
    Leased {
        worker: String,
        expires_at: UnixMs,
    },
    Succeeded {
        worker: String,
    },
    DeadLettered,
    Cancelled,
}

impl Phase {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::DeadLettered | Self::Cancelled)
    }

    /// The phase's name, for logs, metrics and counts.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Leased { .. } => "leased",
            Self::Succeeded { .. } => "succeeded",
            Self::DeadLettered => "dead_lettered",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A job's whole state: the phase and the counters that survive every transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub phase: Phase,
    /// Leases granted so far; while leased, the current attempt number (from 1).
    pub attempts_made: u32,
    /// Failed attempts, expired leases included; preemptions excluded.
    pub failures: u32,
    pub preemptions: u32,
    pub last_error: Option<String>,
    /// Spreads this job's retry jitter (derived from its key).
    pub salt: u64,
}

/// What happens to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEvent {
    /// A worker asks for the job; it holds it for `lease_ms`.
    Lease {
        worker: String,
        lease_ms: i64,
    },
    /// The lease holder is alive; extend the lease by `lease_ms` from now.
    Heartbeat {
        attempt: u32,
        lease_ms: i64,
    },
    /// The lease holder's result was committed.
    Complete {
        attempt: u32,
    },
    /// The lease holder gave up.
    Fail {
        attempt: u32,
        kind: FailureKind,
        error: String,
    },
    /// The reaper found the lease past its deadline.
    Expire,
    Cancel,
    /// A later sweep needs a job that ended without a result (dead-lettered or
    /// cancelled): it is queued again with a fresh retry budget. The attempt counter
    /// carries on, so the leases of earlier attempts stay stale.
    Resubmit,
}

/// Why an event was refused; the stored state is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The event names an attempt that no longer holds the job.
    #[error("stale attempt {got}: the job is {phase} under attempt {current}")]
    Stale { got: u32, current: u32, phase: &'static str },
    /// The event makes no sense in the job's phase.
    #[error("{event} is not allowed while the job is {phase}")]
    Illegal { event: &'static str, phase: &'static str },
}

/// The result of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The job moved (or its lease was extended) to this state.
    Changed(JobState),
    /// An exact duplicate of the event that ended the job: nothing to write.
    Unchanged,
}

impl JobEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Lease { .. } => "lease",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Complete { .. } => "complete",
            Self::Fail { .. } => "fail",
            Self::Expire => "expire",
            Self::Cancel => "cancel",
            Self::Resubmit => "resubmit",
        }
    }

    /// The attempt an event from a lease holder names.
    fn attempt(&self) -> Option<u32> {
        match self {
            Self::Heartbeat { attempt, .. } | Self::Complete { attempt } | Self::Fail { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }
}

impl JobState {
    /// A job just enqueued, leasable from `now`.
    pub fn new(now: UnixMs, salt: u64) -> Self {
        Self {
            phase: Phase::Queued { not_before: now },
            attempts_made: 0,
            failures: 0,
            preemptions: 0,
            last_error: None,
            salt,
        }
    }

    /// The lease's attempt number, when leased.
    pub fn current_attempt(&self) -> Option<u32> {
        matches!(self.phase, Phase::Leased { .. }).then_some(self.attempts_made)
    }

    /// Whether a worker may lease the job at `now`.
    pub fn leasable(&self, now: UnixMs) -> bool {
        matches!(self.phase, Phase::Queued { not_before } if not_before <= now)
    }

    /// Decides what `event` does to this job at `now`.
    pub fn apply(&self, event: &JobEvent, now: UnixMs, policy: &RetryPolicy) -> Result<Applied, TransitionError> {
        let illegal = || TransitionError::Illegal { event: event.name(), phase: self.phase.name() };
        let stale = |got: u32| TransitionError::Stale { got, current: self.attempts_made, phase: self.phase.name() };

        if self.phase.is_terminal() {
            return match (&self.phase, event) {
                (Phase::Succeeded { .. }, JobEvent::Complete { attempt }) if *attempt == self.attempts_made => {
                    Ok(Applied::Unchanged)
                }
                (Phase::Cancelled, JobEvent::Cancel) => Ok(Applied::Unchanged),
                // A later sweep needs the job again: it ended without a result, or its
                // result was refused on reuse (damaged, or not the planned job's).
                (Phase::DeadLettered | Phase::Cancelled | Phase::Succeeded { .. }, JobEvent::Resubmit) => {
                    let mut next = self.clone();
                    next.failures = 0;
                    next.phase = Phase::Queued { not_before: now };
                    Ok(Applied::Changed(next))
                }
                (_, event) => match event.attempt() {
                    Some(got) if got != self.attempts_made => Err(stale(got)),
                    _ => Err(illegal()),
                },
            };
        }

        // Events from a lease holder must name the current attempt of a live lease.
        if let Some(got) = event.attempt() {
            let Phase::Leased { .. } = self.phase else {
                return Err(if got == self.attempts_made { illegal() } else { stale(got) });
            };
            if got != self.attempts_made {
                return Err(stale(got));
            }
        }

        let mut next = self.clone();
        match event {
            JobEvent::Lease { worker, lease_ms } => {
                if !self.leasable(now) {
                    return Err(illegal());
                }
                next.attempts_made += 1;
                next.phase = Phase::Leased { worker: worker.clone(), expires_at: now + lease_ms };
            }
            JobEvent::Heartbeat { lease_ms, .. } => {
                let Phase::Leased { worker, .. } = &self.phase else { return Err(illegal()) };
                next.phase = Phase::Leased { worker: worker.clone(), expires_at: now + lease_ms };
            }
            JobEvent::Complete { .. } => {
                let Phase::Leased { worker, .. } = &self.phase else { return Err(illegal()) };
                next.phase = Phase::Succeeded { worker: worker.clone() };
            }
            JobEvent::Fail { kind, error, .. } => {
                next.last_error = Some(error.clone());
                match kind {
                    FailureKind::Preempted => {
                        next.preemptions += 1;
                        next.phase = Phase::Queued { not_before: now };
                    }
                    FailureKind::Permanent => {
                        next.failures += 1;
                        next.phase = Phase::DeadLettered;
                    }
                    FailureKind::Retryable => next.fail_and_retry(now, policy),
                }
            }
            JobEvent::Expire => {
                let Phase::Leased { expires_at, .. } = self.phase else { return Err(illegal()) };
                if now < expires_at {
                    return Err(illegal());
                }
                next.last_error = Some(format!("lease of attempt {} expired", self.attempts_made));
                next.fail_and_retry(now, policy);
            }
            JobEvent::Cancel => next.phase = Phase::Cancelled,
            JobEvent::Resubmit => return Err(illegal()),
        }
        Ok(Applied::Changed(next))
    }

    fn fail_and_retry(&mut self, now: UnixMs, policy: &RetryPolicy) {
        self.failures += 1;
        self.phase = if self.failures >= policy.max_attempts {
            Phase::DeadLettered
        } else {
            Phase::Queued { not_before: now + policy.backoff_ms(self.failures, self.salt) }
        };
    }
}

#[cfg(test)]
#[path = "job/tests.rs"]
mod tests;

/// A sweep's id: `sw-` and 12 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SweepId(String);

impl SweepId {
    /// The id for a sweep from 48 bits of `entropy`.
    pub fn from_entropy(entropy: u64) -> Self {
        Self(format!("sw-{:012x}", mix(entropy) & 0xffff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SweepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SweepId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix("sw-").ok_or_else(|| format!("sweep id {text:?} does not start with \"sw-\""))?;
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("sweep id {text:?} is not \"sw-\" and 12 lowercase hex digits"));
        }
        Ok(Self(text.to_string()))
    }
}

impl TryFrom<String> for SweepId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<SweepId> for String {
    fn from(id: SweepId) -> Self {
        id.0
    }
}
