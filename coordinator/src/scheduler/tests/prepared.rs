//! Sweeps on prepared panel files: planned from their metadata, trained by days, and
//! commits recovered from their results.

use super::*;

/// A sweep on a prepared panel is planned from the file's metadata: submitting reads no
/// value (nothing loaded), the jobs are those planned on the whole panel, and its report
/// loads the values, refusing them once the file changed after the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_on_a_prepared_panel_is_planned_from_its_metadata_and_its_report_checks_the_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(0))));
    let whole = load_dataset("synth:stocks=40,days=400,seed=5", &[5], None).expect("synth");
    let path = dir.path().join("panel.parquet");
    wf_data::panel_file::write_panel(&path, &whole.panel).expect("write");
    let on_file = SPEC.replace("synth:stocks=40,days=400,seed=5", &path.display().to_string());
    let submitted = scheduler.submit(&on_file).await.expect("submit");
    assert!(lock(&scheduler.datasets).is_empty(), "submitting read the panel's values");
    let config = SweepConfig::from_toml(&on_file).expect("spec");
    let expected = plan_panel(&config, &whole.panel, &whole.digests).expect("plan");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    let record = scheduler.sweep_record(&id).await.expect("record");
    assert_eq!(record.jobs, expected.jobs.iter().map(|job| job.key).collect::<Vec<_>>());
    assert_eq!(record.dataset.content_hash, whole.content_hash);

    run_all(&scheduler).await;
    let report = scheduler.report(&record.id).await.expect("report");
    assert!(report.missing.is_empty());
    assert_eq!(lock(&scheduler.datasets).len(), 1, "the report read the values");

    // The file changes; a coordinator that has not loaded it yet refuses to report on it.
    let other = load_dataset("synth:stocks=40,days=400,seed=6", &[5], None).expect("synth");
    wf_data::panel_file::write_panel(&path, &other.panel).expect("rewrite");
    lock(&scheduler.datasets).clear();
    let refused = scheduler.report(&record.id).await.expect_err("changed values").to_string();
    assert!(refused.contains("the file changed"), "{refused}");
}

/// A Redis killed and restarted from an append-only file written every second may lose
/// writes it acknowledged: here, a commit. The job comes back as leased, its lease
/// expires, and the next lease must find the committed result instead of training the
/// job again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_job_store_lost_is_recovered_from_the_result_not_trained_again() {
    let server = crate::testing::RedisServer::start().expect("redis-server");
    let store = crate::store::RedisJobStore::connect(&server.url(), "lost", POLICY).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = scheduler_over(Arc::new(store), dir.path(), clock.clone());
    let submitted = scheduler.submit(SPEC).await.expect("submit");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    let first = scheduler.lease("a", Duration::ZERO).await.expect("lease").expect("a job");
    let key = first.lease.key;
    let mut redis = redis::Client::open(server.url()).expect("url").get_connection().expect("connection");
    let leased_state: String =
        redis::cmd("HGET").arg("wf:{lost}:jobs").arg(key.to_string()).query(&mut redis).expect("HGET");
    scheduler.report_result(&key, first.lease.token, "a", compute(&first)).await.expect("commit");
    let path = dir.path().join(format!("results/{key}.pb"));
    let committed = std::fs::read(&path).expect("the committed result");

    // The rollback: the job's state and index entry as they were before the commit.
    let () = redis::cmd("HSET")
        .arg("wf:{lost}:jobs")
        .arg(key.to_string())
        .arg(&leased_state)
        .query(&mut redis)
        .expect("HSET");
    let () = redis::cmd("ZADD")
        .arg("wf:{lost}:leased")
        .arg(first.lease.expires_at)
        .arg(key.to_string())
        .query(&mut redis)
        .expect("ZADD");
    clock.0.fetch_add(3_000, Ordering::SeqCst);
    scheduler.reap_once().await.expect("reap");
    let requeued = scheduler.store().job(&key).await.expect("job").expect("the job");
    assert!(
        matches!(requeued.state.phase, Phase::Queued { .. }),
        "the lost commit's job is not back in the queue: {requeued:?}"
    );
    clock.0.fetch_add(1_000, Ordering::SeqCst);

    let mut trained = 0;
    while let Some(lease) = scheduler.lease("b", Duration::ZERO).await.expect("lease") {
        assert_ne!(lease.lease.key, key, "a job whose result was committed was leased to be trained again");
        scheduler.report_result(&lease.lease.key, lease.lease.token, "b", compute(&lease)).await.expect("commit");
        trained += 1;
    }
    assert_eq!(trained as u64, submitted.jobs - 1, "every other job is trained once");
    let recovered = scheduler.store().job(&key).await.expect("job").expect("the job");
    assert!(matches!(recovered.state.phase, Phase::Succeeded { .. }), "{recovered:?}");
    assert_eq!(std::fs::read(&path).expect("the result"), committed, "the committed result changed");
    let progress = scheduler.progress(&id).await.expect("progress");
    assert_eq!((progress.status, progress.succeeded), (SweepStatus::Finished, submitted.jobs));
}

/// A worker trains a sweep on a prepared panel file reading only each job's days (planned
/// on the file's metadata, the days checked against its per-day digests): every committed
/// result is the one the whole panel gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_trains_a_prepared_panel_by_days_with_the_whole_panels_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = Arc::new(scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(0)))));
    let whole = load_dataset("synth:stocks=40,days=400,seed=5", &[5], None).expect("synth");
    let path = dir.path().join("panel.parquet");
    wf_data::panel_file::write_panel(&path, &whole.panel).expect("write");
    let summary = wf_data::dataset::open(&path.display().to_string(), &[], None, &wf_data::dataset::DataRoots::Any)
        .and_then(|source| source.days_summary());
    assert!(summary.expect("readable").is_some(), "a prepared panel is read by days");
    let on_file = SPEC.replace("synth:stocks=40,days=400,seed=5", &path.display().to_string());
    let submitted = scheduler.submit(&on_file).await.expect("submit");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    let served = serve_with_a_worker(scheduler.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while scheduler.progress(&id).await.expect("progress").status != SweepStatus::Finished {
        assert!(tokio::time::Instant::now() < deadline, "the worker did not finish the sweep");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served.stop().await;
    let config = SweepConfig::from_toml(&on_file).expect("spec");
    let plan = plan_panel(&config, &whole.panel, &whole.digests).expect("plan");
    assert_eq!(plan.jobs.len() as u64, submitted.jobs);
    for job in &plan.jobs {
        let mut committed = scheduler.verified_result(&job.key, reuse::Expected::Planned(&job.identity)).await;
        let committed = committed.as_mut().expect("read").as_mut().expect("committed");
        let output = wf_worker::job::run_job(&whole.panel, &config, job, &candle_core::Device::Cpu).expect("runs");
        let mut expected = v1::JobResult::from(output.result());
        for result in [&mut *committed, &mut expected] {
            result.training.as_mut().expect("training").seconds = 0.0;
            result.identity.clear();
        }
        assert_eq!(*committed, expected, "job {}", job.key.short());
    }
}

/// A grant overtaken before it is handed out (it expired, and the attempt granted next
/// committed meanwhile) finds the committed result: it is void and the job is done, not
/// an error of the lease call (a worker's `LeaseJob` failed on it under concurrency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_overtaken_by_a_later_commit_is_void_not_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = scheduler(dir.path(), clock.clone());
    scheduler.submit(SPEC).await.expect("submit");
    let first = scheduler.lease("a", Duration::ZERO).await.expect("lease").expect("a job");
    let key = first.lease.key;
    clock.0.fetch_add(3_000, Ordering::SeqCst);
    scheduler.reap_once().await.expect("reap");
    clock.0.fetch_add(1_000, Ordering::SeqCst);
    let second = loop {
        let lease = scheduler.lease("b", Duration::ZERO).await.expect("lease").expect("a job");
        if lease.lease.key == key {
            break lease;
        }
    };
    scheduler.report_result(&key, second.lease.token, "b", compute(&second)).await.expect("commit");
    let committed = std::fs::read(dir.path().join(format!("results/{key}.pb"))).expect("result");
    let void = scheduler.complete_if_committed(&first.lease, "a").await.expect("not an error");
    assert!(void, "the overtaken grant is not handed out");
    let state = scheduler.store().job(&key).await.expect("job").expect("the job").state;
    assert!(matches!(state.phase, Phase::Succeeded { .. }), "{state:?}");
    assert_eq!(std::fs::read(dir.path().join(format!("results/{key}.pb"))).expect("result"), committed);
}
