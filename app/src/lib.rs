//! `wf` (the app crate): walkforward's command line and the only composition root. It
//! parses arguments, wires the libraries together and runs a command; no library crate
//! depends on it (checked by `app/tests/layering.rs`).
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the `wf` and `wf-worker` command lines (clap) and their thread settings |
//! | [`command`] | what each command does: data, plan, train, run, serve, sweep, live |
//! | [`local`] | `wf run`: a coordinator and workers in one process, over loopback gRPC |
//! | [`client`] | watching a sweep and fetching its report over gRPC |
//! | [`outcome`] | how a command that ran to the end went, and its exit code |
//!
//! [`main`] runs a parsed command line: logging, the command, its exit code.

pub mod cli;
pub mod client;
pub mod command;
pub mod local;
pub mod outcome;
mod progress;

use std::process::ExitCode;

use cli::{Command, LogFormat};

/// Runs a parsed command line: logging, the command, its exit code. Errors are printed
/// as one line on stderr (exit 2); a failed gate exits 1.
pub fn main(log_format: LogFormat, command: Command) -> ExitCode {
    init_logging(log_format);
    match command::run(command) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            // `{:#}` prints the whole cause chain of an anyhow error on one line.
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WF_LOG").unwrap_or_else(|_| "warn".into());
    // tiny_skia warns "path stroking failed" for a zero-length plot line (a partial
    // report with a single point): nothing to draw, and the PNG is right without it.
    let filter = match "tiny_skia=error".parse() {
        Ok(directive) if !std::env::var("WF_LOG").is_ok_and(|v| v.contains("tiny_skia")) => {
            filter.add_directive(directive)
        }
        _ => filter,
    };
    // Colours only on a terminal: logs piped to a file or a collector stay plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
