//! `wf coordinator` and `wf worker`: the two long-running processes. Signals are handled
//! here, and only here: SIGTERM or Ctrl-C cancels the root token.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::scheduler::{JobLimit, Scheduler, SchedulerConfig, SystemClock};
use wf_coordinator::store::{JobStore, MemoryJobStore, RedisJobStore};
use wf_shared::job::RetryPolicy;
use wf_worker::device::DeviceChoice;
use wf_worker::faults::Faults;
use wf_worker::runtime::{self, RuntimeConfig};

use crate::cli::{CoordinatorArgs, LiveRetrain, WorkerArgs};
use crate::outcome::Outcome;

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("failed to start the async runtime")
}

/// A token cancelled by SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupted"),
            () = terminate => info!("SIGTERM received"),
        }
        cancel.cancel();
    });
    token
}

/// The data roots of a shared process (coordinator or worker): canonical directories;
/// none given, `synth:` datasets only.
fn data_roots(roots: &[std::path::PathBuf]) -> anyhow::Result<wf_data::dataset::DataRoots> {
    let roots = roots
        .iter()
        .map(|root| std::fs::canonicalize(root).with_context(|| format!("data root {}", root.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(wf_data::dataset::DataRoots::Only(roots))
}

pub fn coordinator(args: CoordinatorArgs) -> anyhow::Result<Outcome> {
    runtime()?.block_on(async move {
        let policy = RetryPolicy {
            max_attempts: args.max_attempts.max(1),
            max_expiries: args.max_expiries.max(1),
            backoff_base_ms: args.backoff_ms.max(0),
            backoff_cap_ms: (args.backoff_ms.max(0) * 64).max(1),
        };
        let store: Arc<dyn JobStore> = match &args.redis {
            Some(url) => {
                let options = wf_coordinator::store::RedisOptions {
                    password: match &args.redis_password_file {
                        Some(path) => std::fs::read_to_string(path)
                            .with_context(|| format!("cannot read --redis-password-file {}", path.display()))?
                            .lines()
                            .next()
                            .map(str::to_string),
                        None => args.redis_password.clone(),
                    }
                    .filter(|p| !p.is_empty()),
                    ca: args.redis_ca.clone(),
                    response_timeout: Some(std::time::Duration::from_millis(args.redis_timeout_ms.max(1))),
                };
                Arc::new(
                    RedisJobStore::connect_with(url, &args.queue, policy, &options)
                        .await
                        .with_context(|| format!("cannot use redis {}", wf_coordinator::store::redacted_url(url)))?,
                )
            }
            None => {
                warn!("no --redis: jobs live in memory and a restart loses them");
                Arc::new(MemoryJobStore::new(policy))
            }
        };
        let artifacts = ArtifactStore::open(&args.artifacts)?;
        let data_roots = data_roots(&args.data_root)?;
        let config = SchedulerConfig {
            lease_ms: args.lease_ms.max(100),
            data_roots,
            reconcile_every: Some(Duration::from_secs(args.reconcile_seconds.max(1))),
            job_limit: match args.max_job_seconds {
                None => JobLimit::FromSpec,
                Some(0) => JobLimit::Unlimited,
                Some(seconds) => JobLimit::Fixed(seconds.saturating_mul(1_000).min(i64::MAX as u64) as i64),
            },
            max_jobs_per_sweep: args.max_jobs_per_sweep.max(1),
            max_synth_cells: args.max_synth_cells,
            trainers: Arc::new(args.trainers.registry()?),
            ..SchedulerConfig::default()
        };
        let live_roots = config.data_roots.clone();
        let scheduler = Arc::new(Scheduler::new(store, artifacts, Arc::new(SystemClock), config));
        let live = match &args.live_artifacts {
            Some(location) => {
                let deployments =
                    wf_live::Deployments::within(Arc::new(ArtifactStore::open(location)?), live_roots)
                        .with_faults(Faults::from_env());
                let predictor = wf_live::Predictor::new(deployments, candle_core::Device::Cpu);
                Some(Arc::new(match args.live_retrain {
                    LiveRetrain::Workers => predictor
                        .with_trainer(Box::new(wf_coordinator::deployments::QueueTrainer::new(scheduler.clone()))),
                    LiveRetrain::Local => predictor,
                }))
            }
            None => None,
        };
        if let Some(listen) = args.metrics {
            wf_coordinator::telemetry::serve_metrics(listen, "coordinator")?;
        }
        let auth = match &args.auth {
            Some(path) => {
                let auth = wf_coordinator::auth::Auth::open(path).map_err(|e| anyhow::anyhow!(e))?;
                info!(path = %path.display(), "every sweep and worker call needs a token");
                Some(auth)
            }
            None => None,
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(
                wf_coordinator::server::ServerTls::open(cert, key, args.tls_client_ca.as_deref())
                    .map_err(|e| anyhow::anyhow!(e))?,
            ),
            _ => None,
        };
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        if auth.is_none() && !address.ip().is_loopback() {
            if !args.insecure {
                anyhow::bail!(
                    "refusing to listen on {address} without authentication: anyone who can reach it could submit, \
                     cancel and report results. Give --auth FILE (tokens from `wf auth new-token`), listen on \
                     127.0.0.1, or pass --insecure to accept the risk"
                );
            }
            warn!(%address, "listening beyond loopback WITHOUT authentication (--insecure)");
        }
        if auth.is_some() && tls.is_none() && !address.ip().is_loopback() {
            warn!(%address, "tokens travel in plaintext: give --tls-cert and --tls-key, unless a proxy or mesh terminates TLS");
        }
        // The one line scripts and tests wait for.
        println!("listening on {address}");
        info!(
            %address,
            artifacts = %args.artifacts,
            tls = tls.is_some(),
            mtls = tls.as_ref().is_some_and(wf_coordinator::server::ServerTls::verifies_clients),
            "coordinator serving"
        );
        let shutdown = shutdown_on_signals();
        let advancing = live.clone().filter(|_| args.live_advance_seconds > 0).map(|predictor| {
            let period = Duration::from_secs(args.live_advance_seconds);
            info!(seconds = args.live_advance_seconds, "advancing the live deployments whose panels hold new days");
            wf_coordinator::server::every(period, shutdown.clone(), move || {
                let predictor = predictor.clone();
                async move {
                    predictor.advance_pending().await;
                }
            })
        });
        let served = wf_coordinator::server::serve_all(scheduler, live, listener, shutdown, wf_coordinator::server::Security {
            auth,
            tls,
            limits: wf_coordinator::quota::TenantLimits {
                streams: args.max_streams_per_tenant,
                submits_per_minute: args.max_submits_per_minute,
            },
        })
            .await;
        // An advance under way runs to its end on this runtime before the runtime stops (as
        // it did when deployments had a runtime of their own); its state is saved at every
        // decision day either way.
        if let Some(task) = advancing {
            let _ = task.await;
        }
        served.context("gRPC server failed")?;
        Ok(Outcome::Success)
    })
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<Outcome> {
    let choice: DeviceChoice = args.device.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let device = choice.device()?;
    let runtime = runtime()?;
    let outcome = runtime.block_on(async move {
        let name = args.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim().chars().take(40).collect::<String>(), std::process::id())
                .trim_start_matches('-')
                .to_string()
        });
        if let Some(listen) = args.metrics {
            wf_coordinator::telemetry::serve_metrics(listen, "worker")?;
        }
        let grace = Duration::from_secs(args.grace_seconds);
        let config = RuntimeConfig {
            capacity: args.capacity.max(1),
            max_jobs: args.max_jobs,
            faults: Faults::from_env().and_then(Faults::on_workers),
            report_patience: Duration::from_secs(args.report_patience_seconds),
            grace,
            data_roots: data_roots(&args.data_root)?,
            days_above_rows: args.days_above_rows,
            trainers: std::sync::Arc::new(args.trainers.registry()?),
            token: wf_proto::auth::BearerToken::from_env_or_file(args.token_file.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?,
            tls: args.tls.options(),
            ..RuntimeConfig::new(args.coordinator.clone(), name)
        };
        let shutdown = shutdown_on_signals();
        let mut work = tokio::spawn(runtime::run(config, device, shutdown.clone()));
        let summary = tokio::select! {
            finished = &mut work => finished.context("worker task failed")??,
            () = shutdown.cancelled() => {
                // Jobs are handed back at once; give that the grace period, then go.
                match tokio::time::timeout(grace, &mut work).await {
                    Ok(finished) => finished.context("worker task failed")??,
                    Err(_) => anyhow::bail!("the worker did not stop within {} s", grace.as_secs()),
                }
            }
        };
        eprintln!(
            "worker stopped: {} completed, {} failed, {} handed back, {} abandoned",
            summary.completed, summary.failed, summary.preempted, summary.abandoned
        );
        Ok(Outcome::Success)
    });
    // Trainings handed back were told to stop, and dataset loads are abandoned: the
    // process does not wait for either.
    runtime.shutdown_background();
    outcome
}
