//! The job state machine: the one place that decides every transition of a queued job.
//!
//! ```text
//!            Lease                    Complete
//!  Queued ───────────────▶ Leased ─────────────▶ Succeeded
//!    ▲                       │
//!    │ retryable failure,    │ permanent failure, failures reach
//!    │ lease expiry,         │ max_attempts, expiries reach
//!    │ preemption            ▼ max_expiries
//!    └─────────────────── DeadLettered      (any non-terminal) ──Cancel──▶ Cancelled
//! ```
//!
//! Stores (in memory, Redis) read a state, call [`JobState::apply`] with the event, the
//! time and the retry policy, and write the result atomically only if the stored state is
//! still the one they read.
//!
//! **Fencing.** Every lease has a [`Token`]: the epoch it was granted in (raised by the
//! coordinator whenever the job store may have lost or rolled back state, and held
//! outside it) and its attempt number. A job's tokens only grow. Every event from a
//! worker carries its lease's token and the worker's id: a stale token is refused, and so
//! is a live token presented by another worker, so a worker that lost its lease can
//! neither extend it nor commit a result, and the coordinator publishes a result only
//! after the holder's `Complete` won the guarded write. Terminal states absorb everything
//! except an exact duplicate of the event that ended them, which is accepted and changes
//! nothing.
//!
//! **Orphans.** After the job store lost state, a queued job may be older than a lease a
//! worker still holds (its grant was lost). Such a worker's token is newer than any the
//! job's state has handed out, so no other worker can hold it: its heartbeat takes the
//! lease back and its result completes the job, instead of being thrown away.
//!
//! Lease expiries (the worker died or was cut off) are counted apart from failures, with
//! their own limit; a lease past its hard deadline (a hung job that still heartbeats) is
//! a failure. Preemptions (a worker drained by SIGTERM hands its job back) use up no
//! budget at all; the attempt number still grows, because it fences leases.

use serde::{Deserialize, Serialize};

/// What the last error of a job failed for running past its hard deadline says.
pub const HUNG: &str = "ran past its maximum duration (hung?) and was given up";

/// Milliseconds since the Unix epoch: the clock of persisted deadlines.
pub type UnixMs = i64;

/// How failed jobs are retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Failures after which a job is dead-lettered.
    pub max_attempts: u32,
    /// Expired leases after which a job is dead-lettered (a job that kills its worker
    /// every time must end too).
    #[serde(default = "default_max_expiries")]
    pub max_expiries: u32,
    /// Delay before the first retry; doubles with each failure.
    pub backoff_base_ms: i64,
    /// Longest delay before a retry.
    pub backoff_cap_ms: i64,
}

fn default_max_expiries() -> u32 {
    RetryPolicy::default().max_expiries
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, max_expiries: 6, backoff_base_ms: 1_000, backoff_cap_ms: 60_000 }
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
    pub const ALL: [Self; 3] = [Self::Retryable, Self::Permanent, Self::Preempted];

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
    /// Held by `worker` under the job's current token until `expires_at` (extended by
    /// heartbeats) and at most until `deadline` (not extended: a hung job ends there).
    Leased {
        worker: String,
        expires_at: UnixMs,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<UnixMs>,
    },
    /// Completed by `worker` at `at`: its result is (or is being) published.
    Succeeded {
        worker: String,
        #[serde(default)]
        at: UnixMs,
    },
    DeadLettered,
    Cancelled,
}

impl Phase {
    /// When the reaper must look at a leased job: its lease expiry or its hard deadline,
    /// whichever comes first.
    pub fn due_at(&self) -> Option<UnixMs> {
        match self {
            Self::Leased { expires_at, deadline, .. } => Some(deadline.map_or(*expires_at, |d| d.min(*expires_at))),
            _ => None,
        }
    }

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

/// A lease's fencing token: the epoch it was granted in and its attempt number. A job's
/// tokens only grow, ordered by epoch, then attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token {
    pub epoch: u64,
    pub attempt: u32,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.attempt)
    }
}

/// A job's whole state: the phase and the counters that survive every transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub phase: Phase,
    /// Leases granted so far; while leased, the current attempt number (from 1).
    pub attempts_made: u32,
    /// The epoch of the latest lease (0: never leased); with `attempts_made`, the token.
    #[serde(default)]
    pub epoch: u64,
    /// Failed attempts (reported failures, hung jobs); expiries and preemptions excluded.
    pub failures: u32,
    /// Leases that expired without a word from their worker.
    #[serde(default)]
    pub expiries: u32,
    pub preemptions: u32,
    pub last_error: Option<String>,
    /// Spreads this job's retry jitter (derived from its key).
    pub salt: u64,
    /// The longest one attempt may run (from its sweep's size); `None`: the lease
    /// event's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<i64>,
}

/// What happens to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEvent {
    /// A worker asks for the job; it holds it for `lease_ms` (and at most the job's own
    /// `max_ms`, else this `max_ms`) under the next attempt of `epoch`, the coordinator's
    /// current epoch.
    Lease {
        worker: String,
        lease_ms: i64,
        epoch: u64,
        max_ms: Option<i64>,
    },
    /// The lease holder is alive; extend the lease by `lease_ms` from now.
    Heartbeat {
        token: Token,
        worker: String,
        lease_ms: i64,
    },
    /// The lease holder's result is ready: it is published once this is written.
    Complete {
        token: Token,
        worker: String,
    },
    /// The lease holder gave up.
    Fail {
        token: Token,
        worker: String,
        kind: FailureKind,
        error: String,
    },
    /// The reaper found the lease past its expiry or its hard deadline.
    Expire,
    Cancel,
    /// A later sweep needs a job that ended without a result (dead-lettered or
    /// cancelled): it is queued again with a fresh retry budget. The attempt counter
    /// carries on, so the leases of earlier attempts stay stale.
    Resubmit,
}

/// Who sends an event about a lease: its token and the worker's id.
#[derive(Debug, Clone, Copy)]
struct Sender<'a> {
    token: Token,
    worker: &'a str,
}

/// Why an event was refused; the stored state is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The event names a lease that no longer holds the job.
    #[error("stale lease {got}: the job is {phase} under lease {current}")]
    Stale { got: Token, current: Token, phase: &'static str },
    /// The event names the current lease but comes from another worker.
    #[error("lease {token} is held by worker {holder}, not {worker}")]
    NotHolder { token: Token, holder: String, worker: String },
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

    /// The lease an event from a worker names, and the worker.
    fn sender(&self) -> Option<Sender<'_>> {
        match self {
            Self::Heartbeat { token, worker, .. }
            | Self::Complete { token, worker }
            | Self::Fail { token, worker, .. } => Some(Sender { token: *token, worker }),
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
            epoch: 0,
            failures: 0,
            expiries: 0,
            preemptions: 0,
            last_error: None,
            salt,
            max_ms: None,
        }
    }

    /// This job with its own limit on an attempt's duration.
    pub fn with_max_ms(mut self, max_ms: Option<i64>) -> Self {
        self.max_ms = max_ms;
        self
    }

    /// The token of the job's latest lease (attempt 0: never leased).
    pub fn token(&self) -> Token {
        Token { epoch: self.epoch, attempt: self.attempts_made }
    }

    /// The current lease's token, when leased.
    pub fn current_token(&self) -> Option<Token> {
        matches!(self.phase, Phase::Leased { .. }).then(|| self.token())
    }

    /// Whether a worker may lease the job at `now`.
    pub fn leasable(&self, now: UnixMs) -> bool {
        matches!(self.phase, Phase::Queued { not_before } if not_before <= now)
    }

    /// Decides what `event` does to this job at `now`.
    pub fn apply(&self, event: &JobEvent, now: UnixMs, policy: &RetryPolicy) -> Result<Applied, TransitionError> {
        let illegal = || TransitionError::Illegal { event: event.name(), phase: self.phase.name() };
        let stale = |got: Token| TransitionError::Stale { got, current: self.token(), phase: self.phase.name() };

        if self.phase.is_terminal() {
            return match (&self.phase, event) {
                (Phase::Succeeded { worker: holder, .. }, JobEvent::Complete { token, worker })
                    if *token == self.token() =>
                {
                    if holder == worker {
                        Ok(Applied::Unchanged)
                    } else {
                        Err(TransitionError::NotHolder {
                            token: *token,
                            holder: holder.clone(),
                            worker: worker.clone(),
                        })
                    }
                }
                (Phase::Cancelled, JobEvent::Cancel) => Ok(Applied::Unchanged),
                // A later sweep needs the job again: it ended without a result, or its
                // result was refused on reuse (damaged, or not the planned job's).
                (Phase::DeadLettered | Phase::Cancelled | Phase::Succeeded { .. }, JobEvent::Resubmit) => {
                    let mut next = self.clone();
                    next.failures = 0;
                    next.expiries = 0;
                    next.phase = Phase::Queued { not_before: now };
                    Ok(Applied::Changed(next))
                }
                (_, event) => match event.sender() {
                    Some(sender) if sender.token != self.token() => Err(stale(sender.token)),
                    _ => Err(illegal()),
                },
            };
        }

        // Events from a lease holder must name the current token of a live lease, and
        // come from the worker that holds it; or be an orphan's (see the module notes).
        if let Some(Sender { token, worker }) = event.sender() {
            match &self.phase {
                Phase::Queued { .. } if token > self.token() => return Ok(self.adopt_orphan(event, now)),
                Phase::Queued { .. } => {
                    return Err(if token == self.token() { illegal() } else { stale(token) });
                }
                Phase::Leased { .. } if token != self.token() => return Err(stale(token)),
                Phase::Leased { worker: holder, .. } if holder != worker => {
                    return Err(TransitionError::NotHolder {
                        token,
                        holder: holder.clone(),
                        worker: worker.to_string(),
                    });
                }
                _ => {}
            }
        }

        let mut next = self.clone();
        match event {
            JobEvent::Lease { worker, lease_ms, epoch, max_ms } => {
                if !self.leasable(now) || *epoch < self.epoch {
                    return Err(illegal());
                }
                next.attempts_made += 1;
                next.epoch = *epoch;
                next.phase = Phase::Leased {
                    worker: worker.clone(),
                    expires_at: now + lease_ms,
                    deadline: self.max_ms.or(*max_ms).map(|max| now + max),
                };
            }
            JobEvent::Heartbeat { lease_ms, .. } => {
                let Phase::Leased { worker, deadline, .. } = &self.phase else { return Err(illegal()) };
                next.phase = Phase::Leased { worker: worker.clone(), expires_at: now + lease_ms, deadline: *deadline };
            }
            JobEvent::Complete { .. } => {
                let Phase::Leased { worker, .. } = &self.phase else { return Err(illegal()) };
                next.phase = Phase::Succeeded { worker: worker.clone(), at: now };
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
                let Phase::Leased { expires_at, deadline, .. } = self.phase else { return Err(illegal()) };
                if deadline.is_some_and(|deadline| now >= deadline) {
                    next.last_error = Some(format!("attempt {} {HUNG}", self.attempts_made));
                    next.fail_and_retry(now, policy);
                } else if now >= expires_at {
                    next.last_error = Some(format!("lease of attempt {} expired", self.attempts_made));
                    next.expiries += 1;
                    next.phase = if next.expiries >= policy.max_expiries {
                        Phase::DeadLettered
                    } else {
                        Phase::Queued { not_before: now + policy.backoff_ms(next.expiries, next.salt) }
                    };
                } else {
                    return Err(illegal());
                }
            }
            JobEvent::Cancel => next.phase = Phase::Cancelled,
            JobEvent::Resubmit => return Err(illegal()),
        }
        Ok(Applied::Changed(next))
    }

    /// An event from the holder of a lease the store has no record of (its grant was
    /// lost with the store's data), on a queued job: the lease is newer than any the job
    /// handed out since, so no one else holds it. A heartbeat takes the lease back and a
    /// result completes the job under that lease; a failure changes nothing (the job is
    /// queued already).
    fn adopt_orphan(&self, event: &JobEvent, now: UnixMs) -> Applied {
        let mut next = self.clone();
        match event {
            JobEvent::Heartbeat { token, worker, lease_ms } => {
                (next.epoch, next.attempts_made) = (token.epoch, token.attempt);
                next.phase = Phase::Leased { worker: worker.clone(), expires_at: now + lease_ms, deadline: None };
            }
            JobEvent::Complete { token, worker } => {
                (next.epoch, next.attempts_made) = (token.epoch, token.attempt);
                next.phase = Phase::Succeeded { worker: worker.clone(), at: now };
            }
            _ => return Applied::Unchanged,
        }
        Applied::Changed(next)
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
