//! How a command that ran to the end went, and its exit code.

use std::process::ExitCode;

/// How a command that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The command ran, and what it checked failed a gate.
    GateFailed,
    /// Stopped by SIGINT or SIGTERM before the end, after saving what was done.
    Interrupted,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::GateFailed => ExitCode::from(1),
            // 128 + SIGINT, as shells report a command stopped by Ctrl-C.
            Outcome::Interrupted => ExitCode::from(130),
        }
    }
}
