//! Orchestration overhead: jobs per second through the coordinator with a no-op trainer.
//!
//! A real coordinator (the `wf coordinator` server code: tonic over a loopback TCP socket,
//! the scheduler, the artifact store in a temporary directory) and a real
//! `redis-server` started here. N worker connections (one HTTP/2 connection each) loop
//! LeaseJob → ReportResult with a ready-made result of a realistic size (63 scored ages,
//! drift of 12 features) and its job's identity (a real `JobIdentity` text, ~0.9 KB), so
//! what is measured is everything but training: the RPCs, the Lua transitions, the
//! fenced result check, the identity check (its hash must be the job key), sealing the
//! result with its checksum, the guarded commit and then the durable result write (flushed
//! to disk). The in-memory store runs
//! in the same process as the reference.
//!
//! `cargo bench -p wf-coordinator --bench orchestration [-- --jobs N] [--connections N]`
//!
//! Prints jobs/s and the lease→report round trip p50/p99 at 1, 2, 4 and 8 connections,
//! for Redis with two round trips per job (LeaseJob, ReportResult) and with one
//! (ReportResult asking for the next lease, as `wf-worker` does), and for the in-memory
//! store. Target (ISSUE 5): ≥ 5,000 jobs/s, p99 < 5 ms.
//!
//! Then, at 4 and 8 connections, Redis with one round trip three ways in the same run:
//! no authentication over plaintext, bearer tokens over plaintext, and tokens over TLS
//! with client certificates (mTLS, as the manifests deploy it). Target (issue 16):
//! ≥ 4,000 jobs/s with tokens and TLS.
//!
//! `WF_BENCH_NO_RANKINGS=1` reports results without their rankings (to measure what
//! keeping them costs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::auth::{Auth, Role, add_token};
use wf_coordinator::scheduler::{Scheduler, SchedulerConfig, SystemClock};
use wf_coordinator::server::{Security, ServerTls};
use wf_coordinator::store::{JobStore, MemoryJobStore, RedisJobStore, SweepRecord};
use wf_coordinator::testing::RedisServer;
use wf_proto::auth::BearerToken;
use wf_proto::v1;
use wf_proto::v1::worker_service_client::WorkerServiceClient;
use wf_shared::DatasetRef;
use wf_shared::job::{RetryPolicy, SweepId};
use wf_shared::plan::{JobIdentity, JobKey};

// The allocator of the `wf` and `wf-worker` binaries, so the figures are theirs.
#[global_allocator]
static GLOBAL: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

const CONNECTIONS: [usize; 4] = [1, 2, 4, 8];
const POLICY: RetryPolicy =
    RetryPolicy { max_attempts: 3, max_expiries: 6, backoff_base_ms: 1_000, backoff_cap_ms: 60_000 };

type Outcome<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What one level measured.
struct Level {
    jobs: usize,
    seconds: f64,
    round_trips: Vec<Duration>,
}

impl Level {
    /// jobs/s, p50 and p99, as a table cell.
    fn cell(&self) -> String {
        format!(
            "{:>8.0} {:>8.2} {:>8.2}",
            self.jobs as f64 / self.seconds,
            self.percentile(0.50),
            self.percentile(0.99)
        )
    }

    fn percentile(&self, p: f64) -> f64 {
        let index = ((self.round_trips.len() as f64 - 1.0) * p).round() as usize;
        self.round_trips.get(index).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }
}

/// Each job's identity as a worker reports it, by key: a real identity of the
/// quickstart's `mlp` model, one per (run, job) seed.
type Identities = Arc<HashMap<String, String>>;

fn identities(run: u64, count: usize) -> Outcome<(Vec<JobKey>, Identities)> {
    let config = wf_shared::spec::SweepConfig::from_toml(include_str!("../../configs/quickstart.toml"))?;
    let model = wf_shared::model::ModelSpec::resolve(1, &config).map_err(|e| e.to_string())?;
    let date = chrono::NaiveDate::from_ymd_opt(2022, 1, 3).ok_or("date")?;
    let mut keys = Vec::with_capacity(count);
    let mut map = HashMap::with_capacity(count);
    for n in 0..count as u64 {
        let identity = JobIdentity {
            format: wf_shared::plan::JOB_FORMAT.into(),
            trainer: wf_shared::model::TRAINER_VERSION,
            data: wf_shared::plan::DataRead { days: [date, date], digest: wf_shared::DatasetHash::from_bytes([7; 32]) },
            // As many features as the ready-made result's drift has (the coordinator checks
            // a result's shape against its identity before decoding it).
            features: wf_shared::FEATURES.iter().take(12).map(|f| f.name.to_string()).collect(),
            model: model.clone(),
            seed: run << 32 | n,
            train: [date, date],
            horizons: config.horizons.clone(),
            primary_horizon: config.primary_horizon,
            k: config.k,
            embargo: 0,
            // 63 scored ages: about three calendar months.
            score: Some([date, date + chrono::Days::new(91)]),
            ranks: None,
        }
        .to_canonical();
        let key = JobKey::of_identity(&identity);
        keys.push(key);
        map.insert(key.to_string(), identity);
    }
    Ok((keys, Arc::new(map)))
}

/// Queues `keys` as the jobs of one sweep in `store`.
async fn queue(store: &Arc<dyn JobStore>, run: u64, keys: Vec<JobKey>) -> Outcome<()> {
    let id = SweepId::from_entropy(run);
    let count = keys.len();
    let record = SweepRecord {
        id: id.clone(),
        name: format!("bench-{run}"),
        spec_toml: include_str!("../../configs/quickstart.toml").to_string(),
        dataset: DatasetRef { uri: "synth:bench".into(), content_hash: wf_shared::DatasetHash::from_bytes([7; 32]) },
        jobs: keys.clone(),
        precomputed: Vec::new(),
        jobs_before_dedup: count as u64,
        submitted_at: 0,
        cancelled: false,
        max_job_ms: None,
        tenant: "t".into(),
        training: None,
    };
    store.put_sweep(&record).await?;
    let now = chrono::Utc::now().timestamp_millis() - 1;
    store.enqueue(&id, &keys, now).await?;
    Ok(())
}

/// How a worker connection gets its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// LeaseJob, then ReportResult: two round trips per job.
    Separate,
    /// ReportResult with `lease_next`, which returns the next lease (as `wf-worker`
    /// does): one round trip per job, LeaseJob only for the first.
    Combined,
}

/// One worker connection: lease and report until the queue is empty. Returns each job's
/// round trips from lease to committed report (with `Combined`, the report call that
/// also leased the next job, plus any LeaseJob call the job needed).
async fn worker(access: Access, name: String, protocol: Protocol, identities: Identities) -> Outcome<Vec<Duration>> {
    let channel = wf_proto::tls::endpoint(&access.url, &access.tls)?.connect().await?;
    let mut client =
        WorkerServiceClient::with_interceptor(channel, access.token.clone()).max_decoding_message_size(64 << 20);
    let worker_id = client
        .register_worker(v1::RegisterWorkerRequest {
            protocol_version: wf_proto::PROTOCOL_VERSION,
            trainer_version: wf_shared::model::TRAINER_VERSION,
            name,
            device: "noop".into(),
            capacity: 1,
        })
        .await?
        .into_inner()
        .worker_id;
    let mut round_trips = Vec::new();
    let mut next = None;
    // Built once: making a result is the trainer's work, not the orchestration's.
    let mut result = wf_coordinator::testing::noop_result();
    // For measuring what the rankings cost (issue 17): results without them.
    if std::env::var_os("WF_BENCH_NO_RANKINGS").is_some() {
        result.rankings = None;
    }
    loop {
        let started = Instant::now();
        let lease = match next.take() {
            Some(lease) => lease,
            None => {
                let leased = client
                    .lease_job(v1::LeaseJobRequest {
                        worker_id: worker_id.clone(),
                        wait_ms: 0,
                        holding: Vec::new(),
                        reports_holding: false,
                    })
                    .await?;
                let Some(lease) = leased.into_inner().lease else { return Ok(round_trips) };
                lease
            }
        };
        let identity = identities.get(&lease.job_key).ok_or("a lease of an unknown job")?.clone();
        let reported = client
            .report_result(v1::ReportResultRequest {
                worker_id: worker_id.clone(),
                job_key: lease.job_key,
                attempt: lease.attempt,
                epoch: lease.epoch,
                result: Some(v1::JobResult { identity, ..result.clone() }),
                lease_next: protocol == Protocol::Combined,
            })
            .await?;
        next = reported.into_inner().next;
        round_trips.push(started.elapsed());
    }
}

/// How the server is protected in a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// No tokens, plaintext (as `wf run`).
    Open,
    /// Bearer tokens (a tokens file), plaintext.
    Tokens,
    /// Bearer tokens over TLS, with client certificates verified (mTLS), as the
    /// Kubernetes manifests deploy it.
    TokensMtls,
}

/// How a worker connection reaches the server.
#[derive(Debug, Clone)]
struct Access {
    url: String,
    tls: wf_proto::tls::ClientTls,
    token: BearerToken,
}

/// A CA, a server certificate for 127.0.0.1 and a worker's client certificate, as PEM
/// files in `dir`: (server cert, server key, CA).
fn certificates(dir: &std::path::Path) -> Outcome<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&server_key, &issuer)?;
    let client_key = KeyPair::generate()?;
    let client = CertificateParams::new(Vec::<String>::new())?.signed_by(&client_key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("client.pem"), client.pem())?;
    std::fs::write(dir.join("client.key"), client_key.serialize_pem())?;
    Ok((server.pem().into_bytes(), server_key.serialize_pem().into_bytes(), ca.pem().into_bytes()))
}

/// Serves a fresh scheduler over `store`, queues `jobs` and drains them with `connections`.
async fn level(
    store: Arc<dyn JobStore>,
    run: u64,
    jobs: usize,
    connections: usize,
    protocol: Protocol,
    guard: Guard,
) -> Outcome<Level> {
    let dir = match std::env::var_os("WF_BENCH_ARTIFACTS") {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let artifacts = ArtifactStore::open(&dir.path().display().to_string())?;
    let config = SchedulerConfig { lease_ms: 30_000, ..SchedulerConfig::default() };
    let scheduler = Arc::new(Scheduler::new(store.clone(), artifacts, Arc::new(SystemClock), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    let secrets = tempfile::tempdir()?;
    let mut security = Security::default();
    let mut access = Access { url: format!("http://{local}"), tls: Default::default(), token: BearerToken::default() };
    if guard != Guard::Open {
        let tokens = secrets.path().join("tokens");
        let token = add_token(&tokens, "pool", Role::Worker)?;
        security.auth = Some(Auth::open(&tokens)?);
        access.token = BearerToken::new(Some(&token))?;
    }
    if guard == Guard::TokensMtls {
        let (cert, key, ca) = certificates(secrets.path())?;
        security.tls = Some(ServerTls::from_pem(cert, key, Some(ca)));
        access.url = format!("https://{local}");
        access.tls = wf_proto::tls::ClientTls {
            ca: Some(secrets.path().join("ca.pem")),
            cert: Some(secrets.path().join("client.pem")),
            key: Some(secrets.path().join("client.key")),
            domain: None,
        };
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(wf_coordinator::server::serve_with(scheduler, listener, shutdown.clone(), security));
    let (keys, identities) = identities(run, jobs)?;
    queue(&store, run, keys).await?;

    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(worker(access.clone(), format!("bench-{run}-{c}"), protocol, identities.clone())))
        .collect();
    let mut round_trips = Vec::with_capacity(jobs);
    for handle in workers {
        round_trips.extend(handle.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    server.await??;
    if round_trips.len() != jobs {
        return Err(format!("{} of {jobs} jobs were reported", round_trips.len()).into());
    }
    let depth = store.depth().await?;
    if depth.queued + depth.leased != 0 {
        return Err(format!("jobs left behind: {depth:?}").into());
    }
    round_trips.sort();
    Ok(Level { jobs, seconds, round_trips })
}

/// The two header lines of a table of three measured columns.
fn header(columns: [&str; 3]) {
    println!("{:<6} {:>6} | {:>26} | {:>26} | {:>26}", "", "", columns[0], columns[1], columns[2]);
    let cell = format!("{:>8} {:>8} {:>8}", "jobs/s", "p50 ms", "p99 ms");
    println!("{:<6} {:>6} | {cell} | {cell} | {cell}", "conns", "jobs");
}

/// The value after `--name` on the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> Outcome<()> {
    let jobs = arg("--jobs").and_then(|n| n.parse().ok()).unwrap_or(4_000);
    // `--connections N` measures one level only (for profiling).
    let levels: Vec<usize> = match arg("--connections").and_then(|n| n.parse().ok()) {
        Some(n) => vec![n],
        None => CONNECTIONS.to_vec(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let redis = RedisServer::start()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("orchestration overhead, no-op trainer: {jobs} jobs per level, {cores} cores");
    println!("(coordinator, redis-server and the workers share this machine)");
    println!();
    println!("lease and report: two round trips per job (LeaseJob, ReportResult) or one (ReportResult");
    println!("with lease_next, as wf-worker does); round trip = a job's lease to its committed report");
    println!();
    header(["redis, 2 round trips", "redis, 1 round trip", "memory, 1 round trip"]);
    runtime.block_on(async {
        // Warm-up: connections, scripts, page cache.
        let store: Arc<dyn JobStore> = Arc::new(RedisJobStore::connect(&redis.url(), "warmup", POLICY).await?);
        level(store, 1, 200, 2, Protocol::Combined, Guard::Open).await?;
        let mut run = 10;
        // The best Redis one-round-trip level, and the best with tokens and mTLS: (jobs/s, p99 ms).
        let (mut best_plain, mut best_secure) = ((0.0_f64, f64::INFINITY), (0.0_f64, f64::INFINITY));
        for connections in levels.iter().copied() {
            let mut cells = Vec::new();
            for (redis_store, protocol) in
                [(true, Protocol::Separate), (true, Protocol::Combined), (false, Protocol::Combined)]
            {
                run += 1;
                let store: Arc<dyn JobStore> = if redis_store {
                    Arc::new(RedisJobStore::connect(&redis.url(), &format!("bench{run}"), POLICY).await?)
                } else {
                    Arc::new(MemoryJobStore::new(POLICY))
                };
                let measured = level(store, run, jobs, connections, protocol, Guard::Open).await?;
                if redis_store && protocol == Protocol::Combined {
                    let rate = measured.jobs as f64 / measured.seconds;
                    if rate > best_plain.0 {
                        best_plain = (rate, measured.percentile(0.99));
                    }
                }
                cells.push(measured.cell());
            }
            println!("{:<6} {:>6} | {}", connections, jobs, cells.join(" | "));
        }
        let mut targets = wf_shared::targets::Targets::default();
        println!();
        println!(
            "target: >= 5,000 jobs/s and p99 < 5 ms; best Redis level with one round trip {:.0} jobs/s: {}, its p99 {:.2} ms: {}",
            best_plain.0,
            targets.at_least("jobs/s, Redis, 1 round trip", best_plain.0, 5_000.0),
            best_plain.1,
            targets.at_most("p99 ms of that level", best_plain.1, 5.0)
        );
        println!();
        println!("security (issue 16): redis, 1 round trip; the three side by side, alternating");
        header(["no auth, plaintext", "tokens, plaintext", "tokens + mTLS"]);
        for connections in levels.iter().copied().filter(|&c| c >= 4) {
            let mut cells = Vec::new();
            for guard in [Guard::Open, Guard::Tokens, Guard::TokensMtls] {
                run += 1;
                let store: Arc<dyn JobStore> =
                    Arc::new(RedisJobStore::connect(&redis.url(), &format!("bench{run}"), POLICY).await?);
                let measured = level(store, run, jobs, connections, Protocol::Combined, guard).await?;
                if guard == Guard::TokensMtls {
                    let rate = measured.jobs as f64 / measured.seconds;
                    if rate > best_secure.0 {
                        best_secure = (rate, measured.percentile(0.99));
                    }
                }
                cells.push(measured.cell());
            }
            println!("{:<6} {:>6} | {}", connections, jobs, cells.join(" | "));
        }
        println!();
        println!(
            "target: >= 4,000 jobs/s with tokens and TLS; best {:.0} jobs/s: {}",
            best_secure.0,
            targets.at_least("jobs/s with tokens and mTLS", best_secure.0, 4_000.0)
        );
        println!("{}", targets.summary());
        if targets.exit_code() != 0 {
            return Err(targets.summary().into());
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    Ok(())
}
