//! The local mode behind `wf run`: the coordinator and N workers in one process, with
//! the same code as a cluster: a real gRPC server on a loopback port, workers that lease
//! over it, and the sweep submitted and watched through the public API. The job store
//! is in memory unless a Redis URL is given; artifacts go to a local directory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use candle_core::Device;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wf_proto::v1;
use wf_shared::job::RetryPolicy;
use wf_worker::runtime::{self, RuntimeConfig, RuntimeSummary};

use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::report::SweepReport;
use wf_coordinator::report::files::Format;
use wf_coordinator::scheduler::{Scheduler, SchedulerConfig, SystemClock};
use wf_coordinator::server;
use wf_coordinator::store::{JobStore, MemoryJobStore, RedisJobStore};

/// How to run a sweep locally.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub workers: usize,
    /// Use this Redis instead of the in-memory store.
    pub redis: Option<String>,
    /// Artifact directory (or URL).
    pub artifacts: String,
    pub lease_ms: i64,
    pub retry: RetryPolicy,
    /// The external trainers registered for the run (the coordinator's and every worker's).
    pub trainers: Arc<wf_worker::external::Trainers>,
}

/// What a local run produced.
#[derive(Debug)]
pub struct LocalRun {
    pub sweep_id: String,
    pub submitted: v1::SubmitSweepResponse,
    pub progress: v1::SweepProgress,
    pub report: SweepReport,
    /// Where `report.json` was written.
    pub report_location: String,
    pub workers: Vec<RuntimeSummary>,
}

/// Runs `spec_toml` to the end; `on_progress` sees every progress event. Cancelling
/// `interrupt` cancels the sweep and returns what was done.
pub async fn run(
    spec_toml: &str,
    options: &LocalOptions,
    device: Device,
    interrupt: CancellationToken,
    mut on_progress: impl FnMut(&v1::SweepProgress),
) -> anyhow::Result<LocalRun> {
    let store: Arc<dyn JobStore> = match &options.redis {
        Some(url) => {
            let queue = format!("local-{}", std::process::id());
            Arc::new(RedisJobStore::connect(url, &queue, options.retry).await.with_context(|| format!("redis {url}"))?)
        }
        None => Arc::new(MemoryJobStore::new(options.retry)),
    };
    let artifacts = ArtifactStore::open(&options.artifacts)?;
    let config = SchedulerConfig {
        lease_ms: options.lease_ms,
        reconcile_every: None,
        trainers: options.trainers.clone(),
        ..SchedulerConfig::default()
    };
    let scheduler = Arc::new(Scheduler::new(store, artifacts.clone(), Arc::new(SystemClock), config));

    let listener = TcpListener::bind("127.0.0.1:0").await.context("failed to bind a loopback port")?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::serve(scheduler.clone(), listener, shutdown.clone()));
    let url = format!("http://{address}");

    let stop_workers = CancellationToken::new();
    let mut workers = Vec::new();
    for index in 0..options.workers.max(1) {
        let config = RuntimeConfig {
            poll: Duration::from_secs(1),
            trainers: options.trainers.clone(),
            ..RuntimeConfig::new(url.clone(), format!("local-{index}"))
        };
        workers.push(tokio::spawn(runtime::run(config, device.clone(), stop_workers.child_token())));
    }

    let outcome = drive(&url, spec_toml, &interrupt, &mut on_progress).await;
    // Workers first, then the server: a worker stopped mid-job hands it back to the
    // server, which must still be listening.
    stop_workers.cancel();
    let mut summaries = Vec::new();
    for worker in workers {
        if let Ok(Ok(summary)) = worker.await {
            summaries.push(summary);
        }
    }
    shutdown.cancel();
    let _ = server.await;
    let (submitted, progress, report) = outcome?;
    let id = submitted.sweep_id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    // report.json, the CSV tables, the plots and report.html (last: its location is returned).
    let files = wf_coordinator::report::files::render(
        &report,
        &[Format::Json, Format::Csv, Format::Parquet, Format::Png, Format::Html],
    )?;
    let mut report_location = String::new();
    for (name, bytes) in files {
        report_location = artifacts.put_report(&id, &name, bytes.into()).await?;
    }
    Ok(LocalRun {
        sweep_id: submitted.sweep_id.clone(),
        submitted,
        progress,
        report,
        report_location,
        workers: summaries,
    })
}

/// Submits, watches until the sweep ends (or cancels it on `interrupt`), fetches the report.
async fn drive(
    url: &str,
    spec_toml: &str,
    interrupt: &CancellationToken,
    on_progress: &mut impl FnMut(&v1::SweepProgress),
) -> anyhow::Result<(v1::SubmitSweepResponse, v1::SweepProgress, SweepReport)> {
    let mut client = crate::client::connect(url, wf_proto::auth::BearerToken::default(), &Default::default()).await?;
    let submitted = client
        .submit_sweep(v1::SubmitSweepRequest { spec_toml: spec_toml.to_string() })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    let id = submitted.sweep_id.clone();
    let last = crate::client::watch(&mut client, &id, interrupt, on_progress).await?;
    let report = crate::client::report(&mut client, &id).await?;
    Ok((submitted, last, report))
}
