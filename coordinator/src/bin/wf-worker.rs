//! `wf-worker`: a worker process alone, the entry point of worker images. The same
//! code and options as `wf worker`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM, `--max-jobs`); 2 an error, one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use wf_coordinator::cli::{Command, WorkerOnlyArgs};

fn main() -> ExitCode {
    let args = WorkerOnlyArgs::parse();
    wf_coordinator::cli::main(args.log_format, Command::Worker(args.worker))
}
