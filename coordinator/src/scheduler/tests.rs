//! Scheduler tests with the in-memory store and a manual clock: real planning and real
//! (small) trainings, no network.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use wf_data::dataset::load_dataset;
use wf_proto::v1;
use wf_shared::job::{Phase, RetryPolicy, Token};
use wf_shared::plan::{JobKey, plan_panel};

use super::*;
use crate::report;
use crate::store::MemoryJobStore;

#[derive(Debug)]
pub(super) struct ManualClock(pub(super) AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMs {
        self.0.load(Ordering::SeqCst)
    }
}

pub(super) const SPEC: &str = r#"
name = "scheduler"
[dataset]
panel = "synth:stocks=40,days=400,seed=5"
[evaluation]
start = 2021-08-02
end = 2021-12-31
[plan]
train_windows = [126]
cadences = ["monthly", "quarterly"]
horizons = [5]
primary_horizon = 5
max_age = 21
embargo = 0
[metrics]
k = 8
bootstrap_samples = 50
bootstrap_seed = 1
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = { epochs = 3 }
"#;

const POLICY: RetryPolicy = RetryPolicy { max_attempts: 2, max_expiries: 3, backoff_base_ms: 100, backoff_cap_ms: 100 };

pub(super) fn scheduler(artifacts: &std::path::Path, clock: Arc<ManualClock>) -> Scheduler {
    scheduler_over(Arc::new(MemoryJobStore::new(POLICY)), artifacts, clock)
}

/// A scheduler over `store`, with the tests' settings.
fn scheduler_over(store: Arc<dyn JobStore>, artifacts: &std::path::Path, clock: Arc<ManualClock>) -> Scheduler {
    let artifacts = ArtifactStore::open(&artifacts.display().to_string()).expect("artifacts");
    let config = SchedulerConfig {
        lease_ms: 1_000,
        poll_ms: 10,
        data_roots: wf_data::dataset::DataRoots::Any,
        reconcile_every: None,
        job_limit: JobLimit::Unlimited,
        ..SchedulerConfig::default()
    };
    Scheduler::new(store, artifacts, clock, config)
}

/// Trains a leased job in this thread, as a worker would, and reports its identity.
pub(super) fn compute(lease: &JobLease) -> v1::JobResult {
    let config = SweepConfig::from_toml(&lease.spec_toml).expect("spec");
    let dataset = load_dataset(&lease.dataset.uri, &config.horizons, config.features.as_deref()).expect("dataset");
    let plan = plan_panel(&config, &dataset.panel, &dataset.digests).expect("plan");
    let job = plan.jobs.iter().find(|job| job.key == lease.lease.key).expect("job in plan");
    let output = wf_worker::job::run_job(&dataset.panel, &config, job, &candle_core::Device::Cpu).expect("job runs");
    v1::JobResult { identity: job.identity.clone(), ..output.result().into() }
}

/// A coordinator serving `scheduler` on a loopback port and one real worker (the
/// runtime, over gRPC, on the CPU) leasing from it, until [`Served::stop`].
pub(super) struct Served {
    worker_stop: tokio_util::sync::CancellationToken,
    worker: tokio::task::JoinHandle<Result<wf_worker::runtime::RuntimeSummary, wf_worker::runtime::RuntimeError>>,
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

pub(super) async fn serve_with_a_worker(scheduler: Arc<Scheduler>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::server::serve(scheduler, listener, shutdown.clone()));
    let config = wf_worker::runtime::RuntimeConfig {
        poll: Duration::from_millis(200),
        // Every prepared panel by days, small ones too.
        days_above_rows: 0,
        ..wf_worker::runtime::RuntimeConfig::new(url, "w")
    };
    let worker_stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(wf_worker::runtime::run(config, candle_core::Device::Cpu, worker_stop.clone()));
    Served { worker_stop, worker, shutdown, server }
}

impl Served {
    pub(super) async fn stop(self) {
        self.worker_stop.cancel();
        self.worker.await.expect("worker task").expect("worker ran");
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

/// Leases and commits every ready job; returns how many.
pub(super) async fn run_all(scheduler: &Scheduler) -> usize {
    let mut ran = 0;
    while let Some(lease) = scheduler.lease("w", Duration::ZERO).await.expect("lease") {
        scheduler.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
        ran += 1;
    }
    ran
}

#[tokio::test]
async fn a_resubmitted_sweep_reuses_every_committed_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = scheduler(dir.path(), clock.clone());
    let first = scheduler.submit(SPEC).await.expect("submit");
    assert!(first.jobs > 0 && first.reused == 0);
    let id: SweepId = first.progress.sweep_id.parse().expect("id");
    while let Some(lease) = scheduler.lease("w", Duration::ZERO).await.expect("lease") {
        scheduler.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
    }
    let done = scheduler.progress(&id).await.expect("progress");
    assert_eq!((done.status, done.succeeded), (SweepStatus::Finished, first.jobs));
    let report = scheduler.report(&id).await.expect("report");
    assert!(report.missing.is_empty() && report.results as u64 == first.jobs);

    // A fresh coordinator (empty job store) on the same artifacts trains nothing again.
    let again = self::scheduler(dir.path(), clock);
    let second = again.submit(SPEC).await.expect("resubmit");
    assert_eq!(second.reused, second.jobs);
    assert_eq!(second.progress.status, SweepStatus::Finished);
    assert!(again.lease("w", Duration::ZERO).await.expect("lease").is_none());
    let id: SweepId = second.progress.sweep_id.parse().expect("id");
    let replayed = again.report(&id).await.expect("report");
    assert_eq!(serde_json::to_value(&replayed.lines).ok(), serde_json::to_value(&report.lines).ok());
}

#[tokio::test]
async fn an_expired_lease_is_released_and_its_late_result_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = scheduler(dir.path(), clock.clone());
    scheduler.submit(SPEC).await.expect("submit");
    let first = scheduler.lease("slow", Duration::ZERO).await.expect("lease").expect("a job");
    let result = compute(&first);
    clock.0.fetch_add(1_000, Ordering::SeqCst);
    let reaped = scheduler.store().reap(clock.now_ms()).await.expect("reap");
    assert_eq!(reaped, vec![first.lease.key]);
    clock.0.fetch_add(100, Ordering::SeqCst);
    let mut second = scheduler.lease("fast", Duration::ZERO).await.expect("lease").expect("a job");
    while second.lease.key != first.lease.key {
        scheduler.report_result(&second.lease.key, second.lease.token, "fast", compute(&second)).await.expect("commit");
        second = scheduler.lease("fast", Duration::ZERO).await.expect("lease").expect("the released job");
    }
    assert_eq!(second.lease.token.attempt, 2);
    let late = scheduler.report_result(&first.lease.key, first.lease.token, "slow", result.clone()).await;
    assert!(matches!(late, Err(SchedulerError::LeaseLost(_))), "{late:?}");
    assert!(!scheduler.artifacts().has_result(&first.lease.key).await.expect("head"), "a stale result was written");
    let beat = scheduler.heartbeat(&first.lease.key, first.lease.token, "slow").await;
    assert!(matches!(beat, Err(SchedulerError::LeaseLost(_))), "{beat:?}");
    // The current lease's token from another worker is refused too, and writes nothing.
    let intruder = scheduler.report_result(&second.lease.key, second.lease.token, "slow", result.clone()).await;
    assert!(matches!(intruder, Err(SchedulerError::LeaseLost(TransitionError::NotHolder { .. }))), "{intruder:?}");
    assert!(
        !scheduler.artifacts().has_result(&first.lease.key).await.expect("head"),
        "another worker's result was written"
    );
    scheduler
        .report_result(&second.lease.key, second.lease.token, "fast", result.clone())
        .await
        .expect("current attempt commits");
    assert!(scheduler.artifacts().has_result(&first.lease.key).await.expect("head"));
    // A retried report of the winner is accepted and republishes a result lost meanwhile.
    let path = dir.path().join(format!("results/{}.pb", first.lease.key));
    let committed = std::fs::read(&path).expect("result file");
    std::fs::remove_file(&path).expect("lose the result");
    scheduler.report_result(&second.lease.key, second.lease.token, "fast", result).await.expect("retried report");
    assert_eq!(std::fs::read(&path).expect("republished"), committed);
}

#[tokio::test]
async fn invalid_specs_name_the_field_and_queue_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(0))));
    let bad = SPEC.replace("params = { epochs = 3 }", "params = { epochs = -3 }");
    let Err(SchedulerError::InvalidSpec(errors)) = scheduler.submit(&bad).await else { panic!("accepted a bad spec") };
    assert!(errors.fields().iter().any(|f| f.starts_with("models[0].params")), "{errors}");
    let Err(SchedulerError::InvalidSpec(errors)) = scheduler.submit(&SPEC.replace("max_age = 21", "max_age = 0")).await
    else {
        panic!("accepted max_age 0")
    };
    assert_eq!(errors.fields(), vec!["plan.max_age"]);
    assert!(scheduler.list().await.expect("list").is_empty());
    assert_eq!(scheduler.store().depth().await.expect("depth").queued, 0);
}

/// A backtest needs the panel's 1-day returns: a panel file without them is refused at
/// submission, naming `backtest`, and nothing is queued; the synthetic market builds them.
#[tokio::test]
async fn a_backtest_on_a_panel_without_daily_returns_is_refused_at_submission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(0))));
    let panel = load_dataset("synth:stocks=40,days=400,seed=5", &[5], None).expect("synth").panel;
    let path = dir.path().join("weekly.parquet");
    wf_data::panel_file::write_panel(&path, &panel).expect("write");
    let backtest = format!("{SPEC}[backtest]\nk = 5\nrebalance = \"weekly\"\n");
    let on_file = backtest.replace("synth:stocks=40,days=400,seed=5", &path.display().to_string());
    let Err(SchedulerError::InvalidSpec(errors)) = scheduler.submit(&on_file).await else {
        panic!("accepted a backtest without daily returns")
    };
    assert_eq!(errors.fields(), vec!["backtest"]);
    assert!(errors.to_string().contains("fwd_ret_1"), "{errors}");
    assert_eq!(scheduler.store().depth().await.expect("depth").queued, 0);
    scheduler.submit(&backtest).await.expect("the synthetic market has daily returns");
}

#[tokio::test]
async fn a_job_store_that_lost_its_state_is_rebuilt_from_the_artifact_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = scheduler(dir.path(), clock.clone());
    let submitted = scheduler.submit(SPEC).await.expect("submit");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    // Half the jobs commit, one is leased when the store's state is lost.
    let half = submitted.jobs / 2;
    for _ in 0..half {
        let lease = scheduler.lease("w", Duration::ZERO).await.expect("lease").expect("a job");
        scheduler.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
    }
    let in_flight = scheduler.lease("w", Duration::ZERO).await.expect("lease").expect("a job");

    // A coordinator on an empty job store (Redis restarted without persistence).
    let rebuilt = self::scheduler(dir.path(), clock);
    assert!(rebuilt.list().await.expect("list").is_empty());
    let restored = rebuilt.reconcile().await.expect("reconcile");
    assert_eq!(
        restored,
        Reconciled { sweeps_restored: 1, jobs_requeued: (submitted.jobs - half) as usize, repaired: 0 }
    );
    assert_eq!(rebuilt.reconcile().await.expect("again"), Reconciled::default(), "not idempotent");
    let progress = rebuilt.progress(&id).await.expect("progress");
    assert_eq!((progress.succeeded, progress.queued), (half, submitted.jobs - half));

    // The worker that held a lease before the loss keeps its work: its lease is newer
    // than anything the rebuilt store handed out, so its result completes the job.
    rebuilt
        .report_result(&in_flight.lease.key, in_flight.lease.token, "w", compute(&in_flight))
        .await
        .expect("the orphaned lease's result is taken");
    // Leases now come from a new epoch: no token of the lost state is handed out again.
    let next = rebuilt.lease("w", Duration::ZERO).await.expect("lease").expect("a job");
    assert!(
        next.lease.token.epoch > in_flight.lease.token.epoch,
        "{} after {}",
        next.lease.token,
        in_flight.lease.token
    );
    rebuilt.report_result(&next.lease.key, next.lease.token, "w", compute(&next)).await.expect("commit");
    while let Some(lease) = rebuilt.lease("w", Duration::ZERO).await.expect("lease") {
        rebuilt.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
    }
    let done = rebuilt.progress(&id).await.expect("progress");
    assert_eq!((done.status, done.succeeded), (SweepStatus::Finished, submitted.jobs));
    assert!(rebuilt.report(&id).await.expect("report").missing.is_empty());
}

#[tokio::test]
async fn a_later_sweep_runs_the_jobs_a_cancelled_sweep_left_undone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = scheduler(dir.path(), clock);
    let first = scheduler.submit(SPEC).await.expect("submit");
    let first_id: SweepId = first.progress.sweep_id.parse().expect("id");
    let lease = scheduler.lease("w", Duration::ZERO).await.expect("lease").expect("a job");
    scheduler.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
    let cancelled = scheduler.cancel(&first_id).await.expect("cancel");
    assert_eq!((cancelled.succeeded, cancelled.cancelled), (1, first.jobs - 1));
    // A reconciliation does not bring the cancelled sweep back.
    assert_eq!(scheduler.reconcile().await.expect("reconcile"), Reconciled::default());
    assert!(scheduler.lease("w", Duration::ZERO).await.expect("lease").is_none());

    let second = scheduler.submit(SPEC).await.expect("resubmit");
    assert_eq!((second.jobs, second.reused), (first.jobs, 1));
    let second_id: SweepId = second.progress.sweep_id.parse().expect("id");
    let mut ran = 0;
    while let Some(lease) = scheduler.lease("w", Duration::ZERO).await.expect("lease") {
        assert_eq!(lease.lease.sweep, second_id, "a resubmitted job still belongs to the cancelled sweep");
        scheduler.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
        ran += 1;
    }
    assert_eq!(ran, first.jobs - 1);
    let done = scheduler.progress(&second_id).await.expect("progress");
    assert_eq!((done.status, done.succeeded), (SweepStatus::Finished, first.jobs));
    assert_eq!(scheduler.progress(&first_id).await.expect("progress").status, SweepStatus::Cancelled);
}

/// Over a real loopback socket: a report with `lease_next` commits the result and
/// hands out the next ready job, until none is left.
#[tokio::test]
async fn a_report_can_lease_the_next_job_over_grpc() {
    use v1::worker_service_client::WorkerServiceClient;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = Arc::new(scheduler(dir.path(), clock));
    let submitted = scheduler.submit(SPEC).await.expect("submit");
    assert!(submitted.jobs >= 3, "{} jobs", submitted.jobs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::server::serve(scheduler.clone(), listener, shutdown.clone()));
    let mut client = WorkerServiceClient::connect(address).await.expect("connect");
    let worker_id = client
        .register_worker(v1::RegisterWorkerRequest {
            protocol_version: wf_proto::PROTOCOL_VERSION,
            trainer_version: wf_shared::model::TRAINER_VERSION,
            name: "test".into(),
            device: "cpu".into(),
            capacity: 1,
        })
        .await
        .expect("register")
        .into_inner()
        .worker_id;
    let granted = |lease: v1::JobLease| JobLease {
        lease: Lease {
            key: JobKey::try_from(lease.job_key).expect("key"),
            sweep: lease.sweep_id.parse().expect("sweep"),
            token: Token { epoch: lease.epoch, attempt: lease.attempt },
            expires_at: 0,
        },
        spec_toml: lease.spec_toml,
        dataset: lease.dataset.expect("dataset").try_into().expect("dataset ref"),
        lease_ms: i64::from(lease.lease_ms),
        training: None,
        max_job_ms: None,
    };
    let report = |lease: &JobLease, lease_next: bool| v1::ReportResultRequest {
        worker_id: worker_id.clone(),
        job_key: lease.lease.key.to_string(),
        attempt: lease.lease.token.attempt,
        epoch: lease.lease.token.epoch,
        result: Some(compute(lease)),
        lease_next,
    };
    let first = client
        .lease_job(v1::LeaseJobRequest {
            worker_id: worker_id.clone(),
            wait_ms: 0,
            holding: Vec::new(),
            reports_holding: false,
        })
        .await;
    let mut lease = granted(first.expect("lease").into_inner().lease.expect("a job is ready"));
    // Without `lease_next` nothing comes back, though jobs are ready.
    let plain = client.report_result(report(&lease, false)).await.expect("report").into_inner();
    assert!(plain.next.is_none());
    let second = client
        .lease_job(v1::LeaseJobRequest {
            worker_id: worker_id.clone(),
            wait_ms: 0,
            holding: Vec::new(),
            reports_holding: false,
        })
        .await;
    lease = granted(second.expect("lease").into_inner().lease.expect("a job is ready"));
    let mut seen = vec![lease.lease.key];
    loop {
        let answer = client.report_result(report(&lease, true)).await.expect("report").into_inner();
        let Some(next) = answer.next else { break };
        lease = granted(next);
        assert_eq!(lease.lease.token.attempt, 1);
        assert!(!seen.contains(&lease.lease.key), "job {} leased twice", lease.lease.key.short());
        seen.push(lease.lease.key);
    }
    assert_eq!(seen.len() as u64 + 1, submitted.jobs, "every other job came with a report");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    let done = scheduler.progress(&id).await.expect("progress");
    assert_eq!((done.status, done.succeeded), (SweepStatus::Finished, submitted.jobs));
    shutdown.cancel();
    server.await.expect("server task").expect("server");
}

#[tokio::test]
async fn cancelling_a_sweep_leaves_the_jobs_another_live_sweep_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(1_000_000))));
    let first = scheduler.submit(SPEC).await.expect("submit");
    // The same jobs, deduplicated into the first sweep's.
    let second = scheduler.submit(SPEC).await.expect("submit again");
    let (a, b): (SweepId, SweepId) =
        (first.progress.sweep_id.parse().expect("id"), second.progress.sweep_id.parse().expect("id"));
    let cancelled = scheduler.cancel(&a).await.expect("cancel the first");
    assert_eq!((cancelled.status, cancelled.cancelled), (SweepStatus::Cancelled, 0), "{cancelled:?}");
    let live = scheduler.progress(&b).await.expect("progress");
    assert_eq!((live.status, live.queued), (SweepStatus::Running, second.jobs), "the second sweep lost its jobs");
    assert_eq!(run_all(&scheduler).await as u64, second.jobs);
    // Once no live sweep needs them, a cancel cancels.
    let third: SweepId = scheduler
        .submit(&SPEC.replace("max_age = 21", "max_age = 20"))
        .await
        .expect("submit")
        .progress
        .sweep_id
        .parse()
        .expect("id");
    let ended = scheduler.cancel(&third).await.expect("cancel the third");
    assert!(ended.cancelled > 0 && ended.queued == 0, "{ended:?}");
}

#[tokio::test]
async fn a_sweep_limits_its_attempts_by_its_size_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let store: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new(RetryPolicy::default()));
    let artifacts = ArtifactStore::open(&dir.path().display().to_string()).expect("artifacts");
    let config = SchedulerConfig { lease_ms: 1_000, reconcile_every: None, ..SchedulerConfig::default() };
    assert_eq!(config.job_limit, JobLimit::FromSpec);
    let scheduler = Scheduler::new(store.clone(), artifacts, clock.clone(), config);
    let submitted = scheduler.submit(SPEC).await.expect("submit");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    let record = store.sweep(&id).await.expect("read").expect("the sweep");
    let parsed = SweepConfig::from_toml(SPEC).expect("spec");
    let stocks = scheduler.planned(&record).await.expect("plan").summary.stocks;
    let limit = default_job_limit_ms(&parsed, stocks);
    assert_eq!(record.max_job_ms, Some(limit));
    assert!(limit > 30 * 60_000, "the size adds to the 30 minutes: {limit}");
    // A bigger sweep (more epochs, a PatchTST) gets a longer limit.
    let bigger = SPEC.replace("params = { epochs = 3 }", "params = { epochs = 30 }");
    let bigger = default_job_limit_ms(&SweepConfig::from_toml(&bigger).expect("spec"), stocks);
    assert!(bigger > limit, "{bigger} <= {limit}");
    // Every lease of the sweep carries the deadline, heartbeats or not.
    let lease = scheduler.lease("w", Duration::ZERO).await.expect("lease").expect("a job");
    let state = store.job(&lease.lease.key).await.expect("read").expect("the job").state;
    assert_eq!(state.max_ms, Some(limit));
    assert!(matches!(state.phase, Phase::Leased { deadline: Some(d), .. } if d == clock.now_ms() + limit), "{state:?}");
}

#[tokio::test]
async fn a_spec_cannot_raise_the_coordinators_ceilings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new(RetryPolicy::default()));
    let artifacts = ArtifactStore::open(&dir.path().display().to_string()).expect("artifacts");
    let config = SchedulerConfig {
        reconcile_every: None,
        max_jobs_per_sweep: 3,
        max_synth_cells: 40 * 400,
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::new(store.clone(), artifacts, Arc::new(ManualClock(AtomicI64::new(0))), config);
    // The spec asks for up to a million jobs; the coordinator allows 3.
    let greedy = format!("{SPEC}\n[limits]\nmax_jobs = 1000000\n");
    let Err(SchedulerError::InvalidSpec(errors)) = scheduler.submit(&greedy).await else { panic!("accepted") };
    assert_eq!(errors.fields(), vec!["limits.max_jobs"]);
    assert!(errors.to_string().contains("more than the limit of 3"), "{errors}");
    let huge = SPEC.replace("stocks=40,days=400", "stocks=20000,days=20000");
    let started = std::time::Instant::now();
    let Err(SchedulerError::InvalidSpec(errors)) = scheduler.submit(&huge).await else { panic!("accepted") };
    assert_eq!(errors.fields(), vec!["dataset.panel"]);
    assert!(errors.to_string().contains("400000000 stock-days") && errors.to_string().contains("16000"), "{errors}");
    println!("a 20,000 x 20,000 synth: market refused in {:?}", started.elapsed());
    // The largest grid the list limits allow, 64 windows x 64 cadences x 64 models of
    // 1,000 seeds, over 17 months: over 10^9 jobs by window x cadence. Counted, not planned.
    let windows: Vec<String> = (20..84).map(|w| w.to_string()).collect();
    let cadences: Vec<String> = (1..65).map(|c| format!("\"{c}d\"")).collect();
    let seeds: Vec<String> = (0..1000).map(|s| s.to_string()).collect();
    let mut grid = SPEC
        .replace("stocks=40,days=400", "stocks=20,days=800")
        .replace("end = 2021-12-31", "end = 2022-12-30")
        .replace("train_windows = [126]", &format!("train_windows = [{}]", windows.join(",")))
        .replace("cadences = [\"monthly\", \"quarterly\"]", &format!("cadences = [{}]", cadences.join(",")))
        .replace("seeds = [0]", &format!("seeds = [{}]", seeds.join(",")));
    let model = grid[grid.find("[[models]]").expect("models")..].to_string();
    for n in 1..64 {
        let model = model.replace("epochs = 3", &format!("epochs = {}", n + 3));
        grid.push_str(&model.replace("name = \"linear\"", &format!("name = \"linear{n}\"")));
    }
    // The dataset is loaded (and cached) first, as for any sweep: time the refusal alone.
    let _ = scheduler.submit(&grid.replace("train_windows = [", "train_windows = [0,")).await;
    // The best of three, so that another test busy on the same cores does not decide it.
    let mut elapsed = std::time::Duration::MAX;
    let mut errors = None;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let refused = scheduler.submit(&grid).await;
        elapsed = elapsed.min(started.elapsed());
        let Err(SchedulerError::InvalidSpec(refusal)) = refused else { panic!("{:?}", refused.map(|_| ())) };
        errors = Some(refusal);
    }
    let errors = errors.expect("refused");
    println!("a {}-byte spec of over 10^9 jobs refused in {elapsed:?}: {errors}", grid.len());
    assert!(elapsed < std::time::Duration::from_millis(100), "{elapsed:?}");
    assert!(errors.to_string().contains("more than the limit of 3"), "{errors}");
    assert_eq!(store.depth().await.expect("depth"), crate::store::QueueDepth::default(), "nothing queued");
    assert!(store.sweeps().await.expect("sweeps").is_empty());
}

mod prepared;
mod reports;

/// A memory store whose next lease is granted and then answered with an error, as a
/// Redis command that timed out and ran anyway.
#[derive(Debug)]
struct LostAnswers {
    inner: MemoryJobStore,
    lose_next_lease: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl JobStore for LostAnswers {
    fn policy(&self) -> RetryPolicy {
        self.inner.policy()
    }
    async fn enqueue_limited(
        &self,
        sweep: &SweepId,
        keys: &[JobKey],
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        self.inner.enqueue_limited(sweep, keys, max_ms, now).await
    }
    async fn resubmit(&self, sweep: &SweepId, keys: &[JobKey], now: UnixMs) -> Result<usize, StoreError> {
        self.inner.resubmit(sweep, keys, now).await
    }
    async fn lease(
        &self,
        worker: &str,
        lease_ms: i64,
        max_ms: Option<i64>,
        now: UnixMs,
    ) -> Result<Option<Lease>, StoreError> {
        let granted = self.inner.lease(worker, lease_ms, max_ms, now).await?;
        if self.lose_next_lease.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Backend("timed out".into()));
        }
        Ok(granted)
    }
    async fn epoch_check(&self) -> Result<EpochCheck, StoreError> {
        self.inner.epoch_check().await
    }
    async fn start_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        self.inner.start_epoch(epoch).await
    }
    async fn repair(&self, now: UnixMs) -> Result<crate::store::Repaired, StoreError> {
        self.inner.repair(now).await
    }
    async fn set_owner(&self, key: &JobKey, sweep: &SweepId) -> Result<(), StoreError> {
        self.inner.set_owner(key, sweep).await
    }
    async fn apply(
        &self,
        key: &JobKey,
        event: &wf_shared::job::JobEvent,
        now: UnixMs,
    ) -> Result<wf_shared::job::JobState, StoreError> {
        self.inner.apply(key, event, now).await
    }
    async fn reap(&self, now: UnixMs) -> Result<Vec<JobKey>, StoreError> {
        self.inner.reap(now).await
    }
    async fn leased(&self) -> Result<Vec<JobKey>, StoreError> {
        self.inner.leased().await
    }
    async fn job(&self, key: &JobKey) -> Result<Option<crate::store::JobRecord>, StoreError> {
        self.inner.job(key).await
    }
    async fn states(&self, keys: &[JobKey]) -> Result<Vec<Option<wf_shared::job::JobState>>, StoreError> {
        self.inner.states(keys).await
    }
    async fn depth(&self) -> Result<crate::store::QueueDepth, StoreError> {
        self.inner.depth().await
    }
    async fn put_sweep(&self, sweep: &SweepRecord) -> Result<(), StoreError> {
        self.inner.put_sweep(sweep).await
    }
    async fn sweep(&self, id: &SweepId) -> Result<Option<SweepRecord>, StoreError> {
        self.inner.sweep(id).await
    }
    async fn sweeps(&self) -> Result<Vec<SweepRecord>, StoreError> {
        self.inner.sweeps().await
    }
}

#[tokio::test]
async fn a_lease_whose_answer_was_lost_is_handed_to_its_worker_again_not_left_to_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let store = Arc::new(LostAnswers { inner: MemoryJobStore::new(POLICY), lose_next_lease: false.into() });
    let scheduler = scheduler_over(store.clone(), dir.path(), clock.clone());
    scheduler.submit(SPEC).await.expect("submit");
    let lease = |worker: &'static str, holding: Vec<JobKey>| {
        let scheduler = &scheduler;
        async move { scheduler.lease_holding(worker, Duration::ZERO, Some(&holding)).await }
    };
    // The worker runs one job; its next lease call fails after the store granted it.
    let running = lease("w", vec![]).await.expect("lease").expect("a job");
    store.lose_next_lease.store(true, Ordering::SeqCst);
    let lost = lease("w", vec![running.lease.key]).await;
    assert!(lost.is_err(), "{lost:?}");
    let leased = scheduler.store().leased().await.expect("leased");
    assert_eq!(leased.len(), 2, "the failed call leased a job all the same");
    let orphan = *leased.iter().find(|key| **key != running.lease.key).expect("the orphan");
    // Another worker whose own call failed too is not handed it.
    store.lose_next_lease.store(true, Ordering::SeqCst);
    assert!(lease("v", vec![]).await.is_err());
    let v_orphan = *scheduler
        .store()
        .leased()
        .await
        .expect("leased")
        .iter()
        .find(|key| ![running.lease.key, orphan].contains(key))
        .expect("v's orphan");
    let for_v = lease("v", vec![]).await.expect("lease").expect("a job");
    assert_eq!(for_v.lease.key, v_orphan, "v gets its own lost lease, not w's");
    // The worker's next call gets its lost job, under the token it was granted with, not a
    // new one; the job it runs is not handed to it twice, nor the lost one to a second slot.
    let again = lease("w", vec![running.lease.key]).await.expect("lease").expect("a job");
    assert_eq!((again.lease.key, again.lease.token.attempt), (orphan, 1));
    assert_eq!(scheduler.store().leased().await.expect("leased").len(), 3, "no new lease was granted");
    let second_slot = lease("w", vec![running.lease.key]).await.expect("lease").expect("a job");
    assert!(![running.lease.key, orphan, v_orphan].contains(&second_slot.lease.key), "handed twice");
    // An older worker, which says nothing of what it runs, is never handed one again.
    store.lose_next_lease.store(true, Ordering::SeqCst);
    assert!(lease("u", vec![]).await.is_err());
    let taken = [running.lease.key, orphan, v_orphan, second_slot.lease.key];
    let leased = scheduler.store().leased().await.expect("leased");
    let u_orphan = *leased.iter().find(|key| !taken.contains(key)).expect("u's orphan");
    let old = scheduler.lease_holding("u", Duration::ZERO, None).await.expect("lease");
    assert!(old.as_ref().is_none_or(|l| l.lease.key != u_orphan), "an older worker was handed its lost lease");
    // It commits under the token it was handed again: no attempt lost, nothing expired.
    scheduler.report_result(&orphan, again.lease.token, "w", compute(&again)).await.expect("commit");
    let state = scheduler.store().job(&orphan).await.expect("job").expect("state").state;
    assert_eq!((state.attempts_made, state.expiries), (1, 0), "{state:?}");
}
