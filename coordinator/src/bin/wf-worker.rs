//! `wf-worker`: a worker process alone, the entry point of worker images. The same
//! code and options as `wf worker`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM, `--max-jobs`); 2 an error, one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use wf_coordinator::cli::{Command, WorkerOnlyArgs};

#[allow(unsafe_code)]
fn main() -> ExitCode {
    if let Some((name, value)) = wf_coordinator::cli::thread_env() {
        // SAFETY: the first statement of `main`: no other thread exists yet that could
        // read or write the environment at the same time.
        unsafe { std::env::set_var(name, value) };
    }
    let args = WorkerOnlyArgs::parse();
    wf_coordinator::cli::main(args.log_format, Command::Worker(args.worker))
}
