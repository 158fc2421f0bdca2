//! `wf`: the walkforward command-line tool.
//!
//! Exit codes: 0 success; 1 a check's gate failed; 2 an error (bad input, unreadable
//! file), printed as one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use wf_coordinator::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    wf_coordinator::cli::main(args.log_format, args.command)
}
