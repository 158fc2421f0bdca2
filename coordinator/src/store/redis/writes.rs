//! The Redis store's guarded writes: a decided transition written with its script, only
//! over the state that was read.

use wf_shared::job::{JobState, Phase, SweepId};
use wf_shared::plan::JobKey;

use super::{DEAD, EpochCheck, JOBS, JobStore as _, LEASED, OWNER, READY, RedisJobStore, StoreError, encode};

impl RedisJobStore {
    /// Writes `next` over `current` with the script of that transition; `false` when
    /// another writer got there first.
    pub(super) async fn write(&self, key: &JobKey, current: &JobState, next: &JobState) -> Result<bool, StoreError> {
        self.write_owned(key, current, next, None).await
    }

    /// [`Self::write`] of a lease grant in `epoch`: [`StoreError::EpochLost`] when the
    /// marker is not that epoch, or when the server restarted since the epoch started.
    pub(super) async fn write_grant(
        &self,
        key: &JobKey,
        current: &JobState,
        next: &JobState,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let due = next.phase.due_at().unwrap_or(i64::MAX);
        let mut command = redis::cmd("EVALSHA");
        command.arg(self.scripts.lease.get_hash()).arg(5);
        for index in [JOBS, READY, LEASED, DEAD, OWNER] {
            command.arg(&self.keys[index]);
        }
        command.arg(key.to_string()).arg(encode(current)?).arg(current.attempts_made).arg(encode(next)?);
        command.arg(due).arg("").arg(epoch);
        let written: i64 = match command.query_async(&mut self.connection()).await {
            Ok(written) => written,
            Err(error) if error.code() == Some("NOSCRIPT") => {
                // The server forgot its scripts: it restarted, or they were flushed.
                if self.epoch_check().await? != EpochCheck::Current(epoch) {
                    return Err(StoreError::EpochLost);
                }
                self.load_lease_script().await?;
                command.query_async(&mut self.connection()).await?
            }
            Err(error) => return Err(error.into()),
        };
        match written {
            -1 => Err(StoreError::EpochLost),
            written => Ok(written == 1),
        }
    }

    /// [`Self::write`], also handing the job to sweep `owner` (for a resubmission).
    pub(super) async fn write_owned(
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
            // An orphaned lease taken back (a grant goes through `write_grant`).
            (Phase::Queued { .. }, Phase::Leased { .. }) => {
                (&self.scripts.lease, next.phase.due_at().unwrap_or(i64::MAX).to_string())
            }
            (Phase::Leased { .. }, Phase::Leased { .. }) => {
                (&self.scripts.heartbeat, next.phase.due_at().unwrap_or(i64::MAX).to_string())
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
            .arg("")
            .invoke_async(&mut self.connection())
            .await;
        if matches!(next.phase, Phase::Queued { .. }) {
            // A job ready again may be older than the kept candidates.
            self.forget_candidates().await;
        }
        Ok(written? == 1)
    }
}
