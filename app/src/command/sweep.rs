//! The client commands: `wf submit`, `wf status`, `wf list`, `wf cancel`, `wf report`.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wf_proto::v1;

use super::serve::{runtime, shutdown_on_signals};
use crate::cli::{ConnectArgs, ReportArgs, StatusArgs, SubmitArgs, SweepArgs};
use crate::outcome::Outcome;
use crate::progress;
use std::sync::Arc;
use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::report::SweepReport;
use wf_coordinator::report::files::Format;
use wf_coordinator::scheduler::{Scheduler, SchedulerConfig, SystemClock};
use wf_coordinator::store::{JobStore, MemoryJobStore, SweepRecord};
use wf_shared::job::RetryPolicy;

async fn connect(args: &ConnectArgs) -> anyhow::Result<crate::client::SweepClient> {
    let token =
        wf_proto::auth::BearerToken::from_env_or_file(args.token_file.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    crate::client::connect(&args.coordinator, token, &args.tls.options()).await
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
        let report = if std::path::Path::new(&args.source).is_dir() {
            offline_report(std::path::Path::new(&args.source), args.sweep.as_deref()).await?
        } else {
            let mut client = connect(&args.connect).await?;
            crate::client::report(&mut client, &args.source).await?
        };
        if let Some(out) = &args.out {
            let written = write_report_files(&report, out, &args.format)?;
            eprintln!("report: {}", written.display());
        }
        if args.json {
            println!("{}", report.to_json()?);
        } else if args.out.is_none() {
            print!("{}", report.verdict_text());
            print!("{}", report.summary_table());
        }
        Ok(Outcome::Success)
    })
}

/// Writes the report's files into `out`; returns the main file's path.
pub fn write_report_files(
    report: &SweepReport,
    out: &std::path::Path,
    formats: &[Format],
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let files = wf_coordinator::report::files::render(report, formats)?;
    for (name, bytes) in &files {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let main = files.last().map_or_else(|| out.to_path_buf(), |(name, _)| out.join(name));
    Ok(main)
}

/// A sweep's report from an artifact directory alone: its sweep record and results,
/// with the same scheduler code as the coordinator over an in-memory job store.
async fn offline_report(dir: &std::path::Path, sweep: Option<&str>) -> anyhow::Result<SweepReport> {
    let root = if dir.join("artifacts/sweeps").is_dir() { dir.join("artifacts") } else { dir.to_path_buf() };
    let artifacts = ArtifactStore::open(&root.display().to_string())?;
    let ids = artifacts.sweep_ids().await?;
    let mut records = Vec::new();
    for id in &ids {
        if let Some(bytes) = artifacts.sweep_file(id, "sweep.json").await? {
            let record: SweepRecord = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}/sweeps/{id}/sweep.json is unreadable", root.display()))?;
            records.push(record);
        }
    }
    let record = match sweep {
        Some(wanted) => records
            .into_iter()
            .find(|r| r.id.as_str() == wanted)
            .with_context(|| format!("no sweep {wanted} in {}", root.display()))?,
        None => records
            .into_iter()
            .max_by_key(|r| r.submitted_at)
            .with_context(|| format!("no sweeps in {} (is it an artifact directory?)", root.display()))?,
    };
    let store = Arc::new(MemoryJobStore::new(RetryPolicy::default()));
    store.put_sweep(&record).await?;
    let config = SchedulerConfig { reconcile_every: None, ..SchedulerConfig::default() };
    let scheduler = Scheduler::new(store, artifacts, Arc::new(SystemClock), config);
    Ok(scheduler.report(&record.id).await?)
}
