//! `wf`: the walkforward command-line tool.
//!
//! Exit codes: 0 success; 1 a check's gate failed; 2 an error (bad input, unreadable
//! file), printed as one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use wf_coordinator::cli::Args;

/// mimalloc, not glibc's malloc: Candle allocates a fresh tensor for every intermediate
/// result, and glibc handed those pages back to the kernel after each training step and
/// faulted them in again (page faults and TLB shoot-downs were most of the CPU time):
/// MLP training ran 4-5x slower (`cargo bench -p wf-worker --bench train_throughput`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(unsafe_code)]
fn main() -> ExitCode {
    let args = Args::parse();
    if let Some((name, value)) = wf_coordinator::cli::thread_env(&args.command) {
        // SAFETY: no other thread exists yet (argument parsing starts none) that could
        // read or write the environment at the same time.
        unsafe { std::env::set_var(name, value) };
    }
    wf_coordinator::cli::main(args.log_format, args.command)
}
