//! External trainers end to end (`docs/TRAINERS.md`): a Python trainer registered on a
//! real `wf coordinator` and `wf worker` over `redis-server`, and on `wf run`, gives the
//! built-in `-vol_60` baseline's numbers; a spec naming an unregistered trainer, or a path,
//! is refused at submission and queues nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use wf_coordinator::testing::RedisServer;
use wf_tests::{Process, required_tool, wf_in};

use crate::cluster::{Cluster, LIMIT};

fn spec(trainer: &str) -> String {
    format!(
        r#"name = "external"

[dataset]
panel = "synth:stocks=60,days=400,seed=3"

[evaluation]
start = 2021-08-02
end = 2022-01-31

[plan]
train_windows = [126]
cadences = ["monthly", "quarterly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 42

[metrics]
k = 10
bootstrap_samples = 100
bootstrap_seed = 1

[baselines]
factors = ["-vol_60"]

[[models]]
name = "negvol"
kind = "external"
params = {{ trainer = "{trainer}", options = {{ feature = "vol_60" }} }}
"#
    )
}

/// A trainer scoring every stock by minus the feature its options name, a missing value
/// at 0 (as the factor baseline does), written for `python`.
fn write_trainer(dir: &Path, python: &Path) -> PathBuf {
    let path = dir.join("negvol.py");
    let body = r#"
import json, sys
import polars as pl
if sys.argv[1:] == ["--version"]:
    print("negvol 1.0")
    sys.exit(0)
folder = sys.argv[1]
job = json.load(open(f"{folder}/job.json"))
feature = job["options"]["feature"]
score = pl.read_parquet(f"{folder}/{job['score_file']}")
print(f"scoring {score.height} rows by -{feature}")
score.select("date", "code", (-pl.col(feature).cast(pl.Float64).fill_null(0.0)).alias("score")).write_parquet(
    f"{folder}/{job['scores_file']}"
)
"#;
    std::fs::write(&path, format!("#!{}\n{body}", python.display())).expect("write trainer");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn python() -> Option<PathBuf> {
    let python = required_tool("WF_PYTHON", "python", "created by .ci/run, with polars")?;
    let polars = std::process::Command::new(&python).args(["-c", "import polars"]).output();
    if polars.is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    assert!(std::env::var_os("WF_REQUIRE_TOOLS").is_none(), "{} has no polars", python.display());
    println!("skipped: {} has no polars (pip install polars)", python.display());
    None
}

/// (window, schedule) → (mean ΔP@K, mean RankIC, retrains) of `model`'s line.
fn figures(report: &Value, model: &str) -> Vec<(String, f64, f64, usize)> {
    let mut figures = Vec::new();
    for line in report["lines"].as_array().expect("lines").iter().filter(|line| line["model"] == model) {
        for schedule in line["schedules"].as_array().expect("schedules") {
            figures.push((
                format!("{} {}", line["window"], schedule["name"]),
                schedule["delta"]["mean"].as_f64().expect("delta mean"),
                schedule["rank_ic"]["mean"].as_f64().unwrap_or(f64::NAN),
                schedule["retrain_days"].as_array().expect("retrain days").len(),
            ));
        }
    }
    assert!(!figures.is_empty(), "no line of {model}");
    figures
}

#[test]
fn an_external_trainer_on_a_wf_worker_over_redis_gives_the_factor_baselines_numbers() {
    let Some(python) = python() else { return };
    let trainers = tempfile::tempdir().expect("tempdir");
    let trainer = write_trainer(trainers.path(), &python);
    let registration = format!("negvol={}", trainer.display());
    let cluster = Cluster::start_on(RedisServer::start().expect("redis-server"), 5_000, &["--trainer", &registration]);

    // Refused at submission, nothing queued: an unregistered trainer, and a path.
    for (trainer, said) in [("other", "not registered"), ("/bin/sh", "never a path")] {
        let file = cluster.write_spec(&spec(trainer));
        let run = cluster.wf(&["submit", &file]);
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains("models[0].params.trainer") && run.stderr.contains(said), "{}", run.stderr);
    }
    assert!(cluster.job_states().is_empty());

    let url = cluster.url();
    let work = trainers.path().join("work");
    let work = work.display().to_string();
    let args = ["worker", "--coordinator", &url, "--device", "cpu", "--trainer", &registration, "--trainer-dir", &work];
    let worker = Process::start(cluster.dir.path(), &args, &[]);
    let id = cluster.submit(&spec("negvol"));
    let watched = cluster.wf(&["status", &id, "--watch"]);
    assert!(watched.stdout.contains(" finished"), "{}\n{}", watched.stdout, worker.stderr());
    let report = cluster.report(&id);
    assert_eq!(report["missing"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(figures(&report, "negvol"), figures(&report, "-vol_60"));
    // The trainer's output is in the worker's log; its directories are gone.
    assert!(worker.stderr().contains("scoring") || worker.stdout().contains("scoring"), "{}", worker.stderr());
    let left: Vec<_> = std::fs::read_dir(trainers.path().join("work")).expect("work").flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    // The sweep's spec pins the trainer: the stored spec says which program ran.
    let record: Value = serde_json::from_slice(
        &std::fs::read(cluster.dir.path().join(format!("artifacts/sweeps/{id}/sweep.json"))).expect("sweep.json"),
    )
    .expect("sweep JSON");
    let stored = record["spec_toml"].as_str().expect("the stored spec");
    assert!(stored.contains("[trainers.negvol]") && stored.contains("version = \"negvol 1.0\""), "{stored}");
}

#[test]
fn an_external_trainer_in_wf_run_gives_the_factor_baselines_numbers() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let trainer = write_trainer(dir.path(), &python);
    std::fs::write(dir.path().join("spec.toml"), spec("negvol")).expect("write spec");
    // A path relative to where `wf run` starts (the trainer itself runs in its job's
    // directory).
    assert!(trainer.starts_with(dir.path()));
    let registration = "negvol=negvol.py".to_string();
    let run = wf_in(dir.path(), &["run", "spec.toml", "--workers", "2", "--json", "--trainer", &registration], LIMIT);
    assert!(run.succeeded(), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("report JSON");
    assert_eq!(figures(&report, "negvol"), figures(&report, "-vol_60"));
    // `wf plan` pins the registered trainer as the coordinator would.
    let plan = wf_in(dir.path(), &["plan", "spec.toml", "--trainer", &registration], LIMIT);
    assert!(plan.succeeded() && plan.stdout.contains("negvol"), "{}", plan.stderr);
    let unplanned = wf_in(dir.path(), &["plan", "spec.toml"], LIMIT);
    assert!(!unplanned.succeeded() && unplanned.stderr.contains("models[0].params.trainer"), "{}", unplanned.stderr);
    // Without the registration, the run is refused naming the field.
    let refused = wf_in(dir.path(), &["run", "spec.toml", "--out", "out2"], LIMIT);
    assert!(!refused.succeeded() && refused.stderr.contains("models[0].params.trainer"), "{}", refused.stderr);
}

/// A trainer that records its process id in `pids/`, then, the first time only (no
/// `slept` marker yet), sleeps a minute; later runs score by `-vol_60`.
fn write_sleeper(dir: &Path, python: &Path) -> PathBuf {
    let path = dir.join("sleeper.py");
    let body = format!(
        r#"
import json, os, sys, time
if sys.argv[1:] == ["--version"]:
    print("sleeper 1")
    sys.exit(0)
folder = sys.argv[1]
open(os.path.join("{dir}", "pids", str(os.getpid())), "w").write("")
marker = os.path.join("{dir}", "slept")
if not os.path.exists(marker):
    open(marker, "w").write("")
    time.sleep(60)
import polars as pl
job = json.load(open(f"{{folder}}/job.json"))
score = pl.read_parquet(f"{{folder}}/{{job['score_file']}}")
score.select("date", "code", (-pl.col("vol_60").cast(pl.Float64).fill_null(0.0)).alias("score")).write_parquet(
    f"{{folder}}/{{job['scores_file']}}"
)
"#,
        dir = dir.display()
    );
    std::fs::write(&path, format!("#!{}\n{body}", python.display())).expect("write trainer");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(dir.join("pids")).expect("mkdir");
    path
}

fn trainer_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir.join("pids"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
}

#[test]
fn sigterm_to_the_worker_kills_its_trainer_and_hands_the_job_back() {
    let Some(python) = python() else { return };
    let trainers = tempfile::tempdir().expect("tempdir");
    let trainer = write_sleeper(trainers.path(), &python);
    let registration = format!("negvol={}", trainer.display());
    let cluster = Cluster::start_on(RedisServer::start().expect("redis-server"), 5_000, &["--trainer", &registration]);
    let url = cluster.url();
    let args = ["worker", "--coordinator", &url, "--device", "cpu", "--trainer", &registration];
    let mut first = Process::start(cluster.dir.path(), &args, &[]);
    let id = cluster.submit(&spec("negvol"));
    wf_tests::wait_until("the trainer sleeps", LIMIT, || !trainer_pids(trainers.path()).is_empty());
    let sleeping = trainer_pids(trainers.path());
    assert!(sleeping.iter().all(|pid| alive(*pid)));
    first.signal("TERM");
    assert!(first.wait(LIMIT).is_some(), "the worker exits");
    for pid in &sleeping {
        wf_tests::wait_until("the trainer is killed", Duration::from_secs(10), || !alive(*pid));
    }
    assert!(first.stderr().contains("handed back") || first.stdout().contains("handed back"), "{}", first.stderr());
    // Another worker finishes the sweep: the handed-back job included, each once.
    let _second = Process::start(cluster.dir.path(), &args, &[]);
    let watched = cluster.wf(&["status", &id, "--watch"]);
    assert!(watched.stdout.contains(" finished"), "{}", watched.stdout);
    let report = cluster.report(&id);
    assert_eq!(report["missing"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(cluster.phases("dead_lettered"), 0);
    assert_eq!(cluster.results().len(), cluster.job_states().len(), "each job committed once");
}

#[test]
fn a_trainer_past_the_job_time_limit_is_killed_and_the_job_dead_lettered() {
    let Some(python) = python() else { return };
    let trainers = tempfile::tempdir().expect("tempdir");
    // Its first job sleeps past the 3 s limit; the others score at once.
    let trainer = write_sleeper(trainers.path(), &python);
    let registration = format!("negvol={}", trainer.display());
    let options = ["--trainer", registration.as_str(), "--max-job-seconds", "3"];
    let cluster = Cluster::start_on(RedisServer::start().expect("redis-server"), 5_000, &options);
    let url = cluster.url();
    let args = ["worker", "--coordinator", &url, "--device", "cpu", "--trainer", &registration];
    let worker = Process::start(cluster.dir.path(), &args, &[]);
    let id = cluster.submit(&spec("negvol"));
    wf_tests::wait_until("a job is dead-lettered", LIMIT, || cluster.phases("dead_lettered") > 0);
    let watched = cluster.wf(&["status", &id, "--watch"]);
    assert!(watched.stdout.contains(" finished"), "{}", watched.stdout);
    assert_eq!(cluster.phases("dead_lettered"), 1, "only the job whose trainer slept");
    for pid in trainer_pids(trainers.path()) {
        assert!(!alive(pid), "trainer {pid} outlived its job");
    }
    let logs = format!("{}{}", worker.stdout(), worker.stderr());
    assert!(logs.contains("killed at the job's time limit"), "{logs}");
}

#[test]
fn a_trainer_exiting_75_is_tried_again_and_the_sweep_completes() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flaky.py");
    let body = format!(
        r#"
import json, os, sys
if sys.argv[1:] == ["--version"]:
    print("flaky 1")
    sys.exit(0)
marker = os.path.join("{dir}", "failed-once")
if not os.path.exists(marker):
    open(marker, "w").write("")
    print("the GPU is busy", file=sys.stderr)
    sys.exit(75)
import polars as pl
folder = sys.argv[1]
job = json.load(open(f"{{folder}}/job.json"))
score = pl.read_parquet(f"{{folder}}/{{job['score_file']}}")
score.select("date", "code", (-pl.col("vol_60").cast(pl.Float64).fill_null(0.0)).alias("score")).write_parquet(
    f"{{folder}}/{{job['scores_file']}}"
)
"#,
        dir = dir.path().display()
    );
    std::fs::write(&path, format!("#!{}\n{body}", python.display())).expect("write trainer");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.path().join("spec.toml"), spec("negvol")).expect("write spec");
    let run =
        wf_in(dir.path(), &["run", "spec.toml", "--workers", "1", "--json", "--trainer", "negvol=flaky.py"], LIMIT);
    assert!(run.succeeded(), "{}", run.stderr);
    assert!(run.stderr.contains("failures 1,") && !run.stderr.contains("dead-lettered"), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("report JSON");
    assert_eq!(report["missing"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(figures(&report, "negvol"), figures(&report, "-vol_60"));
}
