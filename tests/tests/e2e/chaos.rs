//! The chaos suite: a sweep on the synthetic market run by real processes (a
//! `redis-server` with an append-only file fsynced every second, a `wf coordinator`, `wf
//! worker`s) under a scripted fault, then checked strictly: the report's tables
//! (`lines`, `decay`, `series`) equal a fault-free `wf run` of the same spec value for
//! value (wall-clock training times aside), every job's result was committed exactly
//! once, no job was trained more often than the faults explain, and every expiry and
//! preemption was counted.
//!
//! Each scenario prints one line (`chaos <scenario>: ...`) with what it counted; the
//! table of `docs/BENCHMARKS.md`, "The chaos suite", is made of them. The tests share a
//! nextest group that runs one at a time (`.config/nextest.toml`): they measure leases in
//! seconds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use wf_coordinator::testing::RedisServer;
use wf_tests::{Process, wait_until, wf_binary, wf_in};

use super::cluster::{Cluster, LIMIT, Placement};
use wf_tests::net::Namespace;

/// Lease length: short, so that faults show within seconds.
const LEASE_MS: u32 = 2_000;
/// The workers' SIGTERM grace period.
const GRACE_SECONDS: u64 = 10;

/// The chaos sweep: 30 distinct trainings of a small MLP (weekly and monthly retraining
/// over half a year). In CI, 60 stocks and 60 epochs (a sweep of a few seconds); with
/// `WF_CHAOS_FULL=1`, 1,000 stocks and 200 epochs, about a minute, so that every fault
/// lands on long trainings.
pub(super) fn spec() -> String {
    let small = super::cluster::spec("\"weekly\", \"monthly\"", 60);
    if full() { small.replace("stocks=60", "stocks=1000").replace("epochs = 60", "epochs = 200") } else { small }
}

/// Whether the full-size sweep runs (`WF_CHAOS_FULL=1`).
pub(super) fn full() -> bool {
    std::env::var("WF_CHAOS_FULL").is_ok_and(|v| v == "1")
}

/// The fault-free report of [`spec`], from `wf run`; computed once per build of `wf`
/// and kept in the temporary directory for the other scenarios (each runs in its own
/// process).
fn baseline() -> Value {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    spec().hash(&mut hasher);
    let built = std::fs::metadata(wf_binary()).and_then(|m| m.modified()).ok();
    format!("{built:?}").hash(&mut hasher);
    let path = std::env::temp_dir().join(format!("wf-chaos-baseline-{:016x}.json", hasher.finish()));
    if let Some(report) = std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()) {
        return report;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("spec.toml"), spec()).expect("spec");
    let run = wf_in(dir.path(), &["run", "spec.toml", "--workers", "2", "--json"], LIMIT);
    assert!(run.succeeded(), "the fault-free wf run failed: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("wf run JSON");
    let staging = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&staging, &run.stdout).expect("cache the baseline");
    std::fs::rename(&staging, &path).expect("cache the baseline");
    report
}

/// The report's tables, without wall-clock training times (the one figure that
/// differs between two trainings of the same job).
fn tables(report: &Value) -> Value {
    fn timeless(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .filter(|(k, _)| k.as_str() != "train_seconds")
                    .map(|(k, v)| (k.clone(), timeless(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(timeless).collect()),
            other => other.clone(),
        }
    }
    serde_json::json!({
        "lines": timeless(&report["lines"]),
        "decay": timeless(&report["decay"]),
        "series": timeless(&report["series"]),
    })
}

/// A cluster running the chaos sweep, with named workers and the logs of every
/// process that has come and gone.
pub(super) struct Chaos {
    pub(super) cluster: Cluster,
    /// The coordinator's lease length.
    lease_ms: u32,
    pub(super) workers: Vec<(String, Process)>,
    /// Output of processes that were killed or exited.
    gone: Vec<String>,
    pub(super) id: String,
    started: Instant,
    /// A coordinator was killed: its counters restarted with it.
    coordinator_killed: bool,
    /// The fault strikes between the coordinator and its store: the answer to a commit can
    /// be lost while the commit itself lands (the retried report then finds it done and
    /// publishes the result without counting a commit).
    pub(super) store_answers_lost: bool,
}

/// What one run counted, from the processes' logs and the final job states.
#[derive(Debug)]
pub(super) struct Counts {
    pub(super) jobs: usize,
    /// Trainings that ended in a reported failure (retried or dead-lettered).
    pub(super) failures: usize,
    /// Leases the reaper expired (their worker died or was cut off).
    pub(super) expiries: usize,
    /// Jobs handed back by draining workers.
    pub(super) preemptions: usize,
    /// Results committed (not republished).
    pub(super) commits: usize,
    /// Trainings started.
    pub(super) started: usize,
    /// Results the coordinator refused (stale lease, another worker).
    pub(super) refused: usize,
    seconds: f64,
}

fn output(process: &Process) -> String {
    format!("{}\n{}", process.stdout(), process.stderr())
}

impl Chaos {
    fn start(redis: RedisServer, options: &[&str]) -> Self {
        Self::start_networked(redis, LEASE_MS, options, Placement::default())
    }

    /// A chaos cluster whose coordinator leases for `lease_ms`, placed on the network as
    /// `placement` says.
    pub(super) fn start_networked(redis: RedisServer, lease_ms: u32, options: &[&str], placement: Placement) -> Self {
        let mut all = vec!["--reconcile-seconds", "1"];
        all.extend(options);
        let cluster = Cluster::start_networked(redis, lease_ms, &all, "artifacts", &[], placement);
        Self {
            cluster,
            lease_ms,
            workers: Vec::new(),
            gone: Vec::new(),
            id: String::new(),
            started: Instant::now(),
            coordinator_killed: false,
            store_answers_lost: false,
        }
    }

    fn worker(&mut self, name: &str, env: &[(&str, &str)]) {
        let url = self.cluster.url();
        self.worker_env(name, &url, None, env);
    }

    /// A worker named `name` that reaches the coordinator at `url`, inside `namespace`
    /// if given.
    pub(super) fn worker_at(&mut self, name: &str, url: &str, namespace: Option<&Namespace>) {
        self.worker_env(name, url, namespace, &[]);
    }

    fn worker_env(&mut self, name: &str, url: &str, namespace: Option<&Namespace>, env: &[(&str, &str)]) {
        let grace = GRACE_SECONDS.to_string();
        let args = ["worker", "--coordinator", url, "--device", "cpu", "--name", name, "--grace-seconds", &grace];
        let dir = self.cluster.dir.path();
        let process = match namespace {
            Some(namespace) => Process::start_in(namespace, dir, &args, env),
            None => Process::start(dir, &args, env),
        };
        self.workers.push((name.to_string(), process));
    }

    pub(super) fn submit(&mut self) {
        self.id = self.cluster.submit(&spec());
        self.started = Instant::now();
    }

    /// The worker process named `name`, out of the pool.
    pub(super) fn take(&mut self, name: &str) -> Process {
        let at = self.workers.iter().position(|(n, _)| n == name).unwrap_or_else(|| panic!("no worker {name}"));
        self.workers.remove(at).1
    }

    fn kill(&mut self, name: &str) {
        let victim = self.take(name);
        victim.signal("KILL");
        self.gone.push(output(&victim));
    }

    fn kill_coordinator(&mut self) {
        let coordinator = self.cluster.coordinator.take().expect("a coordinator");
        coordinator.signal("KILL");
        self.gone.push(output(&coordinator));
        self.coordinator_killed = true;
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(self.cluster.redis.url()).expect("url").get_connection().expect("redis connection")
    }

    /// Job key → state, as stored.
    pub(super) fn states(&self) -> Vec<(String, Value)> {
        self.cluster.job_states_by_key()
    }

    /// The jobs leased by the worker named `name`.
    pub(super) fn leased_by(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}-");
        self.states()
            .into_iter()
            .filter(|(_, s)| {
                s["phase"]["phase"] == "leased" && s["phase"]["worker"].as_str().is_some_and(|w| w.starts_with(&prefix))
            })
            .map(|(key, _)| key)
            .collect()
    }

    pub(super) fn succeeded(&self) -> usize {
        self.states().iter().filter(|(_, s)| s["phase"]["phase"] == "succeeded").count()
    }

    /// The store's lease epoch (its `~epoch` marker), if it has one.
    pub(super) fn epoch(&self) -> Option<u64> {
        let marker: Option<String> =
            redis::cmd("HGET").arg("wf:{default}:jobs").arg("~epoch").query(&mut self.redis()).ok().flatten();
        marker.and_then(|text| text.parse().ok())
    }

    /// Proves, at the moment of a fault, that it strikes an unfinished sweep: fewer jobs
    /// succeeded than the sweep has, and some are leased or queued. Returns the jobs
    /// leased then: key and attempt.
    ///
    /// With `WF_CHAOS_LATE=1` it first waits for the sweep to finish: every scenario that
    /// calls it must then fail here, which shows this check can fail.
    pub(super) fn unfinished(&self, scenario: &str) -> Vec<(String, u64)> {
        if std::env::var("WF_CHAOS_LATE").is_ok_and(|v| v == "1") {
            wait_until("the sweep finishes (WF_CHAOS_LATE)", LIMIT, || self.cluster.finished(&self.id));
        }
        let states = self.states();
        let jobs = self.cluster.report(&self.id)["jobs"].as_u64().unwrap_or(0) as usize;
        let phase = |name: &str| states.iter().filter(|(_, s)| s["phase"]["phase"] == name).count();
        let (succeeded, leased, queued) = (phase("succeeded"), phase("leased"), phase("queued"));
        assert!(
            succeeded < jobs && leased + queued > 0,
            "{scenario}: the fault would strike a finished sweep ({succeeded} of {jobs} succeeded, {leased} leased, \
             {queued} queued)"
        );
        states
            .into_iter()
            .filter(|(_, s)| s["phase"]["phase"] == "leased")
            .map(|(key, s)| (key, s["attempts_made"].as_u64().unwrap_or(0)))
            .collect()
    }

    /// Every log so far: processes gone, the coordinator, the workers.
    pub(super) fn logs(&self) -> String {
        let mut all = self.gone.join("\n");
        for process in self.cluster.coordinator.iter().chain(self.workers.iter().map(|(_, p)| p)) {
            all.push_str(&output(process));
        }
        all
    }

    /// The job keys with a committed result file in the artifact store.
    pub(super) fn result_keys(&self) -> BTreeSet<String> {
        self.cluster
            .results()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pb"))
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect()
    }

    /// The coordinator's counter `name`, when it is running and serves it (the counters
    /// the suite reads are registered at 0 at start: absent means renamed or gone).
    pub(super) fn counter(&self, name: &str) -> Option<f64> {
        self.cluster.coordinator.as_ref()?;
        wf_tests::metric(&self.cluster.metrics(), name, &[])
    }

    /// Waits for the sweep to end, then counts, from the job states and the artifact
    /// store (not from log lines): a commit is a succeeded job whose result file exists.
    pub(super) fn finish(&self) -> Counts {
        wait_until("the sweep finishes", Duration::from_secs(300), || self.cluster.finished(&self.id));
        let seconds = self.started.elapsed().as_secs_f64();
        // A job is finished once its commit is applied; its result file follows.
        let jobs = self.cluster.report(&self.id)["jobs"].as_u64().unwrap_or(0) as usize;
        let succeeded = || -> BTreeSet<String> {
            self.states().into_iter().filter(|(_, s)| s["phase"]["phase"] == "succeeded").map(|(k, _)| k).collect()
        };
        wait_until("every result published", Duration::from_secs(60), || succeeded().is_subset(&self.result_keys()));
        let states = self.states();
        let sum = |field: &str| states.iter().map(|(_, s)| s[field].as_u64().unwrap_or(0) as usize).sum::<usize>();
        // The sweep's jobs, from its manifest in the artifact store (after a FLUSHALL the
        // job states of committed jobs are gone: their results stand for them).
        let manifest = self.cluster.manifest(&self.id);
        let keys: BTreeSet<String> = manifest["jobs"]
            .as_array()
            .expect("manifest jobs")
            .iter()
            .filter_map(|job| job["key"].as_str().map(str::to_string))
            .collect();
        let results = self.result_keys();
        assert!(results.is_subset(&keys), "result files for jobs that are not the sweep's: {results:?}");
        assert!(succeeded().is_subset(&results), "a succeeded job without its result file");
        Counts {
            jobs,
            failures: sum("failures"),
            expiries: sum("expiries"),
            preemptions: sum("preemptions"),
            commits: keys.intersection(&results).count(),
            started: sum("attempts_made"),
            refused: self
                .cluster
                .coordinator
                .as_ref()
                .map(|_| self.counter("wf_results_rejected_total").expect("wf_results_rejected_total is served"))
                .unwrap_or(0.0) as usize,
            seconds,
        }
    }

    /// The strict criterion: the report equals the fault-free one, every job committed
    /// exactly once, one result file per job. Prints the scenario's line.
    pub(super) fn assert_clean(&self, scenario: &str, counts: &Counts) {
        let report = self.cluster.report(&self.id);
        assert_eq!(report["missing"].as_array().map(Vec::len), Some(0), "{scenario}: {report}");
        let equal = tables(&report) == tables(&baseline());
        assert!(equal, "{scenario}: the report differs from the fault-free wf run's");
        assert_eq!(counts.commits, counts.jobs, "{scenario}: {} of {} jobs committed", counts.commits, counts.jobs);
        assert_eq!(self.result_keys().len(), counts.jobs, "{scenario}: one result file per job");
        // Where the coordinator lived through the sweep, it counted each job at most once
        // (a second commit would show): a commit, or a job completed from its published
        // result (the commit was lost with the store, and the job leased again found its
        // result); and every job, unless an answer of the store could be lost.
        if !self.coordinator_killed {
            let committed = self.counter("wf_results_committed_total").expect("wf_results_committed_total is served");
            let recovered = self.counter("wf_results_recovered_total").expect("wf_results_recovered_total is served");
            let counted = (committed + recovered) as usize;
            let message = format!("{scenario}: results committed {committed} times and recovered {recovered} times");
            if self.store_answers_lost {
                assert!(counted <= counts.jobs, "{message}");
            } else {
                assert_eq!(counted, counts.jobs, "{message}");
            }
        }
        println!(
            "chaos {scenario}: jobs {}, leases {}, failures {}, expiries {}, preemptions {}, commits {}, refused {}, {:.0} s, report equal: {}",
            counts.jobs,
            counts.started,
            counts.failures,
            counts.expiries,
            counts.preemptions,
            counts.commits,
            counts.refused,
            counts.seconds,
            if equal { "yes" } else { "no" }
        );
    }
}

#[test]
fn chaos_kill_9_a_busy_worker_five_times() {
    let mut chaos = Chaos::start(RedisServer::start_persistent().expect("redis"), &[]);
    chaos.worker("steady", &[]);
    chaos.worker("victim-0", &[]);
    chaos.submit();
    for round in 0..5 {
        let name = format!("victim-{round}");
        wait_until("the victim holds a lease", LIMIT, || !chaos.leased_by(&name).is_empty());
        chaos.kill(&name);
        chaos.worker(&format!("victim-{}", round + 1), &[]);
    }
    let counts = chaos.finish();
    chaos.assert_clean("kill -9 a busy worker x5", &counts);
    assert_eq!(counts.expiries, 5, "each killed worker's lease expired once: {counts:?}");
    assert_eq!(counts.failures, 0);
    assert!(counts.started <= counts.jobs + 5, "more trainings than the kills explain: {counts:?}");
}

#[test]
fn chaos_sigstop_a_worker_past_its_lease_then_sigcont() {
    let mut chaos = Chaos::start(RedisServer::start_persistent().expect("redis"), &[]);
    chaos.worker("sleeper", &[]);
    chaos.submit();
    wait_until("the sleeper holds a lease", LIMIT, || !chaos.leased_by("sleeper").is_empty());
    let job = chaos.leased_by("sleeper").remove(0);
    let sleeper = chaos.take("sleeper");
    sleeper.signal("STOP");
    chaos.worker("rescuer", &[]);
    let result = chaos.cluster.dir.path().join(format!("artifacts/results/{job}.pb"));
    wait_until("the sleeper's job is done elsewhere", LIMIT, || result.exists());
    let committed = std::fs::read(&result).expect("result");
    sleeper.signal("CONT");
    wait_until("the sleeper is turned away", LIMIT, || {
        let log = sleeper.stderr();
        log.contains("lease lost") || log.contains("result refused")
    });
    chaos.workers.push(("sleeper".into(), sleeper));
    let counts = chaos.finish();
    assert_eq!(std::fs::read(&result).expect("result"), committed, "a stale attempt changed a committed result");
    chaos.assert_clean("SIGSTOP a worker past its lease, SIGCONT", &counts);
    assert!(counts.expiries >= 1, "the stopped worker's lease expired: {counts:?}");
    assert_eq!(counts.failures, 0);
}

#[test]
fn chaos_sigterm_a_busy_worker_hands_its_job_back_and_exits_in_time() {
    let mut chaos = Chaos::start(RedisServer::start_persistent().expect("redis"), &[]);
    chaos.worker("steady", &[]);
    chaos.worker("drained", &[]);
    chaos.submit();
    wait_until("the drained worker holds a lease", LIMIT, || !chaos.leased_by("drained").is_empty());
    let job = chaos.leased_by("drained").remove(0);
    let mut drained = chaos.take("drained");
    let signalled = Instant::now();
    drained.signal("TERM");
    wait_until("the job is back in the queue", Duration::from_secs(5), || {
        chaos.states().iter().any(|(key, s)| {
            *key == job
                && s["preemptions"] == 1
                && s["phase"]["worker"].as_str().is_none_or(|w| !w.starts_with("drained-"))
        })
    });
    assert_eq!(drained.wait(Duration::from_secs(GRACE_SECONDS)), Some(0), "{}", drained.stderr());
    let exited = signalled.elapsed();
    assert!(exited < Duration::from_secs(GRACE_SECONDS), "exited after {exited:?}");
    chaos.gone.push(output(&drained));
    let counts = chaos.finish();
    chaos.assert_clean("SIGTERM a busy worker", &counts);
    let state = chaos.states().into_iter().find(|(key, _)| *key == job).expect("the job").1;
    assert_eq!((state["preemptions"].as_u64(), state["failures"].as_u64()), (Some(1), Some(0)), "{state}");
    assert_eq!(counts.preemptions, 1);
    assert_eq!(counts.expiries, 0, "a handed back job is not expired: {counts:?}");
    println!(
        "chaos SIGTERM: the job was queued again and the worker exited {:.1} s after the signal",
        exited.as_secs_f64()
    );
}

#[test]
fn chaos_kill_9_the_coordinator_and_restart_it_after_a_lease_period() {
    let mut chaos = Chaos::start(RedisServer::start_persistent().expect("redis"), &[]);
    chaos.worker("a", &[]);
    chaos.worker("b", &[]);
    chaos.submit();
    wait_until("some jobs are done", LIMIT, || chaos.succeeded() >= 4);
    let leased = chaos.unfinished("kill -9 the coordinator");
    chaos.kill_coordinator();
    std::thread::sleep(Duration::from_millis(u64::from(LEASE_MS) * 3 / 2));
    chaos.cluster.start_coordinator(chaos.lease_ms);
    let counts = chaos.finish();
    chaos.assert_clean("kill -9 the coordinator, restart after 1.5 lease periods", &counts);
    // The jobs leased when it died were committed by their holders: no new attempt.
    let states = chaos.states();
    for (key, attempt) in &leased {
        let state = &states.iter().find(|(k, _)| k == key).expect("the job's state").1;
        assert_eq!(state["phase"]["phase"], "succeeded", "{key}: {state}");
        assert_eq!(state["attempts_made"].as_u64(), Some(*attempt), "{key} was leased again: {state}");
    }
    assert_eq!((counts.expiries, counts.failures), (0, 0), "the outage burnt leases: {counts:?}");
    assert_eq!(counts.started, counts.jobs, "a training was repeated: {counts:?}");
}

#[test]
fn chaos_kill_9_redis_and_restart_it_from_its_aof() {
    let mut chaos = Chaos::start(RedisServer::start_persistent().expect("redis"), &[]);
    chaos.worker("a", &[]);
    chaos.worker("b", &[]);
    chaos.submit();
    wait_until("some jobs are done", LIMIT, || chaos.succeeded() >= 4);
    chaos.unfinished("kill -9 Redis");
    chaos.store_answers_lost = true;
    let before = chaos.epoch().expect("an epoch before the fault");
    chaos.cluster.redis.kill();
    std::thread::sleep(Duration::from_millis(u64::from(LEASE_MS)));
    chaos.cluster.redis.restart().expect("redis restarts");
    let counts = chaos.finish();
    chaos.assert_clean("kill -9 Redis, restart from its AOF", &counts);
    assert_eq!(counts.failures, 0);
    // From state, not from a log line: the restarted store got a new lease epoch.
    let after = chaos.epoch().expect("an epoch after the restart");
    assert!(after > before, "the restart went unnoticed: epoch {before} then {after}");
}

#[test]
fn chaos_flushall_mid_sweep() {
    let mut chaos = Chaos::start(RedisServer::start_persistent().expect("redis"), &[]);
    chaos.worker("a", &[]);
    chaos.worker("b", &[]);
    chaos.submit();
    wait_until("some jobs are done", LIMIT, || chaos.succeeded() >= 4);
    chaos.unfinished("FLUSHALL");
    // The flush erases the job states, and their counts with them: those before it are
    // checked now.
    let failed: u64 = chaos.states().iter().map(|(_, s)| s["failures"].as_u64().unwrap_or(0)).sum();
    assert_eq!(failed, 0, "failures before the flush");
    let before = chaos.epoch().expect("an epoch before the fault");
    let () = redis::cmd("FLUSHALL").query(&mut chaos.redis()).expect("FLUSHALL");
    let counts = chaos.finish();
    chaos.assert_clean("FLUSHALL mid-sweep", &counts);
    assert_eq!(counts.failures, 0);
    let after = chaos.epoch().expect("an epoch after the flush");
    assert!(after > before, "the flush went unnoticed: epoch {before} then {after}");
    // The reconciler queued again, from the artifact store, the jobs the flush took.
    let reconciled = chaos.counter("wf_reconciled_jobs_total").expect("the coordinator's metrics");
    assert!(reconciled > 0.0, "the reconciler queued nothing again after the flush");
}

#[test]
fn chaos_delete_the_queue_sets_mid_sweep() {
    let mut chaos = Chaos::start(RedisServer::start_persistent().expect("redis"), &[]);
    chaos.worker("a", &[]);
    chaos.worker("b", &[]);
    chaos.submit();
    wait_until("some jobs are done", LIMIT, || chaos.succeeded() >= 4);
    chaos.unfinished("delete the queue sets");
    let () =
        redis::cmd("DEL").arg("wf:{default}:ready").arg("wf:{default}:leased").query(&mut chaos.redis()).expect("DEL");
    let counts = chaos.finish();
    chaos.assert_clean("delete the ready and leased sets mid-sweep", &counts);
    assert_eq!((counts.failures, counts.started), (0, counts.jobs), "{counts:?}");
    assert!(chaos.logs().contains("indices disagreed with job states; repaired"), "no repair was logged");
}

#[test]
fn chaos_a_poison_job_and_a_hung_job_among_normal_ones() {
    // Longer than any normal training of the spec, far shorter than the sweep.
    let max_job_seconds = if full() { "20" } else { "6" };
    let mut chaos =
        Chaos::start(RedisServer::start_persistent().expect("redis"), &["--max-job-seconds", max_job_seconds]);
    chaos.submit();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(chaos.cluster.dir.path().join(format!("artifacts/sweeps/{}/manifest.json", chaos.id)))
            .expect("manifest"),
    )
    .expect("manifest JSON");
    let key = |i: usize| manifest["jobs"][i]["key"].as_str().expect("job key").to_string();
    let (poison, hung) = (key(3), key(7));
    let env = [("WF_FAULT_FAIL_JOBS", poison.as_str()), ("WF_FAULT_HANG_JOBS", hung.as_str())];
    chaos.worker("a", &env);
    chaos.worker("b", &env);
    let counts = chaos.finish();
    let report = chaos.cluster.report(&chaos.id);
    let missing: BTreeSet<&str> =
        report["missing"].as_array().expect("missing").iter().filter_map(Value::as_str).collect();
    assert_eq!(missing, BTreeSet::from([poison.as_str(), hung.as_str()]));
    let states = chaos.states();
    let state = |key: &str| states.iter().find(|(k, _)| k == key).expect("state").1.clone();
    for (key, error) in [(&poison, "injected failure"), (&hung, "maximum duration")] {
        let s = state(key);
        assert_eq!((s["phase"]["phase"].as_str(), s["failures"].as_u64()), (Some("dead_lettered"), Some(3)), "{s}");
        assert!(s["last_error"].as_str().is_some_and(|e| e.contains(error)), "{s}");
    }
    let succeeded = states.iter().filter(|(_, s)| s["phase"]["phase"] == "succeeded").count();
    assert_eq!(succeeded, counts.jobs - 2);
    // The other jobs' figures equal the fault-free run's: every day the report shows has
    // the fault-free values (a day served by a missing job shows none).
    let base = baseline();
    let (mut compared, mut total) = (0, 0);
    for series in report["series"].as_array().expect("series") {
        let same = |other: &&Value| {
            ["window", "model", "seed", "schedule"].iter().all(|field| other[*field] == series[*field])
        };
        let reference = base["series"].as_array().expect("series").iter().find(same).expect("the same schedule");
        let days: Vec<&Value> = reference["dates"].as_array().expect("dates").iter().collect();
        let retrains = |s: &Value| -> Vec<String> {
            s["retrain_dates"]
                .as_array()
                .expect("retrain dates")
                .iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        };
        let (kept, planned) = (retrains(series), retrains(reference));
        total += days.len();
        for (i, date) in series["dates"].as_array().expect("dates").iter().enumerate() {
            let j = days
                .iter()
                .position(|d| *d == date)
                .unwrap_or_else(|| panic!("a day the fault-free run lacks: {date}"));
            // A day whose model (the latest planned retrain on or before it) is missing is
            // served by an older one: not the same figure.
            let day = date.as_str().expect("date");
            let serving = planned.iter().rev().find(|r| r.as_str() <= day);
            if serving.is_some_and(|r| !kept.contains(r)) {
                continue;
            }
            for field in ["delta", "rank_ic"] {
                assert_eq!(series[field][i], reference[field][j], "{field} on {date} of {}", series["schedule"]);
            }
            compared += 1;
        }
    }
    assert!(compared * 10 >= total * 6, "only {compared} of {total} days compared");
    assert_eq!(counts.commits, counts.jobs - 2);
    assert_eq!(counts.expiries, 0, "a hung job heartbeats: it is failed, not expired: {counts:?}");
    println!(
        "chaos a poison job and a hung job: jobs {}, leases {}, failures {} (3 poison, 3 hung), expiries {}, commits {}, dead-lettered 2, {:.0} s, days equal to the fault-free run: {compared} of {total}",
        counts.jobs, counts.started, counts.failures, counts.expiries, counts.commits, counts.seconds
    );
}
