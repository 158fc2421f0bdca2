//! The client commands: `wf submit`, `wf status`, `wf list`, `wf cancel`, `wf report`.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use wf_proto::v1;
use wf_proto::v1::sweep_service_client::SweepServiceClient;

use super::Outcome;
use super::serve::{runtime, shutdown_on_signals};
use crate::cli::{ConnectArgs, ReportArgs, StatusArgs, SubmitArgs, SweepArgs};
use crate::progress;

async fn connect(args: &ConnectArgs) -> anyhow::Result<SweepServiceClient<Channel>> {
    let client = SweepServiceClient::connect(args.coordinator.clone())
        .await
        .with_context(|| format!("cannot reach the coordinator at {}", args.coordinator))?;
    Ok(client.max_decoding_message_size(256 * 1024 * 1024))
}

/// A gRPC error as one line: the coordinator's message says what and which field.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

fn status_name(progress: &v1::SweepProgress) -> &'static str {
    match progress.status() {
        v1::SweepStatus::Running => "running",
        v1::SweepStatus::Finished if progress.dead_lettered > 0 => "finished with failures",
        v1::SweepStatus::Finished => "finished",
        v1::SweepStatus::Cancelled => "cancelled",
        v1::SweepStatus::Unspecified => "unknown",
    }
}

fn print_progress(progress: &v1::SweepProgress) {
    println!(
        "{}  {:<20} {:<22} {}/{} jobs  {}",
        progress.sweep_id,
        progress.name,
        status_name(progress),
        progress.succeeded,
        progress.total,
        progress::describe(progress)
    );
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<Outcome> {
    let spec = std::fs::read_to_string(&args.spec).with_context(|| format!("cannot read {}", args.spec.display()))?;
    runtime()?.block_on(async move {
        let mut client = connect(&args.connect).await?;
        let response =
            client.submit_sweep(v1::SubmitSweepRequest { spec_toml: spec }).await.map_err(status_error)?.into_inner();
        eprintln!(
            "{} distinct trainings ({} by window x cadence), {} already computed or queued",
            response.jobs, response.jobs_before_dedup, response.reused
        );
        println!("{}", response.sweep_id);
        Ok(Outcome::Success)
    })
}

pub fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    runtime()?.block_on(async move {
        let mut client = connect(&args.sweep.connect).await?;
        if !args.watch {
            let response = client
                .get_sweep(v1::GetSweepRequest { sweep_id: args.sweep.sweep_id.clone() })
                .await
                .map_err(status_error)?
                .into_inner();
            print_progress(&response.progress.unwrap_or_default());
            return Ok(Outcome::Success);
        }
        let bar = progress::sweep_bar(0);
        // Ctrl-C stops watching; it does not cancel the sweep.
        let stop = shutdown_on_signals();
        let detached = CancellationToken::new();
        let mut show = |p: &v1::SweepProgress| progress::show(&bar, p);
        let watching = crate::client::watch(&mut client, &args.sweep.sweep_id, &detached, &mut show);
        let last = tokio::select! {
            last = watching => Some(last?),
            () = stop.cancelled() => None,
        };
        bar.finish_and_clear();
        if let Some(last) = last {
            print_progress(&last);
        }
        Ok(Outcome::Success)
    })
}

pub fn list(args: ConnectArgs) -> anyhow::Result<Outcome> {
    runtime()?.block_on(async move {
        let mut client = connect(&args).await?;
        let response = client.list_sweeps(v1::ListSweepsRequest {}).await.map_err(status_error)?.into_inner();
        if response.sweeps.is_empty() {
            eprintln!("no sweeps");
        }
        response.sweeps.iter().for_each(print_progress);
        Ok(Outcome::Success)
    })
}

pub fn cancel(args: SweepArgs) -> anyhow::Result<Outcome> {
    runtime()?.block_on(async move {
        let mut client = connect(&args.connect).await?;
        let response = client
            .cancel_sweep(v1::CancelSweepRequest { sweep_id: args.sweep_id.clone() })
            .await
            .map_err(status_error)?
            .into_inner();
        print_progress(&response.progress.unwrap_or_default());
        Ok(Outcome::Success)
    })
}

pub fn report(args: ReportArgs) -> anyhow::Result<Outcome> {
    runtime()?.block_on(async move {
        let mut client = connect(&args.sweep.connect).await?;
        let report = crate::client::report(&mut client, &args.sweep.sweep_id).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.summary_table());
        }
        Ok(Outcome::Success)
    })
}
