//! Command-line arguments (clap derive). Every option also reads `WF_…` from the
//! environment where that makes sense for servers; data commands take explicit paths.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "wf", version, about = "walk-forward retraining of stock-ranking models")]
pub struct Args {
    /// Log format on stderr (`WF_LOG` sets the filter, e.g. `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WF_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `wf-worker`: the worker alone (the same as `wf worker`), for worker images.
#[derive(Debug, Parser)]
#[command(name = "wf-worker", version, about = "walkforward worker: leases jobs from a coordinator and trains them")]
pub struct WorkerOnlyArgs {
    /// Log format on stderr (`WF_LOG` sets the filter, e.g. `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WF_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// The environment variables `main` sets before any thread starts, for the jobs
/// `command` runs at once: [`wf_worker::threads::env_for`].
pub fn thread_env(command: &Command) -> Vec<(&'static str, String)> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    wf_worker::threads::env_for(match command {
        Command::Run(args) => args.workers.unwrap_or(cpus),
        Command::Worker(args) => args.capacity,
        _ => 1,
    })
}

/// Whether `command` trains models (and so keeps freed memory for speed, see
/// `wf_worker::allocator`); the data commands and the planner return what they free.
pub fn trains(command: &Command) -> bool {
    !matches!(command, Command::Data(_) | Command::Plan(_))
}

/// Where a coordinator's live retrains train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LiveRetrain {
    /// On the workers, through the queue.
    Workers,
    /// In the coordinator's process.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Market data: synthesise, prepare panels, check quality, hash.
    #[command(subcommand)]
    Data(DataCommand),
    /// Plan a sweep: jobs per window and cadence, distinct trainings, the split audit.
    Plan(PlanArgs),
    /// Train and score one job of a sweep locally, and print its metrics.
    Train(TrainArgs),
    /// Run a sweep locally: a coordinator and N workers in this process, then a summary.
    Run(RunArgs),
    /// Serve the coordinator (gRPC: sweeps, workers, health, reflection).
    Coordinator(CoordinatorArgs),
    /// Run a worker that leases jobs from a coordinator.
    Worker(WorkerArgs),
    /// Submit a sweep spec to a coordinator; prints the sweep id.
    Submit(SubmitArgs),
    /// Show a sweep's progress (`--watch`: a live progress bar until it ends).
    Status(StatusArgs),
    /// List the coordinator's sweeps.
    List(ConnectArgs),
    /// Cancel a sweep: no more leases; busy workers stop at their next heartbeat.
    Cancel(SweepArgs),
    /// Print a sweep's report (summary table, or `--json`).
    Report(ReportArgs),
    /// Tokens for a coordinator with authentication.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Live retraining: deployments that decide, retrain, promote and roll back day by day.
    #[command(subcommand)]
    Live(LiveCommand),
    /// A deployment's ranking of a day: codes, scores and the version that made them.
    Predict(PredictArgs),
}

/// Where deployments live.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveStoreArgs {
    /// Artifact store (directory or URL) holding the deployments under `live/`.
    #[arg(long, default_value = "out/live", env = "WF_LIVE_ARTIFACTS")]
    pub artifacts: String,
}

/// One deployment's line and policy, as `wf live simulate` and `wf live deploy` take them.
#[derive(Debug, Clone, clap::Args)]
pub struct LineArgs {
    /// Sweep spec (TOML): the dataset, the plan and the model's configuration.
    pub spec: PathBuf,
    /// The model's name in the spec.
    #[arg(long)]
    pub model: String,
    /// Train window (trading days; one of the spec's).
    #[arg(long)]
    pub window: u32,
    /// A cadence of the spec (`monthly`, `21d`, …) or a policy as reports name it, e.g.
    /// "ΔP@K<-0.02 over 21d or age>=63d" (`dP@K` for `ΔP@K`).
    #[arg(long)]
    pub policy: String,
    /// The model's seed (default: its first).
    #[arg(long)]
    pub seed: Option<u64>,
    /// First date (default: the spec's start): the first model is retrained on the
    /// first planned retrain date on or after it.
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub line: LineArgs,
    /// The deployment's id (default: model, window and a hash of the rest).
    #[arg(long)]
    pub id: Option<String>,
    /// Run each retrained version in shadow for this many trading days: it replaces the
    /// live version once their labels have matured, only if its mean ΔP@K over them is
    /// at least the live version's (0: promoted when trained).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=252))]
    pub shadow: u32,
    /// The tenant the deployment belongs to: a coordinator serves its predictions only to
    /// that tenant's tokens (and admins).
    #[arg(long, default_value = wf_coordinator::auth::LOCAL_TENANT)]
    pub tenant: String,
    #[command(flatten)]
    pub store: LiveStoreArgs,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
}

#[derive(Debug, clap::Args)]
pub struct AdvanceArgs {
    /// The deployment.
    pub id: String,
    /// Process days up to this date (default: the panel's last).
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
    #[command(flatten)]
    pub store: LiveStoreArgs,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
}

#[derive(Debug, clap::Args)]
pub struct LiveIngestArgs {
    /// The deployment.
    pub id: String,
    #[command(flatten)]
    pub days: NewDaysArgs,
    #[command(flatten)]
    pub store: LiveStoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct LiveIdArgs {
    /// The deployment (all of them when omitted, for `status`).
    pub id: Option<String>,
    #[command(flatten)]
    pub store: LiveStoreArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The deployment.
    pub id: String,
    /// The version to make live (default: the one live before the current one).
    #[arg(long)]
    pub to: Option<u32>,
    #[command(flatten)]
    pub store: LiveStoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// The deployment.
    pub id: String,
    /// The day to rank (default: the last day the deployment processed).
    #[arg(long)]
    pub date: Option<chrono::NaiveDate>,
    /// How many codes (default: the spec's K).
    #[arg(long)]
    pub k: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: LiveStoreArgs,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
    /// Ask this coordinator (`LiveService.Predict`, started with `--live-artifacts`)
    /// instead of ranking here.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// A file whose first line is this client's token (`WF_TOKEN`, when set, wins).
    #[arg(long, env = "WF_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum LiveCommand {
    /// Feed historical days one by one through the live decisions of one deployment
    /// (model, window, seed, policy): train only the retrains it decides, and write its
    /// decisions, versions and daily out-of-sample series.
    Simulate(SimulateArgs),
    /// Create a deployment and train its first version.
    Deploy(DeployArgs),
    /// Add later days of OHLCV to a deployment's panel file (as `wf data ingest`); the
    /// next `advance` processes them.
    Ingest(LiveIngestArgs),
    /// Process a deployment's days after its last one: mature labels, decide, retrain,
    /// promote (safe to kill and run again).
    Advance(AdvanceArgs),
    /// A deployment's live version, age, recent skill and decisions (all, without ID).
    Status(LiveIdArgs),
    /// The deployments.
    List(LiveIdArgs),
    /// Switch a deployment back to an earlier version, at once.
    Rollback(RollbackArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub line: LineArgs,
    /// Last date processed (default: the last date a job scores).
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
    /// Artifacts (as `wf run` writes them: `OUT/artifacts`): committed results of the
    /// same jobs are reused after verification, new ones are written there.
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Output directory: decisions.csv, versions.csv, daily.csv and live.json.
    #[arg(long, default_value = "out/live")]
    pub out: PathBuf,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Appends a new token of TENANT and ROLE (its hash) to the tokens file and prints
    /// the token, once, on stdout.
    NewToken {
        /// The tenant: 1 to 64 of a-z, 0-9, - and _.
        #[arg(long)]
        tenant: String,
        /// user (sweeps of its tenant), worker (worker calls only) or admin (everything).
        #[arg(long)]
        role: String,
        /// The coordinator's tokens file (`--auth`), created if missing.
        #[arg(long)]
        file: PathBuf,
    },
}

/// External trainers registered here (`docs/TRAINERS.md`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainerArgs {
    /// Registers a trainer program: NAME=PATH (repeatable). A spec names it as
    /// `kind = "external", params = { trainer = "NAME" }`.
    #[arg(long = "trainer", value_name = "NAME=PATH")]
    pub trainer: Vec<String>,
    /// The `--trainer` programs run in the persistent mode: started once, handed one job
    /// after another over stdin and stdout (docs/TRAINERS.md).
    #[arg(long, requires = "trainer")]
    pub persistent: bool,
    /// A trainers file: `[trainers.NAME]` tables of `program` and `files` (docs/TRAINERS.md).
    #[arg(long, env = "WF_TRAINERS")]
    pub trainers: Option<PathBuf>,
    /// The address-space limit of each trainer process, e.g. 8G or 512M (RLIMIT_AS).
    #[arg(long, env = "WF_TRAINER_MEMORY")]
    pub trainer_memory: Option<String>,
    /// Where trainers' job directories are made and their models kept (default: the
    /// system's temporary folder, `walkforward-trainers/`).
    #[arg(long, env = "WF_TRAINER_DIR")]
    pub trainer_dir: Option<PathBuf>,
}

impl TrainerArgs {
    /// The registry these flags describe (each program hashed and asked its version).
    pub fn registry(&self) -> anyhow::Result<wf_worker::external::Trainers> {
        let mut trainers = wf_worker::external::Trainers::default();
        if let Some(file) = &self.trainers {
            trainers.register_file(file).map_err(|e| anyhow::anyhow!(e))?;
        }
        for flag in &self.trainer {
            trainers.register_flag(flag, self.persistent).map_err(|e| anyhow::anyhow!(e))?;
        }
        trainers.memory = self.trainer_memory.as_deref().map(parse_bytes).transpose()?;
        trainers.work = self.trainer_dir.clone();
        Ok(trainers)
    }
}

/// A size in bytes, with an optional K, M, G or T suffix (powers of 1024).
fn parse_bytes(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => anyhow::bail!("--trainer-memory {text:?}: expected bytes with K, M, G or T, e.g. 8G"),
    };
    let value: u64 =
        number.trim().parse().map_err(|_| anyhow::anyhow!("--trainer-memory {text:?}: not a size, e.g. 8G"))?;
    value
        .checked_mul(1 << shift)
        .filter(|bytes| *bytes >= 1 << 20)
        .ok_or_else(|| anyhow::anyhow!("--trainer-memory {text:?}: must be between 1M and 16E"))
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Sweep spec (TOML).
    pub spec: PathBuf,
    /// Workers in this process (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Use this Redis for the queue instead of the in-memory store.
    #[arg(long, env = "WF_REDIS_URL")]
    pub redis: Option<String>,
    /// Output directory: artifacts (manifests, results) and reports.
    #[arg(long, default_value = "out/run")]
    pub out: PathBuf,
    /// Artifact store instead of OUT/artifacts: a directory or a URL (`s3://bucket/prefix`
    /// in builds with the `s3` feature, configured from the environment: deploy/README.md).
    #[arg(long, env = "WF_ARTIFACTS")]
    pub artifacts: Option<String>,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
    /// Print the report as JSON instead of the summary table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trainers: TrainerArgs,
}

/// Settings of the job queue shared by `wf coordinator` (and tests).
#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051", env = "WF_LISTEN")]
    pub listen: String,
    /// Redis URL for the queue and job states; without it, an in-memory store that a
    /// restart loses (for trying things out).
    #[arg(long, env = "WF_REDIS_URL")]
    pub redis: Option<String>,
    /// Queue name (the Redis hash tag of its keys).
    #[arg(long, default_value = "default", env = "WF_QUEUE")]
    pub queue: String,
    /// Artifact store: a directory or a URL.
    #[arg(long, default_value = "artifacts", env = "WF_ARTIFACTS")]
    pub artifacts: String,
    /// Lease length without a heartbeat, in milliseconds.
    #[arg(long, default_value_t = 30_000, env = "WF_LEASE_MS")]
    pub lease_ms: i64,
    /// Failures after which a job is dead-lettered.
    #[arg(long, default_value_t = 3, env = "WF_MAX_ATTEMPTS")]
    pub max_attempts: u32,
    /// Expired leases (the worker died or was cut off) after which a job is
    /// dead-lettered; counted apart from failures.
    #[arg(long, default_value_t = 6, env = "WF_MAX_EXPIRIES")]
    pub max_expiries: u32,
    /// The longest one attempt may run, heartbeats or not, in seconds: past it the job
    /// is failed as retryable (a hung job). Default: from each sweep's size (30 minutes
    /// plus a generous rate per stock, training day and epoch); 0: no limit.
    #[arg(long, env = "WF_MAX_JOB_SECONDS")]
    pub max_job_seconds: Option<u64>,
    /// First retry delay in milliseconds (doubles per failure, with jitter).
    #[arg(long, default_value_t = 1_000, env = "WF_BACKOFF_MS")]
    pub backoff_ms: i64,
    /// Directories dataset files may be read from (repeat or comma-separate); none:
    /// `synth:` datasets only.
    #[arg(long, value_delimiter = ',', env = "WF_DATA_ROOTS")]
    pub data_root: Vec<PathBuf>,
    /// Seconds between reconciliations of the job store with the artifact store (jobs
    /// Redis lost are queued again); the first runs at start.
    #[arg(long, default_value_t = 60, env = "WF_RECONCILE_SECONDS")]
    pub reconcile_seconds: u64,
    /// Serve Prometheus metrics at http://ADDRESS/metrics (e.g. 0.0.0.0:9464).
    #[arg(long, env = "WF_METRICS_LISTEN")]
    pub metrics: Option<SocketAddr>,
    /// Serve the live deployments of this artifact store (`wf live deploy --artifacts`):
    /// `LiveService.Predict` and their `wf_live_*` metrics. Their datasets must be under
    /// `--data-root`.
    #[arg(long, env = "WF_LIVE_ARTIFACTS")]
    pub live_artifacts: Option<String>,
    /// Every this many seconds, advance each `--live-artifacts` deployment whose panel
    /// holds new days (after `wf live ingest`), as `wf live advance` would, its retrains
    /// trained as `--live-retrain` says; 0: never (advance them with `wf live advance`).
    #[arg(long, default_value_t = 0, env = "WF_LIVE_ADVANCE_SECONDS")]
    pub live_advance_seconds: u64,
    /// Where the retrains of `--live-advance-seconds` train: `workers` queues each as a
    /// training-only job on this coordinator's queue (the workers report the model; the
    /// deployment waits for it), `local` trains it in this process on the CPU.
    #[arg(long, value_enum, default_value_t = LiveRetrain::Workers, env = "WF_LIVE_RETRAIN")]
    pub live_retrain: LiveRetrain,
    /// The tokens file: every sweep and worker call then needs a token (see `wf auth
    /// new-token`). Without it the coordinator listens on loopback only.
    #[arg(long, env = "WF_AUTH")]
    pub auth: Option<PathBuf>,
    /// The most distinct jobs one sweep may plan (a spec's `[limits] max_jobs` may only
    /// lower it).
    #[arg(long, default_value_t = wf_coordinator::scheduler::DEFAULT_MAX_JOBS_PER_SWEEP, env = "WF_MAX_JOBS_PER_SWEEP")]
    pub max_jobs_per_sweep: u64,
    /// The largest `synth:` market a sweep may ask for, in stocks x days.
    #[arg(long, default_value_t = wf_coordinator::scheduler::DEFAULT_MAX_SYNTH_CELLS, env = "WF_MAX_SYNTH_CELLS")]
    pub max_synth_cells: u64,
    /// `WatchSweep` streams (`wf status --watch`, `wf run`) one tenant may hold open.
    #[arg(long, default_value_t = wf_coordinator::quota::DEFAULT_STREAMS_PER_TENANT, env = "WF_MAX_STREAMS_PER_TENANT")]
    pub max_streams_per_tenant: usize,
    /// Sweeps one tenant may submit per minute (also the burst).
    #[arg(long, default_value_t = wf_coordinator::quota::DEFAULT_SUBMITS_PER_MINUTE, env = "WF_MAX_SUBMITS_PER_MINUTE")]
    pub max_submits_per_minute: u32,
    /// Listen beyond loopback without `--auth` (anyone who can reach the port may submit,
    /// cancel and report results). Logged as a warning.
    #[arg(long)]
    pub insecure: bool,
    /// Serve TLS with this certificate chain (PEM); clients then use `https://`.
    #[arg(long, env = "WF_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "WF_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Verify client certificates signed by this CA (PEM): mTLS. Every `WorkerService`
    /// call then needs one; users' clients may still connect without.
    #[arg(long, env = "WF_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Redis's password, when the URL has none. Give it in the environment (a Secret):
    /// a command line is visible to every user of the machine.
    #[arg(long, env = "WF_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// A file whose first line is Redis's password (a mounted Secret), when the URL has
    /// none: safer than the environment, which child processes and crash dumps see.
    #[arg(long, env = "WF_REDIS_PASSWORD_FILE", conflicts_with = "redis_password")]
    pub redis_password_file: Option<PathBuf>,
    /// The CA (PEM) that signed a `rediss://` server's certificate, when it is not in the
    /// system's roots. The Redis password comes from the URL or `WF_REDIS_PASSWORD`.
    #[arg(long, env = "WF_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// How long one Redis command waits for its answer (milliseconds) before it fails.
    /// Raise it for a Redis far away; a partition is noticed after this long, and a
    /// connection whose path died is closed and made again after three times as long
    /// (at least 10 s).
    #[arg(long, default_value_t = wf_coordinator::store::DEFAULT_RESPONSE_TIMEOUT.as_millis() as u64, env = "WF_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: u64,
    /// The trainers that submitted specs may name: each is pinned into the sweep's spec
    /// at submission (the workers must register the same programs).
    #[command(flatten)]
    pub trainers: TrainerArgs,
}

/// How a client reaches a TLS coordinator (`https://` addresses).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// The CA (PEM) that signed the coordinator's certificate (default: the system's roots).
    #[arg(long, env = "WF_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a coordinator that verifies clients (mTLS).
    #[arg(long, env = "WF_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// The private key of `--tls-client-cert` (PEM).
    #[arg(long, env = "WF_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// The name the coordinator's certificate must carry, when not the address's host.
    #[arg(long, env = "WF_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

impl ClientTlsArgs {
    pub fn options(&self) -> wf_proto::tls::ClientTls {
        wf_proto::tls::ClientTls {
            ca: self.tls_ca.clone(),
            cert: self.tls_client_cert.clone(),
            key: self.tls_client_key.clone(),
            domain: self.tls_domain.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "WF_COORDINATOR")]
    pub coordinator: String,
    /// Name in logs (default: host and process id).
    #[arg(long, env = "WF_WORKER_NAME")]
    pub name: Option<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1, env = "WF_CAPACITY")]
    pub capacity: usize,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
    /// Seconds to hand jobs back and exit after SIGTERM.
    #[arg(long, default_value_t = 20, env = "WF_GRACE_SECONDS")]
    pub grace_seconds: u64,
    /// Seconds a finished result is kept and reported again while the coordinator
    /// answers NOT_FOUND or UNAVAILABLE (restarting, rebuilding its job store).
    #[arg(long, default_value_t = 300, env = "WF_REPORT_PATIENCE_SECONDS")]
    pub report_patience_seconds: u64,
    /// A file whose first line is this worker's token (`WF_TOKEN`, when set, wins).
    #[arg(long, env = "WF_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// Directories dataset files may be read from (repeat or comma-separate); none:
    /// `synth:` datasets only.
    #[arg(long, value_delimiter = ',', env = "WF_DATA_ROOTS")]
    pub data_root: Vec<PathBuf>,
    /// A prepared panel of more rows than this is read one job's days at a time (each job
    /// holds only its days); a smaller one is loaded whole once and shared by its jobs.
    #[arg(long, default_value_t = wf_worker::job::DAYS_ABOVE_ROWS, env = "WF_DAYS_ABOVE_ROWS")]
    pub days_above_rows: u64,
    /// Exit after this many jobs (for tests and benchmarks).
    #[arg(long)]
    pub max_jobs: Option<usize>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics (e.g. 0.0.0.0:9464).
    #[arg(long, env = "WF_METRICS_LISTEN")]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub trainers: TrainerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The coordinator's address.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "WF_COORDINATOR")]
    pub coordinator: String,
    /// A file whose first line is this client's token (`WF_TOKEN`, when set, wins).
    #[arg(long, env = "WF_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Sweep spec (TOML).
    pub spec: PathBuf,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Sweep id (`sw-…`).
    pub sweep_id: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Follow the sweep with a live progress bar until it ends.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A sweep id (`sw-…`, asked of the coordinator), or an artifact directory to report
    /// from without a coordinator (`wf run --out DIR` leaves one in DIR/artifacts).
    pub source: String,
    /// With an artifact directory holding several sweeps: which one (default: the latest).
    #[arg(long)]
    pub sweep: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the report files into this directory: report.html (plots inline),
    /// report.json, schedules/decay/series tables (.csv, .parquet) and the plots as SVG and PNG.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Which files `--out` writes.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "html,json,csv,parquet,png")]
    pub format: Vec<wf_coordinator::report::files::Format>,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Sweep spec (TOML).
    pub spec: PathBuf,
    /// Index of the job in the plan (as `wf plan --json` lists them).
    #[arg(long, default_value_t = 0)]
    pub job: usize,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
    /// Write the trained model (safetensors) here.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Sweep spec (TOML).
    pub spec: PathBuf,
    /// Print the plan and its split manifest as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the split manifest (JSON) to this file.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The trainers its external models name (their identities are part of the keys).
    #[command(flatten)]
    pub trainers: TrainerArgs,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Build a panel (features and forward-return targets) from daily OHLCV.
    Prepare(PrepareArgs),
    /// Add later days of OHLCV to a prepared panel, in place: their features come from
    /// the state prepare saved next to it, equal to preparing the whole history again.
    Ingest(IngestArgs),
    /// Check an OHLCV file or a panel; exit 1 when a gate fails.
    Check(CheckArgs),
    /// Generate the synthetic market with planted regime breaks.
    Synth(SynthArgs),
    /// Print the content hash of a panel.
    Hash(HashArgs),
}

#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// OHLCV file: .parquet, .csv or .csv.gz with date, code, open, high, low, close,
    /// volume and optionally turnover.
    #[arg(long)]
    pub input: PathBuf,
    /// Panel file to write (.parquet).
    #[arg(long)]
    pub out: PathBuf,
    /// Forward-return horizons in trading days.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,20")]
    pub horizons: Vec<u32>,
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The prepared panel (.parquet), with its feature state (`PANEL.state`) beside it.
    #[arg(long)]
    pub panel: PathBuf,
    #[command(flatten)]
    pub days: NewDaysArgs,
    /// Write the longer panel here (and its state beside it) instead of in place.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The new days of an ingest.
#[derive(Debug, clap::Args)]
pub struct NewDaysArgs {
    /// OHLCV file of the days after the panel's last one (same columns as prepare's input).
    #[arg(long)]
    pub input: PathBuf,
    /// Weekdays the exchange was closed (holidays) between the panel's last day and the
    /// new ones, or among them (repeat or comma-separate); any other weekday without data
    /// refuses the ingest as a missing day.
    #[arg(long, value_delimiter = ',')]
    pub closed: Vec<chrono::NaiveDate>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// OHLCV file or panel.
    pub file: PathBuf,
    /// Largest acceptable null share of any column, between 0 and 1.
    #[arg(long, default_value_t = 0.10)]
    pub max_null_share: f64,
    /// Fail on warnings too (extreme moves, volume level shifts, gaps).
    #[arg(long)]
    pub strict: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Directory to write ohlcv.parquet and truth.json into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub stocks: usize,
    /// Trading days (weekdays).
    #[arg(long, default_value_t = 1000)]
    pub days: usize,
    #[arg(long, default_value = "2021-01-04")]
    pub start: NaiveDate,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The null market: the same shapes and calendar with no premia, no breaks and every
    /// beta 1 (nothing is predictable); the calibration target of the report's statistics.
    #[arg(long)]
    pub null: bool,
}

#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// Panel file.
    pub file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_jobs_share_the_cpus_for_candle() {
        if std::env::var_os("RAYON_NUM_THREADS").is_some() {
            println!("skipped: RAYON_NUM_THREADS is set, so thread_env leaves it alone");
            return;
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let threads = |command: &Command| -> Option<usize> {
            thread_env(command)
                .into_iter()
                .find(|(name, _)| *name == "RAYON_NUM_THREADS")
                .map(|(_, v)| v.parse().unwrap_or(0))
        };
        let run = |workers: usize| {
            threads(&Args::parse_from(["wf", "run", "spec.toml", "--workers", &workers.to_string()]).command)
        };
        assert_eq!(run(1), Some(cpus));
        assert_eq!(run(cpus), Some(1));
        assert_eq!(run(cpus * 4), Some(1), "never 0 threads");
        assert_eq!(threads(&Args::parse_from(["wf", "worker", "--capacity", "1"]).command), Some(cpus));
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            let settings = thread_env(&Args::parse_from(["wf", "list"]).command);
            assert!(settings.contains(&("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000".to_string())), "{settings:?}");
        }
    }

    #[test]
    fn only_the_commands_that_train_keep_freed_memory() {
        let trains_on = |line: &[&str]| trains(&Args::parse_from(line).command);
        assert!(trains_on(&["wf", "run", "spec.toml"]));
        assert!(trains_on(&["wf", "worker"]));
        assert!(trains_on(&["wf", "train", "spec.toml", "--job", "0"]));
        assert!(!trains_on(&["wf", "data", "prepare", "--input", "a.csv", "--out", "b.parquet"]));
        assert!(!trains_on(&["wf", "plan", "spec.toml"]));
    }
}
