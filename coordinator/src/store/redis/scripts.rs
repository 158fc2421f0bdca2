//! The Lua scripts of the Redis store: each transition's script behind the guard that
//! writes only over the state that was read (see `lua/guard.lua`).

use redis::Script;

const GUARD: &str = include_str!("../lua/guard.lua");

#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) lease: Script,
    pub(super) heartbeat: Script,
    pub(super) complete: Script,
    pub(super) requeue: Script,
    pub(super) dead_letter: Script,
    pub(super) cancel: Script,
    pub(super) enqueue: Script,
    pub(super) peek: Script,
    pub(super) resubmit: Script,
    pub(super) repair: Script,
    /// The lease script's text, loaded by hand (see the notes of `store::redis`).
    pub(super) lease_code: String,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let guarded = |body: &str| Script::new(&format!("{GUARD}\n{body}"));
        let lease_code = format!("{GUARD}\n{}", include_str!("../lua/lease.lua"));
        Self {
            lease: Script::new(&lease_code),
            lease_code,
            repair: Script::new(include_str!("../lua/repair.lua")),
            heartbeat: guarded(include_str!("../lua/heartbeat.lua")),
            complete: guarded(include_str!("../lua/complete.lua")),
            requeue: guarded(include_str!("../lua/requeue.lua")),
            dead_letter: guarded(include_str!("../lua/dead_letter.lua")),
            cancel: guarded(include_str!("../lua/cancel.lua")),
            resubmit: guarded(include_str!("../lua/resubmit.lua")),
            enqueue: Script::new(include_str!("../lua/enqueue.lua")),
            peek: Script::new(include_str!("../lua/peek.lua")),
        }
    }
}
