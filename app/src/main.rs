//! `wf`: the walkforward command-line tool.
//!
//! Exit codes: 0 success; 1 a check's gate failed; 2 an error (bad input, unreadable
//! file), printed as one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use wf_app::cli::Args;

/// mimalloc, keeping freed memory in commands that train: with glibc's malloc training
/// ran several times slower (see `wf_worker::allocator`). The data commands return it,
/// so a stage's peak is not added to the next one's.
#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

#[allow(unsafe_code)]
fn main() -> ExitCode {
    let args = Args::parse();
    if wf_app::cli::trains(&args.command) {
        wf_worker::allocator::keep_freed_memory();
    }
    for (name, value) in wf_app::cli::thread_env(&args.command) {
        // SAFETY: no other thread exists yet (argument parsing starts none) that could
        // read or write the environment at the same time.
        unsafe { std::env::set_var(name, value) };
    }
    wf_app::main(args.log_format, args.command)
}
