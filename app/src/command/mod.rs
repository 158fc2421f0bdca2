//! Subcommand dispatch. Each command returns an [`Outcome`] or an error; [`crate::main`]
//! turns them into exit codes.

mod data;
mod live;
mod plan;
mod run;
mod serve;
mod sweep;
mod train;

use crate::cli::Command;
use crate::outcome::Outcome;

/// Runs `command` to its end.
pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Data(data) => data::run(data),
        Command::Plan(args) => plan::run(args),
        Command::Train(args) => train::run(args),
        Command::Run(args) => run::run(args),
        Command::Coordinator(args) => serve::coordinator(args),
        Command::Worker(args) => serve::worker(args),
        Command::Submit(args) => sweep::submit(args),
        Command::Status(args) => sweep::status(args),
        Command::List(args) => sweep::list(args),
        Command::Cancel(args) => sweep::cancel(args),
        Command::Report(args) => sweep::report(args),
        Command::Live(live_command) => live::run(live_command),
        Command::Predict(args) => live::predict(args),
        Command::Auth(crate::cli::AuthCommand::NewToken { tenant, role, file }) => {
            let role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let token = wf_coordinator::auth::add_token(&file, &tenant, role).map_err(|e| anyhow::anyhow!(e))?;
            println!("{token}");
            eprintln!("added a {} token of tenant {tenant} to {}; it is shown only now", role.name(), file.display());
            Ok(Outcome::Success)
        }
    }
}
