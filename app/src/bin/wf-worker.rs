//! `wf-worker`: a worker process alone, the entry point of worker images. The same
//! code and options as `wf worker`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM, `--max-jobs`); 2 an error, one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use wf_app::cli::{Command, WorkerOnlyArgs};

/// mimalloc, keeping freed memory: with glibc's malloc training ran several times
/// slower (see `wf_worker::allocator`).
#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

#[allow(unsafe_code)]
fn main() -> ExitCode {
    wf_worker::allocator::keep_freed_memory();
    let args = WorkerOnlyArgs::parse();
    let command = Command::Worker(args.worker);
    for (name, value) in wf_app::cli::thread_env(&command) {
        // SAFETY: no other thread exists yet (argument parsing starts none) that could
        // read or write the environment at the same time.
        unsafe { std::env::set_var(name, value) };
    }
    wf_app::main(args.log_format, command)
}
