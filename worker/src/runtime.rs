//! The worker runtime: register with the coordinator, long-poll for leases, train and
//! score each job in `spawn_blocking` while heartbeating every third of the lease,
//! report the result or the failure.
//!
//! Datasets are loaded once and cached by content hash; a dataset whose hash differs
//! from the one the sweep was planned on is refused. On shutdown (SIGTERM in `main`)
//! a worker stops leasing, tells its trainings to stop at the next step, hands its
//! running jobs back as preempted (retrying within the grace period) and returns without
//! waiting for the abandoned computations. The worker never writes job state: it asks,
//! and the coordinator decides.
//!
//! Every call about a job carries the lease's token (epoch and attempt). A worker drops
//! a job only when the coordinator says the lease is no longer its own (FAILED_PRECONDITION,
//! PERMISSION_DENIED) or the job was cancelled. NOT_FOUND and UNAVAILABLE mean the
//! coordinator or its job store is restarting or rebuilding: heartbeats carry on, and
//! a finished result is kept and reported again with backoff for `report_patience`.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{info, warn};
use wf_data::dataset::{DataRoots, Dataset, open};
use wf_proto::auth::BearerToken;
use wf_proto::v1::worker_service_client::WorkerServiceClient;
use wf_proto::{PROTOCOL_VERSION, v1};
use wf_shared::DatasetHash;
use wf_shared::plan::{Job, JobKey, TrainingLine};
use wf_shared::spec::SweepConfig;

use crate::WorkerError;
use crate::artifact::model_file;
use crate::device::device_name;
use crate::external::Trainers;
use crate::faults::{Fault, Faults};
use crate::job::{JobContext, JobData, run_job_in};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The coordinator, e.g. `http://127.0.0.1:50051`.
    pub coordinator: String,
    /// A name for logs.
    pub name: String,
    /// Jobs run at once.
    pub capacity: usize,
    /// How long one `LeaseJob` call waits for work.
    pub poll: Duration,
    /// Stop (and return) once this many jobs ended, for tests and benchmarks; `None` runs until shutdown.
    pub max_jobs: Option<usize>,
    /// Faults injected for tests and drills (jobs that fail retryably or never finish),
    /// read once at start ([`Faults::from_env`]); `None` in production.
    pub faults: Option<Faults>,
    /// How long a finished result is kept and reported again while the coordinator
    /// answers NOT_FOUND or UNAVAILABLE.
    pub report_patience: Duration,
    /// On shutdown, how long handing running jobs back may take.
    pub grace: Duration,
    /// The token sent with every call (none: a coordinator without authentication).
    pub token: BearerToken,
    /// TLS to an `https://` coordinator.
    pub tls: wf_proto::tls::ClientTls,
    /// Where dataset files may be read from.
    pub data_roots: DataRoots,
    /// A prepared panel of more rows than this is read a job's days at a time
    /// ([`JobData::Days`]); a smaller one is loaded whole once and shared by its jobs.
    pub days_above_rows: u64,
    /// The external trainers registered here (`docs/TRAINERS.md`).
    pub trainers: Arc<Trainers>,
}

impl RuntimeConfig {
    /// A worker of `coordinator` named `name`, with the defaults: one job at a time,
    /// 5 s long polls, no job limit, no fault injection, five minutes of patience for a
    /// finished result, ten seconds to hand jobs back.
    pub fn new(coordinator: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            name: name.into(),
            capacity: 1,
            poll: Duration::from_secs(5),
            max_jobs: None,
            faults: None,
            report_patience: Duration::from_secs(300),
            grace: Duration::from_secs(10),
            token: BearerToken::default(),
            tls: wf_proto::tls::ClientTls::default(),
            data_roots: DataRoots::Any,
            days_above_rows: crate::job::DAYS_ABOVE_ROWS,
            trainers: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The coordinator's address or TLS options (the message says which).
    #[error("{0}")]
    Address(String),
    #[error("failed to register with the coordinator: {0}")]
    Register(tonic::Status),
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSummary {
    pub completed: usize,
    pub failed: usize,
    pub preempted: usize,
    pub abandoned: usize,
}

/// Why a job could not run (before any training), and whether retrying may help.
struct Refusal {
    retryable: bool,
    error: String,
}

/// A sweep planned on its dataset: its jobs by key.
struct SweepJobs {
    jobs: HashMap<JobKey, Job>,
    config: SweepConfig,
    data: JobData,
}

/// A `WorkerService` client that sends the worker's token with every call.
type Client = WorkerServiceClient<InterceptedService<Channel, BearerToken>>;

struct Worker {
    client: Client,
    id: String,
    lease_ms: u64,
    device: Device,
    datasets: Mutex<HashMap<DatasetHash, Arc<Dataset>>>,
    sweeps: Mutex<HashMap<String, Arc<SweepJobs>>>,
    summary: Mutex<RuntimeSummary>,
    jobs_ended: std::sync::atomic::AtomicUsize,
    faults: Option<Faults>,
    report_patience: Duration,
    grace: Duration,
    data_roots: DataRoots,
    days_above_rows: u64,
    trainers: Arc<Trainers>,
    /// The keys of the jobs running now (with how many slots run each), sent with each
    /// lease call.
    running: Mutex<HashMap<String, usize>>,
}

/// How a leased job ended on this worker (the `outcome` of `wf_worker_jobs_total`).
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    Completed,
    Failed,
    Preempted,
    Abandoned,
}

impl Ended {
    pub const ALL: [Self; 4] = [Self::Completed, Self::Failed, Self::Preempted, Self::Abandoned];

    pub fn name(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Preempted => "preempted",
            Self::Abandoned => "abandoned",
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A worker running: what [`run`] returns. Boxed, so that the worker's code is compiled
/// once, in this crate, not again in every crate that awaits it (an `async fn`'s body
/// is compiled where it is awaited).
pub type Running = std::pin::Pin<Box<dyn std::future::Future<Output = Result<RuntimeSummary, RuntimeError>> + Send>>;

/// Runs a worker until `shutdown` (or `max_jobs`), then returns what it did.
pub fn run(config: RuntimeConfig, device: Device, shutdown: CancellationToken) -> Running {
    Box::pin(running(config, device, shutdown))
}

async fn running(
    config: RuntimeConfig,
    device: Device,
    shutdown: CancellationToken,
) -> Result<RuntimeSummary, RuntimeError> {
    let endpoint = wf_proto::tls::endpoint(&config.coordinator, &config.tls).map_err(RuntimeError::Address)?;
    let channel = endpoint.connect_lazy();
    let mut client = WorkerServiceClient::with_interceptor(channel, config.token.clone())
        .max_decoding_message_size(64 * 1024 * 1024);
    let registration = v1::RegisterWorkerRequest {
        protocol_version: PROTOCOL_VERSION,
        trainer_version: wf_shared::model::TRAINER_VERSION,
        name: config.name.clone(),
        device: device_name(&device),
        capacity: config.capacity as u32,
    };
    let registered = retry_unavailable(&shutdown, || {
        let mut client = client.clone();
        let request = registration.clone();
        async move { client.register_worker(request).await }
    })
    .await
    .map_err(RuntimeError::Register)?
    .into_inner();
    client = client.max_encoding_message_size(64 * 1024 * 1024);
    info!(worker = %registered.worker_id, lease_ms = registered.lease_ms, "registered");
    let worker = Arc::new(Worker {
        client,
        id: registered.worker_id,
        lease_ms: u64::from(registered.lease_ms.max(300)),
        device,
        datasets: Mutex::default(),
        sweeps: Mutex::default(),
        summary: Mutex::default(),
        jobs_ended: Default::default(),
        // As a worker applies them: an empty prefix names no job.
        faults: config.faults.clone().and_then(Faults::on_workers),
        report_patience: config.report_patience,
        grace: config.grace,
        data_roots: config.data_roots.clone(),
        days_above_rows: config.days_above_rows,
        trainers: config.trainers.clone(),
        running: Mutex::default(),
    });
    let stop = shutdown.child_token();
    let mut slots = Vec::new();
    for _ in 0..config.capacity.max(1) {
        let worker = worker.clone();
        let (stop, shutdown, config) = (stop.clone(), shutdown.clone(), config.clone());
        slots.push(tokio::spawn(async move { worker.lease_loop(&config, &stop, &shutdown).await }));
    }
    for slot in slots {
        let _ = slot.await;
    }
    let summary = lock(&worker.summary).clone();
    info!(worker = %worker.id, ?summary, "worker stopped");
    Ok(summary)
}

/// A job in the worker's running set while this lives (counted: two slots running the
/// same key keep it there until both are done).
struct RunningJob<'a> {
    set: &'a Mutex<HashMap<String, usize>>,
    key: String,
}

impl<'a> RunningJob<'a> {
    fn new(set: &'a Mutex<HashMap<String, usize>>, key: &str) -> Self {
        *lock(set).entry(key.to_string()).or_default() += 1;
        Self { set, key: key.to_string() }
    }
}

impl Drop for RunningJob<'_> {
    fn drop(&mut self) {
        let mut set = lock(self.set);
        if let Some(count) = set.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                set.remove(&self.key);
            }
        }
    }
}

/// A heartbeat in flight ([`Worker::heartbeat`]).
type Beat<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ControlFlow<()>> + Send + 'a>>;

/// Whether a call that failed with `code` may pass later: the coordinator restarting
/// (UNAVAILABLE, a reset connection), its job store being rebuilt (NOT_FOUND), or an
/// artifact write that failed (INTERNAL).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::NotFound | Code::Internal | Code::Unknown | Code::DeadlineExceeded | Code::Aborted
    )
}

/// Retries `call` with backoff while it fails [`transient`]ly, until `deadline`.
async fn retry_until<T, F, Fut>(deadline: Instant, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(status) if transient(status.code()) && Instant::now() + pause < deadline => {
                warn!(code = ?status.code(), message = status.message(), retry_in_ms = pause.as_millis() as u64, "call failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Retries `call` while the coordinator is unavailable (restarting), until `shutdown`.
async fn retry_unavailable<T, F, Fut>(shutdown: &CancellationToken, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable && !shutdown.is_cancelled() => {
                tokio::select! {
                    () = shutdown.cancelled() => return Err(status),
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

impl Worker {
    /// Counts a job's end, in the summary and in the `wf_worker_jobs_total` metric.
    fn ended(&self, how: Ended) {
        let mut summary = lock(&self.summary);
        match how {
            Ended::Completed => summary.completed += 1,
            Ended::Failed => summary.failed += 1,
            Ended::Preempted => summary.preempted += 1,
            Ended::Abandoned => summary.abandoned += 1,
        }
        metrics::counter!("wf_worker_jobs_total", "outcome" => how.name()).increment(1);
    }

    async fn lease_loop(
        self: &Arc<Self>,
        config: &RuntimeConfig,
        stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        let wait_ms = u32::try_from(config.poll.as_millis()).unwrap_or(u32::MAX);
        // A lease that came back with the previous job's result.
        let mut next: Option<v1::JobLease> = None;
        while !stop.is_cancelled() {
            let lease = match next.take() {
                Some(lease) => lease,
                None => match self.poll_lease(wait_ms, stop).await {
                    ControlFlow::Break(()) => break,
                    ControlFlow::Continue(None) => continue,
                    ControlFlow::Continue(Some(lease)) => lease,
                },
            };
            metrics::counter!("wf_worker_leases_total").increment(1);
            metrics::gauge!("wf_worker_jobs_running").increment(1.0);
            // The last job a `max_jobs` worker may run asks for no successor.
            let ended = self.jobs_ended.load(std::sync::atomic::Ordering::SeqCst);
            let lease_next = config.max_jobs.is_none_or(|max| ended + 1 < max);
            next = self.execute(lease, shutdown, lease_next).await;
            metrics::gauge!("wf_worker_jobs_running").decrement(1.0);
            let ended = self.jobs_ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if config.max_jobs.is_some_and(|max| ended >= max) {
                stop.cancel();
            }
        }
        if let Some(lease) = next {
            // Leased with a result just before the stop: another worker takes it.
            self.hand_back(&lease).await;
        }
    }

    /// One LeaseJob long poll: a job, or none yet (also after a failed call, once a
    /// pause has passed); `Break` when `stop` fires.
    async fn poll_lease(&self, wait_ms: u32, stop: &CancellationToken) -> ControlFlow<(), Option<v1::JobLease>> {
        let holding = lock(&self.running).keys().cloned().collect();
        let request = v1::LeaseJobRequest { worker_id: self.id.clone(), wait_ms, holding, reports_holding: true };
        let mut client = self.client.clone();
        let response = tokio::select! {
            () = stop.cancelled() => return ControlFlow::Break(()),
            response = client.lease_job(request) => response,
        };
        match response {
            Ok(response) => ControlFlow::Continue(response.into_inner().lease),
            Err(status) => {
                warn!(worker = %self.id, %status, "lease call failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => ControlFlow::Break(()),
                    () = tokio::time::sleep(Duration::from_millis(500)) => ControlFlow::Continue(None),
                }
            }
        }
    }

    /// Loads (or reuses) the lease's dataset and plan, and finds its job.
    async fn prepare(&self, lease: &v1::JobLease) -> Result<(Arc<SweepJobs>, Job), Refusal> {
        let permanent = |error: String| Refusal { retryable: false, error };
        let key = JobKey::try_from(lease.job_key.clone()).map_err(|e| permanent(format!("job key: {e}")))?;
        if let Some(line) = &lease.training {
            return self.prepare_training(lease, key, line).await;
        }
        let cached = lock(&self.sweeps).get(&lease.sweep_id).cloned();
        let sweep = match cached {
            Some(sweep) => sweep,
            None => {
                let (config, dataset_ref) = lease_inputs(lease)?;
                self.trainers.check(&config).map_err(permanent)?;
                let data = self.data(&dataset_ref, &config, true).await?;
                let mut universe = Vec::new();
                let plan = wf_shared::plan::plan(&config, &data.plan_input(&mut universe))
                    .map_err(|e| permanent(format!("cannot plan the sweep: {e}")))?;
                let jobs = plan.jobs.into_iter().map(|job| (job.key, job)).collect();
                let sweep = Arc::new(SweepJobs { jobs, config, data });
                lock(&self.sweeps).insert(lease.sweep_id.clone(), sweep.clone());
                sweep
            }
        };
        let job = sweep.jobs.get(&key).cloned().ok_or_else(|| {
            permanent(format!("job {} is not in the plan of sweep {} on this dataset", key.short(), lease.sweep_id))
        })?;
        Ok((sweep, job))
    }

    /// A training-only job (a live retrain): built from its line on the dataset and
    /// trained only if its key is the leased one. The panel may have grown since the
    /// coordinator read it (days ingested meanwhile): the job's key, which covers every
    /// value the job reads, says whether this is still the job, not the panel's hash.
    async fn prepare_training(
        &self,
        lease: &v1::JobLease,
        key: JobKey,
        line: &v1::TrainingLine,
    ) -> Result<(Arc<SweepJobs>, Job), Refusal> {
        let permanent = |error: String| Refusal { retryable: false, error };
        let (config, dataset_ref) = lease_inputs(lease)?;
        self.trainers.check(&config).map_err(permanent)?;
        let retrain = chrono::NaiveDate::parse_from_str(&line.retrain_date, "%Y-%m-%d")
            .map_err(|e| permanent(format!("training.retrain_date {:?}: {e}", line.retrain_date)))?;
        let line = TrainingLine { model: line.model, seed: line.seed, window: line.window, retrain };
        let data = self.data(&dataset_ref, &config, false).await?;
        let mut universe = Vec::new();
        let job = line
            .job(&config, &data.plan_input(&mut universe))
            .map_err(|e| permanent(format!("the retrain of {retrain}: {e}")))?;
        if job.key != key {
            return Err(permanent(format!(
                "the retrain of {retrain} on {} (content hash {}) is job {}, not the leased {}: the days it reads differ \
                 from the coordinator's",
                dataset_ref.uri,
                data.content_hash().short(),
                job.key.short(),
                key.short()
            )));
        }
        Ok((Arc::new(SweepJobs { jobs: HashMap::new(), config, data }), job))
    }

    /// Where the jobs of `dataset` read their data: a prepared panel file by days (its
    /// metadata summary only, here), else the dataset loaded whole ([`Self::dataset`]).
    /// With `exact`, a content hash other than the named one is refused.
    async fn data(
        &self,
        dataset: &wf_shared::DatasetRef,
        config: &SweepConfig,
        exact: bool,
    ) -> Result<JobData, Refusal> {
        let (uri, features, roots) = (dataset.uri.clone(), config.features.clone(), self.data_roots.clone());
        let summary = tokio::task::spawn_blocking(move || open(&uri, &[], features.as_deref(), &roots)?.days_summary())
            .await
            .map_err(|e| Refusal { retryable: true, error: format!("dataset reader panicked: {e}") })?
            .map_err(|e| Refusal {
                retryable: e.retryable(),
                error: format!("cannot read dataset {}: {e}", dataset.uri),
            })?;
        match summary.filter(|summary| summary.digests.rows > self.days_above_rows) {
            Some(summary) => {
                if exact {
                    planned_on(dataset, summary.content_hash)?;
                }
                Ok(JobData::Days { uri: dataset.uri.clone(), summary: Arc::new(summary) })
            }
            None => self.dataset(dataset, config, exact).await.map(JobData::Whole),
        }
    }

    /// The dataset `dataset` names, loaded (or cached by content hash). With `exact`, a
    /// file whose content hash is not the named one is refused; without, it is returned
    /// as found and not cached (a live panel grows a day at a time: each version would
    /// stay in memory).
    async fn dataset(
        &self,
        dataset: &wf_shared::DatasetRef,
        config: &SweepConfig,
        exact: bool,
    ) -> Result<Arc<Dataset>, Refusal> {
        if let Some(found) = lock(&self.datasets).get(&dataset.content_hash) {
            return Ok(found.clone());
        }
        let (uri, horizons, features) = (dataset.uri.clone(), config.horizons.clone(), config.features.clone());
        let roots = self.data_roots.clone();
        let loaded = tokio::task::spawn_blocking(move || open(&uri, &horizons, features.as_deref(), &roots)?.whole())
            .await
            .map_err(|e| Refusal { retryable: true, error: format!("dataset loader panicked: {e}") })?
            .map_err(|e| Refusal {
                retryable: e.retryable(),
                error: format!("cannot load dataset {}: {e}", dataset.uri),
            })?;
        if !exact {
            return Ok(Arc::new(loaded));
        }
        planned_on(dataset, loaded.content_hash)?;
        metrics::counter!("wf_worker_datasets_loaded_total").increment(1);
        let loaded = Arc::new(loaded);
        lock(&self.datasets).insert(dataset.content_hash, loaded.clone());
        Ok(loaded)
    }

    /// Runs a leased job and reports how it ended; with `lease_next`, a successful
    /// report also asks for the next job, which is returned.
    async fn execute(
        self: &Arc<Self>,
        lease: v1::JobLease,
        shutdown: &CancellationToken,
        lease_next: bool,
    ) -> Option<v1::JobLease> {
        let started = Instant::now();
        // Running from now until this returns: the coordinator learns it with each lease call.
        let _running = RunningJob::new(&self.running, &lease.job_key);
        info!(job = %short(&lease.job_key), attempt = lease.attempt, epoch = lease.epoch, "job started");
        // Heartbeats start at once: loading a large dataset may take longer than a lease.
        let mut beats = tokio::time::interval(Duration::from_millis(self.lease_ms / 3));
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beats.tick().await;
        // The heartbeat in flight, polled beside the job and the shutdown: a slow one (a
        // slow or dead link) holds up neither, and the next starts once it has answered.
        let mut beat: Option<Beat<'_>> = None;
        let prepare = self.prepare(&lease);
        tokio::pin!(prepare);
        let prepared = loop {
            tokio::select! {
                prepared = &mut prepare => break prepared,
                () = shutdown.cancelled() => {
                    // The dataset load is abandoned with the job.
                    self.hand_back(&lease).await;
                    return None;
                }
                _ = beats.tick(), if beat.is_none() => beat = Some(Box::pin(self.heartbeat(&lease))),
                flow = async { beat.as_mut().expect("a heartbeat in flight").await }, if beat.is_some() => {
                    beat = None;
                    if flow.is_break() {
                        return None;
                    }
                }
            }
        };
        let (sweep, job) = match prepared {
            Ok(prepared) => prepared,
            Err(refusal) => {
                let kind = if refusal.retryable { v1::FailureKind::Retryable } else { v1::FailureKind::Permanent };
                self.fail(&lease, kind, refusal.error).await;
                return None;
            }
        };
        let device = self.device.clone();
        // The result says which job it is (its identity); the coordinator checks that
        // against the key.
        let training = lease.training.is_some();
        let roots = self.data_roots.clone();
        let fault = self.faults.as_ref().and_then(|faults| faults.for_job(&lease.job_key));
        let stop = Arc::new(AtomicBool::new(false));
        let task_stop = stop.clone();
        let trainers = self.trainers.clone();
        // An external trainer is killed a little before the coordinator would reap the
        // job as hung (a retryable failure), so the job fails permanently, once.
        let deadline = (lease.max_job_ms > 0).then(|| {
            let margin = (lease.max_job_ms / 20).clamp(250, 30_000).min(lease.max_job_ms / 2);
            std::time::Instant::now() + Duration::from_millis(lease.max_job_ms - margin)
        });
        let mut task = tokio::task::spawn_blocking(move || {
            if fault == Some(Fault::Fail) {
                return Err(WorkerError::Device("injected failure (WF_FAULT_FAIL_JOBS)".into()));
            }
            while fault == Some(Fault::Hang) && !task_stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let panel = sweep.data.panel(&sweep.config, &job, &roots)?;
            let context = JobContext { stop: Some(&task_stop), trainers: Some(&trainers), deadline };
            let output = run_job_in(&panel, &sweep.config, &job, &device, &context)?;
            let mut result = v1::JobResult { identity: job.identity.clone(), ..output.result().into() };
            if training {
                // A live retrain: the deployment serves this model.
                let hash = sweep.data.content_hash();
                result.model = model_file(&output, &job, &panel, &hash, &sweep.config)
                    .map_err(|reason| WorkerError::Artifact { path: "the trained model".into(), reason })?;
                if result.model.len() > wf_proto::budget::MAX_MODEL_BYTES {
                    return Err(WorkerError::NoData(format!(
                        "the trained model is {} bytes, more than the {} a result may carry",
                        result.model.len(),
                        wf_proto::budget::MAX_MODEL_BYTES
                    )));
                }
            }
            Ok(result)
        });
        // Whatever happens below, a computation left behind stops at its next step.
        let _stop_on_exit = StopOnDrop(stop);
        let outcome = loop {
            tokio::select! {
                outcome = &mut task => break outcome,
                () = shutdown.cancelled() => {
                    // Hand the job back at once; the computation stops at its next step
                    // and is not waited for.
                    self.hand_back(&lease).await;
                    return None;
                }
                _ = beats.tick(), if beat.is_none() => beat = Some(Box::pin(self.heartbeat(&lease))),
                flow = async { beat.as_mut().expect("a heartbeat in flight").await }, if beat.is_some() => {
                    beat = None;
                    if flow.is_break() {
                        return None;
                    }
                }
            }
        };
        match outcome {
            Ok(Ok(result)) => {
                let request = v1::ReportResultRequest {
                    worker_id: self.id.clone(),
                    job_key: lease.job_key.clone(),
                    attempt: lease.attempt,
                    epoch: lease.epoch,
                    result: Some(result),
                    lease_next: lease_next && !shutdown.is_cancelled(),
                };
                // Kept and reported again while the coordinator cannot take it yet;
                // bounded by the patience, and by the grace period once shutting down.
                let patience = Instant::now() + self.report_patience;
                let reported = tokio::select! {
                    reported = retry_until(patience, || {
                        let mut client = self.client.clone();
                        let request = request.clone();
                        async move { client.report_result(request).await }
                    }) => reported,
                    () = async {
                        shutdown.cancelled().await;
                        tokio::time::sleep(self.grace.mul_f64(0.8)).await;
                    } => Err(tonic::Status::unavailable("shutting down before the result could be reported")),
                };
                match reported {
                    Ok(response) => {
                        info!(job = %short(&lease.job_key), attempt = lease.attempt, seconds = started.elapsed().as_secs_f64(), "job done");
                        self.ended(Ended::Completed);
                        metrics::histogram!("wf_worker_job_seconds").record(started.elapsed().as_secs_f64());
                        return response.into_inner().next;
                    }
                    Err(status) => {
                        refused(&lease.job_key, &status, "result refused");
                        self.ended(Ended::Abandoned);
                    }
                }
            }
            Ok(Err(WorkerError::Stopped)) => self.hand_back(&lease).await,
            Ok(Err(error)) => {
                let kind = if error.retryable() { v1::FailureKind::Retryable } else { v1::FailureKind::Permanent };
                self.fail(&lease, kind, error.to_string()).await;
            }
            Err(panic) => self.fail(&lease, v1::FailureKind::Retryable, format!("the job panicked: {panic}")).await,
        }
        None
    }

    /// One heartbeat of `lease`; `Break` when the job is no longer this worker's (the
    /// coordinator says so, or cancelled it): the caller drops it.
    async fn heartbeat(&self, lease: &v1::JobLease) -> ControlFlow<()> {
        let request = v1::HeartbeatRequest {
            worker_id: self.id.clone(),
            job_key: lease.job_key.clone(),
            attempt: lease.attempt,
            epoch: lease.epoch,
        };
        metrics::counter!("wf_worker_heartbeats_total").increment(1);
        // A heartbeat that has not come back within a lease period is of no use, and must
        // not hold up the job's loop: over a dead link it would wait for TCP to give up.
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_millis(self.lease_ms));
        match self.client.clone().heartbeat(request).await {
            Ok(response) if response.get_ref().action() == v1::HeartbeatAction::Cancel => {
                info!(job = %short(&lease.job_key), "job cancelled; abandoning it");
                self.ended(Ended::Abandoned);
                ControlFlow::Break(())
            }
            Ok(_) => ControlFlow::Continue(()),
            Err(status) if lease_lost(&status) => {
                warn!(job = %short(&lease.job_key), %status, "lease lost; abandoning the job");
                self.ended(Ended::Abandoned);
                ControlFlow::Break(())
            }
            // The coordinator restarting, or its store being rebuilt: the lease may well
            // be ours again in a moment.
            Err(status) => {
                warn!(job = %short(&lease.job_key), %status, "heartbeat failed; will retry");
                ControlFlow::Continue(())
            }
        }
    }

    /// Hands a job back on shutdown (a preemption, which uses up no retry), retrying
    /// within the grace period.
    async fn hand_back(&self, lease: &v1::JobLease) {
        self.report_failure(lease, v1::FailureKind::Preempted, "worker shutting down".into(), self.grace.mul_f64(0.8))
            .await;
        self.ended(Ended::Preempted);
    }

    async fn fail(&self, lease: &v1::JobLease, kind: v1::FailureKind, error: String) {
        self.report_failure(lease, kind, error, Duration::from_secs(30)).await;
    }

    async fn report_failure(&self, lease: &v1::JobLease, kind: v1::FailureKind, error: String, patience: Duration) {
        if kind == v1::FailureKind::Preempted {
            // Handed back on shutdown: another worker (or the next run) takes it.
            info!(job = %short(&lease.job_key), attempt = lease.attempt, %error, "job handed back");
        } else {
            warn!(job = %short(&lease.job_key), attempt = lease.attempt, ?kind, %error, "job failed");
            self.ended(Ended::Failed);
        }
        let request = v1::ReportFailureRequest {
            worker_id: self.id.clone(),
            job_key: lease.job_key.clone(),
            attempt: lease.attempt,
            epoch: lease.epoch,
            kind: kind.into(),
            error,
        };
        let reported = retry_until(Instant::now() + patience, || {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.report_failure(request).await }
        })
        .await;
        if let Err(status) = reported {
            refused(&lease.job_key, &status, "failure report refused");
        }
    }
}

/// Sets the flag when dropped: a computation whose job this worker no longer runs
/// stops at its next step.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Refuses (for good) a dataset whose content hash `found` is not the one `dataset`
/// names, which its sweep was planned on.
fn planned_on(dataset: &wf_shared::DatasetRef, found: DatasetHash) -> Result<(), Refusal> {
    if found == dataset.content_hash {
        return Ok(());
    }
    Err(Refusal {
        retryable: false,
        error: format!(
            "dataset {} has content hash {}, but the sweep was planned on {}",
            dataset.uri,
            found.short(),
            dataset.content_hash.short()
        ),
    })
}

/// The lease's spec and dataset, or a permanent refusal naming what is wrong.
fn lease_inputs(lease: &v1::JobLease) -> Result<(SweepConfig, wf_shared::DatasetRef), Refusal> {
    let permanent = |error: String| Refusal { retryable: false, error };
    let config = SweepConfig::from_toml(&lease.spec_toml).map_err(|e| permanent(format!("sweep spec: {e}")))?;
    let dataset = lease
        .dataset
        .clone()
        .ok_or_else(|| permanent("the lease names no dataset".into()))?
        .try_into()
        .map_err(|e: wf_proto::ConversionError| permanent(e.to_string()))?;
    Ok((config, dataset))
}

/// Whether the coordinator said the lease is no longer this worker's.
fn lease_lost(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::FailedPrecondition | Code::PermissionDenied)
}

/// Logs a refused report: expected (info) when the job is no longer this worker's,
/// because it was cancelled or its lease went to another worker; a warning otherwise.
fn refused(job_key: &str, status: &tonic::Status, what: &str) {
    if lease_lost(status) {
        info!(job = %short(job_key), %status, "{what}: the job is no longer this worker's");
    } else {
        warn!(job = %short(job_key), %status, "{what}");
    }
}

fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}
