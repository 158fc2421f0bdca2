//! The distributed system end to end: a real `redis-server`, a `wf coordinator`
//! process and `wf worker` processes on real sockets, on a small synthetic market.

use std::time::Duration;

use serde_json::Value;
use wf_coordinator::testing::RedisServer;
use wf_tests::{Process, free_port, http_get, metric, wait_until, wf_in, wf_worker_binary};

pub(crate) const LIMIT: Duration = Duration::from_secs(120);

/// A small sweep: 60 stocks, one window, monthly and quarterly retraining.
pub(crate) fn spec(cadences: &str, epochs: u32) -> String {
    format!(
        r#"name = "e2e"

[dataset]
panel = "synth:stocks=60,days=400,seed=3"

[evaluation]
start = 2021-08-02
end = 2022-01-31

[plan]
train_windows = [126]
cadences = [{cadences}]
horizons = [5]
primary_horizon = 5
embargo = 0
max_age = 42

[metrics]
k = 10
bootstrap_samples = 100
bootstrap_seed = 1

[[models]]
name = "mlp"
kind = "mlp"
seeds = [0]
params = {{ hidden = [32], epochs = {epochs} }}
"#
    )
}

/// Where a coordinator runs on the network: the address it listens on (loopback, or a
/// test network's, then with `--insecure`: the network is the test's own), how it
/// reaches Redis (`None`: [`RedisServer::url`]; else a fault proxy in front of it), and
/// the `ip` arguments that run it inside a network namespace (empty: directly).
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) host: String,
    pub(crate) redis_url: Option<String>,
    pub(crate) inside: Vec<String>,
}

impl Default for Placement {
    fn default() -> Self {
        Self { host: "127.0.0.1".into(), redis_url: None, inside: Vec::new() }
    }
}

/// Redis, a coordinator and its artifact directory, in a temporary directory.
pub(crate) struct Cluster {
    pub(crate) redis: RedisServer,
    pub(crate) dir: tempfile::TempDir,
    port: u16,
    metrics_port: u16,
    /// Extra `wf coordinator` arguments.
    options: Vec<String>,
    /// `--artifacts`: a directory under `dir` or a URL.
    artifacts: String,
    /// The coordinator's extra environment (a bucket's settings).
    env: Vec<(String, String)>,
    /// Where the coordinator runs on the network.
    placement: Placement,
    pub(crate) coordinator: Option<Process>,
}

impl Cluster {
    fn start(lease_ms: u32) -> Self {
        Self::start_with(lease_ms, &[])
    }

    fn start_with(lease_ms: u32, options: &[&str]) -> Self {
        Self::start_on(RedisServer::start().expect("redis-server"), lease_ms, options)
    }

    /// A coordinator on `redis`, with extra `wf coordinator` options.
    pub(crate) fn start_on(redis: RedisServer, lease_ms: u32, options: &[&str]) -> Self {
        Self::start_on_store(redis, lease_ms, options, "artifacts", &[])
    }

    /// [`Cluster::start_on`] with the artifact store `artifacts` (a URL), the coordinator
    /// running with `env` added.
    pub(crate) fn start_on_store(
        redis: RedisServer,
        lease_ms: u32,
        options: &[&str],
        artifacts: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_networked(redis, lease_ms, options, artifacts, env, Placement::default())
    }

    /// [`Cluster::start_on_store`] placed on the network as `placement` says.
    pub(crate) fn start_networked(
        redis: RedisServer,
        lease_ms: u32,
        options: &[&str],
        artifacts: &str,
        env: &[(&str, &str)],
        placement: Placement,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options.iter().map(|o| o.to_string()).collect();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut cluster = Self {
            redis,
            dir,
            port: free_port(),
            metrics_port: free_port(),
            options,
            artifacts: artifacts.to_string(),
            env,
            placement,
            coordinator: None,
        };
        cluster.start_coordinator(lease_ms);
        cluster
    }

    pub(crate) fn start_coordinator(&mut self, lease_ms: u32) {
        let listen = format!("{}:{}", self.placement.host, self.port);
        let lease = lease_ms.to_string();
        let metrics = format!("{}:{}", self.placement.host, self.metrics_port);
        let redis = self.placement.redis_url.clone().unwrap_or_else(|| self.redis.url());
        let mut args = vec![
            "coordinator",
            "--listen",
            &listen,
            "--redis",
            &redis,
            "--artifacts",
            &self.artifacts,
            "--lease-ms",
            &lease,
            "--backoff-ms",
            "200",
            "--max-attempts",
            "3",
            "--metrics",
            &metrics,
        ];
        if self.placement.host != "127.0.0.1" {
            args.push("--insecure");
        }
        args.extend(self.options.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let process = Process::start_wrapped(&self.placement.inside, self.dir.path(), &args, &env);
        wait_until("the coordinator listens", LIMIT, || process.stdout().contains("listening on"));
        self.coordinator = Some(process);
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}:{}", self.placement.host, self.port)
    }

    pub(crate) fn worker(&self, env: &[(&str, &str)]) -> Process {
        Process::start(self.dir.path(), &["worker", "--coordinator", &self.url(), "--device", "cpu"], env)
    }

    /// Where the coordinator serves its metrics.
    pub(crate) fn metrics_address(&self) -> String {
        format!("{}:{}", self.placement.host, self.metrics_port)
    }

    /// The coordinator's Prometheus metrics.
    pub(crate) fn metrics(&self) -> String {
        let (code, body) = http_get(&self.metrics_address(), "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Sweep `id`'s manifest, as the coordinator wrote it.
    pub(crate) fn manifest(&self, id: &str) -> Value {
        let path = self.dir.path().join(format!("artifacts/sweeps/{id}/manifest.json"));
        serde_json::from_slice(&std::fs::read(path).expect("manifest")).expect("manifest JSON")
    }

    /// The worker image's binary, `wf-worker`, serving its metrics on `metrics` and failing
    /// every attempt of job `doomed` (a key).
    pub(crate) fn failing_worker(&self, metrics: &str, doomed: &str) -> Process {
        Process::start_program(
            &wf_worker_binary(),
            self.dir.path(),
            &["--coordinator", &self.url(), "--device", "cpu", "--metrics", metrics],
            &[("WF_FAULT_FAIL_JOBS", doomed)],
        )
    }

    pub(crate) fn write_spec(&self, text: &str) -> String {
        std::fs::write(self.dir.path().join("spec.toml"), text).expect("write spec");
        "spec.toml".into()
    }

    pub(crate) fn wf(&self, args: &[&str]) -> wf_tests::Run {
        let mut all: Vec<&str> = args.to_vec();
        let url = self.url();
        all.extend(["--coordinator", &url]);
        wf_in(self.dir.path(), &all, LIMIT)
    }

    pub(crate) fn submit(&self, spec: &str) -> String {
        let file = self.write_spec(spec);
        let run = self.wf(&["submit", &file]);
        assert!(run.succeeded(), "submit failed: {}", run.stderr);
        run.stdout.trim().to_string()
    }

    /// Job key → state as stored in Redis (JSON of `JobState`), without the epoch marker.
    pub(crate) fn job_states_by_key(&self) -> Vec<(String, Value)> {
        let client = redis::Client::open(self.redis.url()).expect("redis url");
        let mut connection = client.get_connection().expect("redis connection");
        let fields: Vec<(String, String)> =
            redis::cmd("HGETALL").arg("wf:{default}:jobs").query(&mut connection).expect("HGETALL jobs");
        fields
            .into_iter()
            .filter(|(key, _)| !key.starts_with('~'))
            .map(|(key, state)| (key, serde_json::from_str(&state).expect("state JSON")))
            .collect()
    }

    /// Job states as stored in Redis, without the epoch marker.
    pub(crate) fn job_states(&self) -> Vec<Value> {
        self.job_states_by_key().into_iter().map(|(_, state)| state).collect()
    }

    pub(crate) fn phases(&self, phase: &str) -> usize {
        self.job_states().iter().filter(|s| s["phase"]["phase"] == phase).count()
    }

    pub(crate) fn finished(&self, id: &str) -> bool {
        let run = self.wf(&["status", id]);
        run.stdout.contains(" finished")
    }

    /// The committed result files. A coordinator killed while writing one leaves its hidden
    /// staging file (`.staging-…`), swept by a later coordinator once it is 10 minutes old
    /// (it could be another live coordinator's write in flight): not a result.
    pub(crate) fn results(&self) -> Vec<std::path::PathBuf> {
        let dir = self.dir.path().join("artifacts/results");
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".staging-")))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn report(&self, id: &str) -> Value {
        let run = self.wf(&["report", id, "--json"]);
        assert!(run.succeeded(), "report failed: {}", run.stderr);
        serde_json::from_str(&run.stdout).expect("report JSON")
    }
}

/// (line, schedule) → (mean ΔP@K, mean RankIC, retrains): what must not depend on where jobs ran.
fn schedule_figures(report: &Value) -> Vec<(String, f64, f64, usize)> {
    let mut figures = Vec::new();
    for line in report["lines"].as_array().expect("lines") {
        for schedule in line["schedules"].as_array().expect("schedules") {
            figures.push((
                format!("{} {} {}", line["window"], line["model"], schedule["name"]),
                schedule["delta"]["mean"].as_f64().expect("delta mean"),
                schedule["rank_ic"]["mean"].as_f64().unwrap_or(f64::NAN),
                schedule["retrain_days"].as_array().expect("retrain days").len(),
            ));
        }
    }
    figures
}

#[test]
fn sweep_over_redis_with_two_worker_processes_matches_wf_run() {
    let cluster = Cluster::start(5_000);
    let _workers = [cluster.worker(&[]), cluster.worker(&[])];
    let text = spec("\"monthly\", \"quarterly\"", 8);
    let id = cluster.submit(&text);
    let watched = cluster.wf(&["status", &id, "--watch"]);
    assert!(watched.stdout.contains(" finished"), "watch ended without finishing: {}", watched.stdout);
    let distributed = cluster.report(&id);
    assert_eq!(distributed["results"], 6);
    assert_eq!(distributed["missing"].as_array().map(Vec::len), Some(0));

    let local_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(local_dir.path().join("spec.toml"), &text).expect("spec");
    let local = wf_in(local_dir.path(), &["run", "spec.toml", "--workers", "2", "--json"], LIMIT);
    assert!(local.succeeded(), "wf run failed: {}", local.stderr);
    let local: Value = serde_json::from_str(&local.stdout).expect("wf run JSON");
    let (a, b) = (schedule_figures(&distributed), schedule_figures(&local));
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() < 1e-12 && (x.3 == y.3), "{x:?} differs from wf run's {y:?}");
    }
    // Every job was committed exactly once, by attempt 1.
    assert_eq!(cluster.results().len(), 6);
    assert!(cluster.job_states().iter().all(|s| s["attempts_made"] == 1 && s["phase"]["phase"] == "succeeded"));
}

#[test]
fn killed_worker_job_is_released_with_next_attempt_and_committed_once() {
    let cluster = Cluster::start(2_500);
    let victim = cluster.worker(&[]);
    let id = cluster.submit(&spec("\"weekly\"", 60));
    wait_until("the worker holds a lease", LIMIT, || cluster.phases("leased") == 1);
    victim.signal("KILL");
    let _rescuer = cluster.worker(&[]);
    wait_until("the sweep finishes", LIMIT, || cluster.finished(&id));
    let states = cluster.job_states();
    let retried: Vec<&Value> = states.iter().filter(|s| s["attempts_made"] == 2).collect();
    assert_eq!(retried.len(), 1, "exactly the killed worker's job is retried: {states:?}");
    assert_eq!((retried[0]["expiries"].as_u64(), retried[0]["failures"].as_u64()), (Some(1), Some(0)));
    assert_eq!(retried[0]["phase"]["phase"], "succeeded");
    assert!(states.iter().all(|s| s["phase"]["phase"] == "succeeded"));
    assert_eq!(cluster.results().len(), states.len(), "one result file per job");
}

#[test]
fn stale_worker_report_is_rejected_and_the_committed_result_is_unchanged() {
    let cluster = Cluster::start(1_500);
    let sleeper = cluster.worker(&[]);
    let id = cluster.submit(&spec("\"quarterly\"", 200));
    wait_until("the worker holds a lease", LIMIT, || cluster.phases("leased") == 1);
    sleeper.signal("STOP");
    let rescuer = cluster.worker(&[]);
    wait_until("the sweep finishes elsewhere", LIMIT, || cluster.finished(&id));
    let before: Vec<(std::path::PathBuf, Vec<u8>)> =
        cluster.results().into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("result"))).collect();
    sleeper.signal("CONT");
    wait_until("the stale worker is turned away", LIMIT, || {
        let log = sleeper.stderr();
        log.contains("lease lost") || log.contains("result refused")
    });
    let after: Vec<(std::path::PathBuf, Vec<u8>)> =
        cluster.results().into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("result"))).collect();
    assert_eq!(before, after, "a stale report changed a committed result");
    assert!(cluster.job_states().iter().all(|s| s["phase"]["phase"] == "succeeded"));
    assert!(rescuer.stderr().contains("job done"));
}

#[test]
fn coordinator_restart_mid_sweep_completes_the_sweep() {
    let mut cluster = Cluster::start(3_000);
    let _workers = [cluster.worker(&[]), cluster.worker(&[])];
    let id = cluster.submit(&spec("\"weekly\"", 30));
    wait_until("some jobs are done", LIMIT, || cluster.phases("succeeded") >= 2);
    cluster.coordinator.take().expect("coordinator").signal("KILL");
    std::thread::sleep(Duration::from_millis(300));
    cluster.start_coordinator(3_000);
    wait_until("the sweep finishes after the restart", LIMIT, || cluster.finished(&id));
    let states = cluster.job_states();
    assert!(states.iter().all(|s| s["phase"]["phase"] == "succeeded"), "{states:?}");
    assert_eq!(cluster.results().len(), states.len());
    assert_eq!(cluster.report(&id)["missing"].as_array().map(Vec::len), Some(0));
}

#[test]
fn always_failing_job_is_dead_lettered_after_max_attempts_while_others_complete() {
    let cluster = Cluster::start(5_000);
    let id = cluster.submit(&spec("\"monthly\"", 5));
    let manifest = cluster.manifest(&id);
    let doomed = manifest["jobs"][2]["key"].as_str().expect("job key").to_string();
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let _worker = cluster.failing_worker(&worker_metrics, &doomed);
    wait_until("every job ends", LIMIT, || cluster.finished(&id));
    let status = cluster.wf(&["status", &id]);
    assert!(status.stdout.contains("finished with failures"), "{}", status.stdout);
    let states = cluster.job_states();
    let dead: Vec<&Value> = states.iter().filter(|s| s["phase"]["phase"] == "dead_lettered").collect();
    assert_eq!(dead.len(), 1, "{states:?}");
    assert_eq!(dead[0]["failures"], 3);
    assert_eq!(dead[0]["attempts_made"], 3);
    assert!(dead[0]["last_error"].as_str().is_some_and(|e| e.contains("injected failure")));
    assert_eq!(cluster.phases("succeeded"), states.len() - 1);
    // The report is still built, and says what is missing.
    let report = cluster.report(&id);
    assert_eq!(report["missing"], serde_json::json!([doomed]));

    // Both processes count what happened, for Prometheus.
    let succeeded = (states.len() - 1) as f64;
    let coordinator = cluster.metrics();
    let count = |text: &str, name: &str, labels: &[(&str, &str)]| metric(text, name, labels).unwrap_or(0.0);
    assert_eq!(count(&coordinator, "wf_results_committed_total", &[]), succeeded, "{coordinator}");
    assert_eq!(count(&coordinator, "wf_job_failures_total", &[("kind", "retryable")]), 3.0, "{coordinator}");
    assert_eq!(count(&coordinator, "wf_job_retries_total", &[]), 2.0, "{coordinator}");
    assert_eq!(count(&coordinator, "wf_dead_letters_total", &[]), 1.0, "{coordinator}");
    assert_eq!(count(&coordinator, "wf_leases_total", &[]), succeeded + 3.0, "{coordinator}");
    assert_eq!(count(&coordinator, "wf_job_training_seconds_count", &[]), succeeded, "{coordinator}");
    wait_until("the reaper publishes the queue depth", LIMIT, || {
        count(&cluster.metrics(), "wf_queue_jobs", &[("state", "dead_lettered")]) == 1.0
    });
    let (code, worker) = http_get(&worker_metrics, "/metrics").expect("worker /metrics");
    assert_eq!(code, 200);
    assert_eq!(count(&worker, "wf_worker_jobs_total", &[("outcome", "completed")]), succeeded, "{worker}");
    assert_eq!(count(&worker, "wf_worker_jobs_total", &[("outcome", "failed")]), 3.0, "{worker}");
    assert_eq!(count(&worker, "wf_worker_datasets_loaded_total", &[]), 1.0, "{worker}");
    assert_eq!(count(&worker, "wf_worker_jobs_running", &[]), 0.0, "{worker}");
}

#[test]
fn invalid_spec_is_refused_naming_the_field_and_queues_nothing() {
    let cluster = Cluster::start(5_000);
    let bad = spec("\"monthly\"", 5).replace("k = 10", "k = 0");
    let file = cluster.write_spec(&bad);
    let run = cluster.wf(&["submit", &file]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("metrics.k"), "the error names the field: {}", run.stderr);
    let listed = cluster.wf(&["list"]);
    assert!(listed.stdout.trim().is_empty() && listed.stderr.contains("no sweeps"), "{listed:?}");
    assert!(cluster.job_states().is_empty());
}

#[test]
fn cancel_stops_the_sweep() {
    let cluster = Cluster::start(5_000);
    let id = cluster.submit(&spec("\"weekly\"", 5));
    let cancelled = cluster.wf(&["cancel", &id]);
    assert!(cancelled.succeeded() && cancelled.stdout.contains("cancelled"), "{cancelled:?}");
    let total = cluster.job_states().len();
    assert!(total > 0);
    assert_eq!(cluster.phases("cancelled"), total);
    // A worker finds nothing to lease.
    let mut worker = cluster.worker(&[]);
    std::thread::sleep(Duration::from_millis(1_500));
    worker.signal("TERM");
    assert_eq!(worker.wait(Duration::from_secs(20)), Some(0));
    assert!(worker.stderr().contains("0 completed"), "{}", worker.stderr());
    assert!(cluster.results().is_empty());
}

#[test]
fn redis_losing_its_data_mid_sweep_is_reconciled_and_the_sweep_completes() {
    let cluster = Cluster::start_with(5_000, &["--reconcile-seconds", "1"]);
    let _worker = cluster.worker(&[]);
    let id = cluster.submit(&spec("\"monthly\"", 30));
    flush_redis_mid_sweep_and_finish(&cluster, &id, || cluster.results().len());
}

/// Redis loses everything (queue, job states, sweep records) once `committed()` counts a
/// first result of sweep `id`: the sweep must then finish after reconciliation with
/// nothing missing, every job committed once, and only uncommitted jobs queued again.
pub(crate) fn flush_redis_mid_sweep_and_finish(cluster: &Cluster, id: &str, committed: impl Fn() -> usize) {
    let jobs = cluster.job_states().len();
    wait_until("a first result is committed", LIMIT, || committed() > 0);
    let committed_before = committed();
    assert!(committed_before < jobs, "the sweep finished before the flush; make its jobs longer");
    let client = redis::Client::open(cluster.redis.url()).expect("redis url");
    let mut connection = client.get_connection().expect("redis connection");
    let () = redis::cmd("FLUSHALL").query(&mut connection).expect("FLUSHALL");
    wait_until("the sweep finishes after reconciliation", LIMIT, || cluster.finished(id));
    let report = cluster.report(id);
    assert_eq!(report["missing"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(committed(), jobs, "every job committed, once");
    let requeued = metric(&cluster.metrics(), "wf_reconciled_jobs_total", &[]).unwrap_or(0.0);
    assert!(requeued >= 1.0 && requeued <= (jobs - committed_before) as f64, "requeued {requeued} of {jobs} jobs");
}

/// Over Redis, where the job store remembers the job as succeeded: a result edited by
/// hand is refused on resubmission (set aside, counted in `/metrics` by reason), and
/// the job is trained again with the next attempt.
#[test]
fn an_edited_result_is_refused_counted_and_trained_again() {
    let cluster = Cluster::start(5_000);
    let _worker = cluster.worker(&[]);
    let text = spec("\"monthly\"", 5);
    let first = cluster.submit(&text);
    wait_until("the first sweep finishes", LIMIT, || cluster.finished(&first));
    let mut results = cluster.results();
    results.sort();
    let victim = results[0].clone();
    let mut bytes = std::fs::read(&victim).expect("result");
    // One digit of the stored identity's seed: still a readable file, another checksum.
    let at = bytes.windows(7).position(|w| w == b"\"seed\":").expect("the identity is readable in the file") + 7;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&victim, bytes).expect("edit");

    let second = cluster.submit(&text);
    wait_until("the second sweep finishes", LIMIT, || cluster.finished(&second));
    let refused = metric(&cluster.metrics(), "wf_results_refused_total", &[("reason", "checksum")]);
    assert_eq!(refused, Some(1.0), "{}", cluster.metrics());
    assert_eq!(cluster.report(&second)["missing"].as_array().map(Vec::len), Some(0));
    let retrained: Vec<Value> = cluster.job_states().into_iter().filter(|s| s["attempts_made"] == 2).collect();
    assert_eq!(retrained.len(), 1, "exactly the edited job ran again");
    assert_eq!(retrained[0]["phase"]["phase"], "succeeded");
    let set_aside = std::fs::read_dir(cluster.dir.path().join("artifacts/refused")).expect("refused/").count();
    assert_eq!(set_aside, 1);
    assert!(victim.exists(), "the retrained result was committed in its place");
}
