//! `wf-worker`: a worker process alone, the entry point of worker images. The same
//! code and options as `wf worker`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM, `--max-jobs`); 2 an error, one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use wf_coordinator::cli::{Command, WorkerOnlyArgs};

/// mimalloc, not glibc's malloc: Candle allocates a fresh tensor for every intermediate
/// result, and glibc handed those pages back to the kernel after each training step and
/// faulted them in again (page faults and TLB shoot-downs were most of the CPU time):
/// MLP training ran 4-5x slower (`cargo bench -p wf-worker --bench train_throughput`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(unsafe_code)]
fn main() -> ExitCode {
    let args = WorkerOnlyArgs::parse();
    let command = Command::Worker(args.worker);
    if let Some((name, value)) = wf_coordinator::cli::thread_env(&command) {
        // SAFETY: no other thread exists yet (argument parsing starts none) that could
        // read or write the environment at the same time.
        unsafe { std::env::set_var(name, value) };
    }
    wf_coordinator::cli::main(args.log_format, command)
}
