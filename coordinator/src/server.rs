//! The coordinator's gRPC server: `SweepService`, `WorkerService`, `LiveService` (with
//! `--live-artifacts`), `grpc.health.v1` and server reflection (so `grpcurl` works),
//! plus the lease reaper, the reconciler and the live deployments' metrics.
//!
//! It takes a bound listener and a cancellation token; only `main` binds addresses and
//! installs signal handlers. On shutdown health turns NOT_SERVING, the reaper stops and
//! in-flight calls finish.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use wf_proto::v1::live_service_server::LiveServiceServer;
use wf_proto::v1::sweep_service_server::SweepServiceServer;
use wf_proto::v1::worker_service_server::WorkerServiceServer;

use tonic::service::interceptor::InterceptedService;

use crate::auth::{Auth, Gate, Role};
use crate::quota::{Quota, TenantLimits};
use crate::scheduler::Scheduler;
use crate::service::{Predictions, Sweeps, Workers};
use wf_live::Predictor;

/// Largest message accepted from a worker (a job result with drift counts is well under
/// this; what it may decode to is bounded by `wf_proto::budget`).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest request accepted on `SweepService`: a spec is at most 1 MiB
/// ([`wf_shared::spec::MAX_SPEC_BYTES`]); between that and this it is refused by name.
const MAX_SWEEP_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// A server running: what [`serve`], [`serve_with`] and [`serve_all`] return.
///
/// Boxed, so that the server's code (its handlers, the scheduler under them) is
/// compiled once, in this crate: an `async fn`'s body is compiled again in every crate
/// that awaits it, and the app crate awaiting the server compiled all of it a second
/// time (docs/BENCHMARKS.md, "The build").
pub type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// Serves `scheduler` on `listener` until `shutdown` is cancelled, without
/// authentication (every caller is the local admin: loopback only).
pub fn serve(scheduler: Arc<Scheduler>, listener: TcpListener, shutdown: CancellationToken) -> Serving {
    serve_with(scheduler, listener, shutdown, Security::default())
}

/// How the server is protected: tokens ([`Auth`]), TLS ([`ServerTls`]) and per-tenant
/// limits; the default is no tokens and no TLS (loopback only) with the default limits.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub auth: Option<Auth>,
    pub tls: Option<ServerTls>,
    /// Per-tenant open streams and submit rate.
    pub limits: TenantLimits,
}

/// The server's TLS: its certificate chain and key (PEM), and optionally the CA whose
/// client certificates it verifies (mTLS). With a client CA, a client certificate is
/// optional at the handshake (a user's `wf` may have none) but required by every
/// `WorkerService` call: workers prove who they are twice, by certificate and token.
#[derive(Clone)]
pub struct ServerTls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServerTls").field("client_ca", &self.client_ca.is_some()).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM bytes (tests).
    pub fn from_pem(cert: Vec<u8>, key: Vec<u8>, client_ca: Option<Vec<u8>>) -> Self {
        Self { cert, key, client_ca }
    }

    /// Reads `--tls-cert`, `--tls-key` and `--tls-client-ca`; the error names the option.
    pub fn open(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        use wf_proto::tls::read_pem;
        Ok(Self {
            cert: read_pem(cert, "certificate (--tls-cert)")?,
            key: read_pem(key, "key (--tls-key)")?,
            client_ca: client_ca.map(|path| read_pem(path, "client CA (--tls-client-ca)")).transpose()?,
        })
    }

    /// Whether client certificates are verified (and required of workers).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    fn config(&self) -> tonic::transport::ServerTlsConfig {
        let mut config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert, &self.key));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca)).client_auth_optional(true);
        }
        config
    }
}

/// [`serve`], with every sweep and worker RPC behind `security.auth` when given (health
/// and reflection stay open; the tokens file is watched for changes), over TLS when
/// `security.tls` is given.
pub fn serve_with(
    scheduler: Arc<Scheduler>,
    listener: TcpListener,
    shutdown: CancellationToken,
    security: Security,
) -> Serving {
    serve_all(scheduler, None, listener, shutdown, security)
}

/// Runs `work` now, then `period` after each run ends, until `shutdown`: each run on a
/// thread of the blocking pool, awaited there on this runtime, so work that scores or
/// trains between its awaits (a deployment's advance) never holds up the threads that
/// answer calls. Needs a multi-thread runtime (on a current-thread one nothing would
/// drive the work's I/O while the runtime's own thread waits).
pub fn every<F>(
    period: std::time::Duration,
    shutdown: CancellationToken,
    work: impl Fn() -> F + Clone + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()>,
{
    tokio::spawn(async move {
        loop {
            let (runtime, work) = (tokio::runtime::Handle::current(), work.clone());
            let _ = tokio::task::spawn_blocking(move || runtime.block_on(work())).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
    })
}

/// How often a coordinator serving deployments refreshes their `wf_live_*` metrics.
const LIVE_METRICS_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

/// [`serve_with`], also serving `live`'s deployments (`LiveService`, behind the same
/// tokens as `SweepService`) and refreshing their metrics.
pub fn serve_all(
    scheduler: Arc<Scheduler>,
    live: Option<Arc<Predictor>>,
    listener: TcpListener,
    shutdown: CancellationToken,
    security: Security,
) -> Serving {
    Box::pin(serving(scheduler, live, listener, shutdown, security))
}

async fn serving(
    scheduler: Arc<Scheduler>,
    live: Option<Arc<Predictor>>,
    listener: TcpListener,
    shutdown: CancellationToken,
    security: Security,
) -> Result<(), tonic::transport::Error> {
    let Security { auth, tls, limits } = security;
    let live_gate = Gate::new(auth.clone(), &[Role::User, Role::Admin], "LiveService");
    let live_metrics = live.clone().map(|predictor| {
        every(LIVE_METRICS_PERIOD, shutdown.clone(), move || {
            let predictor = predictor.clone();
            async move { predictor.publish_metrics().await }
        })
    });
    if let Some(auth) = auth.clone() {
        tokio::spawn(auth.watch_until(shutdown.clone()));
    }
    let sweep_gate = Gate::new(auth.clone(), &[Role::User, Role::Admin], "SweepService");
    let worker_gate = Gate::new(auth, &[Role::Worker, Role::Admin], "WorkerService")
        .with_client_certificate(tls.as_ref().is_some_and(ServerTls::verifies_clients));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SweepServiceServer<Sweeps>>().await;
    health.set_serving::<WorkerServiceServer<Workers>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(wf_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .unwrap_or_else(|error| unreachable!("the compiled descriptor sets are valid: {error}"));

    let reaper = tokio::spawn({
        let scheduler = scheduler.clone();
        let shutdown = shutdown.clone();
        async move { scheduler.reap_until(shutdown).await }
    });
    let reconciler = tokio::spawn({
        let scheduler = scheduler.clone();
        let shutdown = shutdown.clone();
        async move { scheduler.reconcile_until(shutdown).await }
    });
    let stopping = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health.set_not_serving::<SweepServiceServer<Sweeps>>().await;
            health.set_not_serving::<WorkerServiceServer<Workers>>().await;
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.config())?;
    }
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            SweepServiceServer::new(Sweeps(scheduler.clone(), Quota::new(limits)))
                .max_decoding_message_size(MAX_SWEEP_REQUEST_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            sweep_gate,
        ))
        .add_service(InterceptedService::new(
            WorkerServiceServer::new(Workers(scheduler)).max_decoding_message_size(MAX_MESSAGE_BYTES),
            worker_gate,
        ))
        .add_optional_service(live.map(|predictor| {
            InterceptedService::new(
                LiveServiceServer::new(Predictions(predictor)).max_decoding_message_size(MAX_SWEEP_REQUEST_BYTES),
                live_gate,
            )
        }))
        // No Nagle: a small answer waiting for the peer's delayed ACK costs ~40 ms per call.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(std::time::Duration::from_secs(30))),
            stopping,
        )
        .await;
    let _ = reaper.await;
    let _ = reconciler.await;
    if let Some(task) = live_metrics {
        let _ = task.await;
    }
    result
}
