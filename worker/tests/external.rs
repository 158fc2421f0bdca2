//! External trainers (`docs/TRAINERS.md`) run as real processes: a Python trainer that
//! scores by `-vol_60` gives the factor baseline's numbers exactly; the files it gets hold
//! no label it must not see, seen from the trainer's side; failures, deadlines, stops and
//! bad score files end the job as the protocol says; and the identity covers the program.
//!
//! The Python tests need a Python with polars: `WF_PYTHON`, else the CI venv
//! (`~/.cache/walkforward/venv`). Without one they print why and pass, unless
//! `WF_REQUIRE_TOOLS` is set (CI), where they fail.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use wf_shared::plan::{Job, plan_panel};
use wf_shared::spec::SweepConfig;
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, Panel, PanelSpec, build_panel};
use wf_worker::WorkerError;
use wf_worker::external::{Trainers, check_score_columns, check_train_days};
use wf_worker::job::{JobContext, run_job, run_job_in};

const SPEC: &str = r#"
name = "external"
[dataset]
panel = "synth:stocks=60,days=500"
[evaluation]
start = 2022-01-03
end = 2022-06-30
[plan]
train_windows = [126]
cadences = ["quarterly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 42
[metrics]
k = 10
bootstrap_samples = 100
bootstrap_seed = 1
[baselines]
factors = ["-vol_60"]
"#;

fn panel(horizons: &[u32]) -> Panel {
    let synth = generate(&SynthSpec { stocks: 60, days: 500, ..SynthSpec::default() }).expect("synth");
    build_panel(&Bars::new(synth.bars).expect("bars"), &PanelSpec { horizons: horizons.to_vec() })
}

#[path = "support/python.rs"]
mod support_python;

/// A Python with polars, or `None` (said on stderr; a failure under `WF_REQUIRE_TOOLS`).
fn python() -> Option<PathBuf> {
    support_python::required()
}

/// Writes an executable `name` in `dir` with `#!interpreter` and `body`, and registers it.
fn register(trainers: &mut Trainers, dir: &Path, name: &str, interpreter: &Path, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!{}\n{body}", interpreter.display())).expect("write trainer");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    trainers.register(name, &path, &[], false).expect("registered");
    path
}

/// A shell trainer that answers `--version` and otherwise runs `body` (`$1`: the job's
/// directory).
fn shell(body: &str) -> String {
    format!("if [ \"$1\" = --version ]; then echo 'sh-trainer 1'; exit 0; fi\n{body}\n")
}

/// `SPEC` with an external model of `trainer` (with `options`) pinned as `trainers` has it.
fn config_with(trainers: &Trainers, trainer: &str, options: &str) -> SweepConfig {
    let text = format!(
        "{SPEC}\n[[models]]\nname = \"mine\"\nkind = \"external\"\nparams = {{ trainer = \"{trainer}\", options = {options} }}\n"
    );
    let config = SweepConfig::from_toml(&text).expect("valid spec");
    let (_, pinned) = wf_shared::model::pin_trainers(&text, &config, |name| trainers.pin(name)).expect("pinned");
    pinned
}

/// The external model's jobs (the other model is the `-vol_60` baseline).
fn external_jobs(config: &SweepConfig, panel: &Panel) -> Vec<Job> {
    let plan = plan_panel(config, panel, &wf_shared::dataset::PanelDigests::of(panel)).expect("plannable");
    plan.jobs.into_iter().filter(|job| config.models[job.model].name == "mine").collect()
}

fn run(
    panel: &Panel,
    config: &SweepConfig,
    job: &Job,
    trainers: &Trainers,
) -> Result<wf_worker::job::JobOutput, WorkerError> {
    run_job_in(panel, config, job, &Device::Cpu, &JobContext { trainers: Some(trainers), ..JobContext::default() })
}

const NEGATIVE_VOL: &str = r#"
import json, sys
import polars as pl
if sys.argv[1:] == ["--version"]:
    print("negvol 1.0")
    sys.exit(0)
folder = sys.argv[1]
job = json.load(open(f"{folder}/job.json"))
score = pl.read_parquet(f"{folder}/{job['score_file']}")
# As the factor baseline scores: minus the feature, a missing value at 0.
scores = score.select("date", "code", (-pl.col("vol_60").cast(pl.Float64).fill_null(0.0)).alias("score"))
scores.write_parquet(f"{folder}/{job['scores_file']}")
"#;

#[test]
fn an_external_trainer_scoring_minus_vol_60_gives_the_factor_baselines_numbers() {
    let Some(python) = python() else { return };
    let folder = tempfile::tempdir().expect("tempdir");
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    register(&mut trainers, folder.path(), "negvol", &python, NEGATIVE_VOL);
    let panel = panel(&[1, 5]);
    let config = config_with(&trainers, "negvol", "{}");
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let mut compared = 0;
    let name = |job: &Job| config.models[job.model].name.as_str();
    for job in plan.jobs.iter().filter(|job| name(job) == "mine") {
        let twin = plan
            .jobs
            .iter()
            .find(|other| {
                name(other) == "-vol_60" && other.retrain_day == job.retrain_day && other.window == job.window
            })
            .expect("the baseline's job of the same retrain");
        let factor = run_job(&panel, &config, twin, &Device::Cpu).expect("the factor job");
        let external = run(&panel, &config, job, &trainers).expect("the external job");
        assert!(!external.ages.is_empty());
        assert_eq!(external.ages, factor.ages, "P@K, RankIC and every metric of each day");
        assert_eq!(external.horizons, factor.horizons, "the other horizon's metrics");
        assert_eq!(external.rankings, factor.rankings, "the kept rankings");
        assert_eq!(external.exposures, factor.exposures, "the style exposures");
        assert!(external.model.is_none() && external.importance.loss.is_empty());
        assert!(external.stats.training_days > 0 && external.stats.validation_days > 0);
        compared += 1;
    }
    assert!(compared >= 2, "compared {compared} jobs");
}

#[test]
fn the_files_a_trainer_gets_hold_no_label_it_must_not_see() {
    let Some(python) = python() else { return };
    let folder = tempfile::tempdir().expect("tempdir");
    let seen = folder.path().join("seen");
    std::fs::create_dir(&seen).expect("mkdir");
    // It reports what it was handed, from its side, and fails.
    let body = format!(
        r#"
import json, sys
import polars as pl
if sys.argv[1:] == ["--version"]:
    print("spy 1")
    sys.exit(0)
folder = sys.argv[1]
job = json.load(open(f"{{folder}}/job.json"))
train = pl.read_parquet(f"{{folder}}/train.parquet")
score = pl.read_parquet(f"{{folder}}/score.parquet")
seen = {{
    "train_columns": train.columns,
    "score_columns": score.columns,
    "train_last": str(train["date"].max()),
    "validation_first": str(train.filter(pl.col("validation"))["date"].min()),
    "fit_last": str(train.filter(~pl.col("validation"))["date"].max()),
    "retrain_date": job["retrain_date"],
}}
json.dump(seen, open("{}/" + job["job"] + ".json", "w"))
print("columns:", score.columns, file=sys.stderr)
sys.exit(3)
"#,
        seen.display()
    );
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    register(&mut trainers, folder.path(), "spy", &python, &body);
    // Random specs: horizons, embargo, validation days.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut checked = 0;
    for _ in 0..4 {
        let horizons: Vec<u32> = match next(3) {
            0 => vec![1, 5],
            1 => vec![5, 10],
            _ => vec![1, 5, 20],
        };
        let embargo = next(8) as u32;
        let validation = 5 + next(30);
        let panel = panel(&horizons);
        let text = SPEC
            .replace("horizons = [1, 5]", &format!("horizons = {horizons:?}"))
            .replace("max_age = 42", &format!("max_age = 42\nembargo = {embargo}"));
        let text = format!(
            "{text}\n[[models]]\nname = \"mine\"\nkind = \"external\"\nparams = {{ trainer = \"spy\", validation_days = {validation} }}\n"
        );
        let config = SweepConfig::from_toml(&text).expect("valid");
        let (_, config) = wf_shared::model::pin_trainers(&text, &config, |n| trainers.pin(n)).expect("pinned");
        let longest = *horizons.iter().max().expect("a horizon") as usize;
        for job in external_jobs(&config, &panel).iter().take(2) {
            let error = run(&panel, &config, job, &trainers).expect_err("the spy fails");
            assert!(!error.retryable(), "{error}");
            assert!(error.to_string().contains("exited with 3") && error.to_string().contains("columns:"), "{error}");
            let seen: serde_json::Value = serde_json::from_slice(
                &std::fs::read(seen.join(format!("{}.json", job.key))).expect("the spy wrote what it saw"),
            )
            .expect("json");
            let names = |key: &str| -> Vec<String> {
                seen[key]
                    .as_array()
                    .expect("names")
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            };
            let score_columns = names("score_columns");
            assert_eq!(score_columns[..2], ["date", "code"]);
            assert_eq!(&score_columns[2..], panel.feature_names(), "features only: no target");
            let targets: Vec<String> = horizons.iter().map(|h| format!("fwd_ret_{h}")).collect();
            for target in &targets {
                assert!(names("train_columns").contains(target), "{target} is in the training file");
            }
            let calendar = panel.calendar();
            let day = |key: &str| {
                let date = chrono::NaiveDate::parse_from_str(seen[key].as_str().unwrap_or_default(), "%Y-%m-%d")
                    .expect("a date");
                calendar.index_of(date).expect("a trading day")
            };
            assert_eq!(day("retrain_date"), job.retrain_day);
            // The last label of the file matures before the retrain date, embargo included.
            assert!(day("train_last") + longest + (embargo as usize) < job.retrain_day, "{seen}");
            // The validation days follow a purge gap of the longest horizon.
            assert!(day("fit_last") + longest < day("validation_first"), "{seen}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "checked {checked} jobs");
}

#[test]
fn the_leakage_checks_refuse_what_they_must() {
    // The last training day 99 at horizon 5 with an embargo of 2 matures at 104 + 2.
    assert!(check_train_days(&[0..80, 85..100], 5, 2, 107).is_ok());
    assert!(check_train_days(&[0..80, 85..100], 5, 2, 106).is_err());
    assert!(check_train_days(&[0..80, 85..100], 5, 0, 104).is_err());
    let panel = panel(&[5]);
    let mut names = vec!["date".to_string(), "code".to_string()];
    names.extend(panel.feature_names().iter().cloned());
    assert!(check_score_columns(&names, &panel).is_ok());
    for leak in ["fwd_ret_5", "validation", "label"] {
        let mut leaking = names.clone();
        leaking.push(leak.to_string());
        let error = check_score_columns(&leaking, &panel).expect_err("refused");
        assert!(error.contains(leak), "{error}");
    }
}

#[test]
fn exit_75_asks_for_a_retry_and_other_failures_are_permanent_with_stderr() {
    let folder = tempfile::tempdir().expect("tempdir");
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    let sh = Path::new("/bin/sh");
    register(&mut trainers, folder.path(), "busy", sh, &shell("echo 'GPU busy' >&2; exit 75"));
    register(&mut trainers, folder.path(), "broken", sh, &shell("echo 'line 1' >&2; echo 'bad input' >&2; exit 2"));
    register(&mut trainers, folder.path(), "silent", sh, &shell("exit 0"));
    let panel = panel(&[1, 5]);
    for (name, retryable, said) in
        [("busy", true, "GPU busy"), ("broken", false, "bad input"), ("silent", false, "wrote no scores.parquet")]
    {
        let config = config_with(&trainers, name, "{}");
        let job = &external_jobs(&config, &panel)[0];
        let error = run(&panel, &config, job, &trainers).expect_err("fails");
        assert_eq!(error.retryable(), retryable, "{name}: {error}");
        assert!(error.to_string().contains(said), "{name}: {error}");
    }
    // Nothing is left behind in the work folder but the folder itself.
    let left: Vec<_> = std::fs::read_dir(folder.path().join("work")).expect("work").collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Whether process `pid` still runs two seconds on (a killed process takes a moment to
/// die; a zombie is dead).
fn alive(pid: i32) -> bool {
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while running() {
        if Instant::now() > deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_trainer_past_its_deadline_or_stopped_is_killed_with_what_it_started() {
    let folder = tempfile::tempdir().expect("tempdir");
    let pids = folder.path().join("pids");
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    // It starts a child of its own, writes both process ids, and sleeps.
    let body = shell(&format!("sleep 60 & echo \"$$ $!\" > {}/$(basename \"$1\"); wait", pids.display()));
    std::fs::create_dir(&pids).expect("mkdir");
    register(&mut trainers, folder.path(), "sleeper", Path::new("/bin/sh"), &body);
    let panel = panel(&[1, 5]);
    let config = config_with(&trainers, "sleeper", "{}");
    let jobs = external_jobs(&config, &panel);
    let started_pids = |before: usize| -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let files: Vec<PathBuf> =
                std::fs::read_dir(&pids).expect("pids").map(|e| e.expect("entry").path()).collect();
            if files.len() > before {
                let mut all = Vec::new();
                for file in files {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    all.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
                }
                return all;
            }
            assert!(Instant::now() < deadline, "the trainer never started");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Past the deadline: killed, failed permanently, with the time it ran.
    let context = JobContext {
        trainers: Some(&trainers),
        deadline: Some(Instant::now() + Duration::from_millis(1_500)),
        ..JobContext::default()
    };
    let started = Instant::now();
    let error = run_job_in(&panel, &config, &jobs[0], &Device::Cpu, &context).expect_err("timed out");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!error.retryable() && error.to_string().contains("time limit"), "{error}");
    let first = started_pids(0);
    assert_eq!(first.len(), 2, "{first:?}");
    for pid in &first {
        assert!(!alive(*pid), "process {pid} survived the deadline");
    }

    // Stopped (a cancellation, a lost lease, SIGTERM of the worker): killed, `Stopped`.
    let stop = AtomicBool::new(false);
    let error = std::thread::scope(|scope| {
        scope.spawn(|| {
            started_pids(1);
            stop.store(true, Ordering::Relaxed);
        });
        let context = JobContext { trainers: Some(&trainers), stop: Some(&stop), ..JobContext::default() };
        run_job_in(&panel, &config, &jobs[1], &Device::Cpu, &context).expect_err("stopped")
    });
    assert!(matches!(error, WorkerError::Stopped), "{error}");
    let all = started_pids(1);
    assert_eq!(all.len(), 4, "{all:?}");
    for pid in all {
        assert!(!alive(pid), "process {pid} survived the stop");
    }
}

const BAD_SCORES: &str = r#"
import json, sys
import polars as pl
if sys.argv[1:] == ["--version"]:
    print("bad 1")
    sys.exit(0)
folder = sys.argv[1]
job = json.load(open(f"{folder}/job.json"))
score = pl.read_parquet(f"{folder}/score.parquet")
scores = score.select("date", "code", pl.lit(1.0).alias("score"))
mode = job["options"]["mode"]
if mode == "missing":
    scores = scores.slice(1)
elif mode == "nan":
    scores = scores.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("score")).alias("score"))
elif mode == "many":
    scores = pl.concat([scores] * 10)
elif mode == "stranger":
    scores = pl.concat([scores.slice(1), scores.head(1).with_columns(pl.lit("ZZZZ").alias("code"))])
elif mode == "twice":
    scores = pl.concat([scores.slice(1), scores.slice(1, 1)])
elif mode == "extra":
    scores = scores.with_columns(pl.lit(0.0).alias("fwd_ret_5"))
elif mode == "per-horizon":
    scores = scores.select("date", "code", pl.col("score").alias("score_5"))
elif mode == "long-code":
    scores = pl.concat([scores.slice(1), scores.head(1).with_columns(pl.lit("X" * 300).alias("code"))])
elif mode == "bool":
    scores = scores.with_columns(pl.lit(True).alias("score"))
scores.write_parquet(f"{folder}/{job['scores_file']}")
"#;

#[test]
fn a_bad_score_file_is_refused_by_name() {
    let Some(python) = python() else { return };
    let folder = tempfile::tempdir().expect("tempdir");
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    register(&mut trainers, folder.path(), "bad", &python, BAD_SCORES);
    let panel = panel(&[1, 5]);
    for (mode, said) in [
        ("missing", "has"),
        ("nan", "column score: NaN"),
        ("many", "rows"),
        ("stranger", "\"ZZZZ\""),
        ("twice", "a second time"),
        ("extra", "column fwd_ret_5"),
        ("per-horizon", "missing column score_1"),
        ("long-code", "a code of 300 bytes"),
        ("bool", "column score has type bool"),
    ] {
        let config = config_with(&trainers, "bad", &format!("{{ mode = \"{mode}\" }}"));
        let job = &external_jobs(&config, &panel)[0];
        let error = run(&panel, &config, job, &trainers).expect_err(mode).to_string();
        assert!(error.contains("scores.parquet") && error.contains(said), "{mode}: {error}");
    }
}

#[test]
fn the_identity_covers_the_program_byte_for_byte_and_not_where_it_lives() {
    let folder = tempfile::tempdir().expect("tempdir");
    let sh = Path::new("/bin/sh");
    let mut one = Trainers::default();
    let mut two = Trainers::default();
    let other = folder.path().join("elsewhere");
    std::fs::create_dir(&other).expect("mkdir");
    let body = shell("exit 0");
    register(&mut one, folder.path(), "t", sh, &body);
    register(&mut two, &other, "t", sh, &body);
    assert_eq!(one.pin("t"), two.pin("t"), "the same script on two workers");
    let panel = panel(&[1, 5]);
    let keys = |trainers: &Trainers| -> Vec<_> {
        external_jobs(&config_with(trainers, "t", "{}"), &panel).iter().map(|job| job.key).collect()
    };
    assert_eq!(keys(&one), keys(&two));
    // One byte more: every key changes, and a worker with the old script refuses the new
    // sweep, naming both hashes.
    let mut edited = Trainers::default();
    let third = folder.path().join("third");
    std::fs::create_dir(&third).expect("mkdir");
    register(&mut edited, &third, "t", sh, &format!("{body}#"));
    let (old, new) = (keys(&one), keys(&edited));
    assert!(old.iter().all(|key| !new.contains(key)), "no key survives the edit");
    let config = config_with(&edited, "t", "{}");
    let refusal = one.check(&config).expect_err("a different program");
    let (ours, theirs) = (one.pin("t").expect("pin"), edited.pin("t").expect("pin"));
    assert!(refusal.contains(&ours.program) && refusal.contains(&theirs.program), "{refusal}");
    assert!(edited.check(&config).is_ok());
    // And running it there refuses too, before anything is written.
    let job = &external_jobs(&config, &panel)[0];
    let error = run(&panel, &config, job, &one).expect_err("refused");
    assert!(!error.retryable() && error.to_string().contains(&ours.program), "{error}");
    // Options are part of the identity.
    let with_options: Vec<_> =
        external_jobs(&config_with(&one, "t", "{ depth = 3 }"), &panel).iter().map(|job| job.key).collect();
    assert!(with_options.iter().all(|key| !old.contains(key)));
}

#[test]
fn a_registration_is_refused_with_its_reason() {
    let folder = tempfile::tempdir().expect("tempdir");
    let mut trainers = Trainers::default();
    let plain = folder.path().join("plain.sh");
    std::fs::write(&plain, "echo hi\n").expect("write");
    let error = trainers.register("plain", &plain, &[], false).expect_err("not executable");
    assert!(error.contains("--version"), "{error}");
    let error = trainers.register_flag("no-path", false).expect_err("no =");
    assert!(error.contains("NAME=PATH"), "{error}");
    let error = trainers.register("../x", &plain, &[], false).expect_err("bad name");
    assert!(error.contains("name"), "{error}");
    register(&mut trainers, folder.path(), "ok", Path::new("/bin/sh"), &shell("exit 0"));
    let error = trainers.register("ok", &folder.path().join("ok"), &[], false).expect_err("twice");
    assert!(error.contains("twice"), "{error}");
    assert_eq!(trainers.pin("ok").expect("pinned").version, "sh-trainer 1");
    let error = trainers.pin("nope").expect_err("unknown");
    assert!(error.contains("registered: ok"), "{error}");
}

/// A persistent trainer written with the Python package (`python/walkforward`): it scores
/// by `-vol_60`, records which process served each job, and with `options.die` exits
/// mid-job once.
fn persistent_trainer(seen: &Path) -> String {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
    format!(
        r#"
import os, sys
sys.path.insert(0, "{package}")
import polars as pl
import walkforward.trainer as wt

def negvol(job):
    open(os.path.join("{seen}", job.key), "w").write(str(os.getpid()))
    if job.options.get("fail"):
        raise ValueError("x" * 5000 + " the end of a long failure")
    if job.options.get("die") and not os.path.exists("{seen}/died"):
        open("{seen}/died", "w").write("once")
        os._exit(1)
    print("this print goes to stderr, not into the protocol")
    job.write_scores(job.score.select("date", "code", (-pl.col("vol_60").cast(pl.Float64).fill_null(0.0)).alias("score")))

wt.main(negvol, version="negvol-persistent 1")
"#,
        package = package.display(),
        seen = seen.display()
    )
}

/// A scratch folder, the folder where the persistent trainer records what it served, and
/// the registry with that trainer registered persistent as `negvol`.
fn persistent_setup(python: &Path) -> (tempfile::TempDir, PathBuf, Trainers) {
    let folder = tempfile::tempdir().expect("tempdir");
    let seen = folder.path().join("seen");
    std::fs::create_dir(&seen).expect("mkdir");
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    let path = folder.path().join("negvol.py");
    std::fs::write(&path, format!("#!{}\n{}", python.display(), persistent_trainer(&seen))).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    trainers.register("negvol", &path, &[], true).expect("registered");
    (folder, seen, trainers)
}

#[test]
fn a_persistent_trainer_serves_job_after_job_in_one_process() {
    let Some(python) = python() else { return };
    let (_folder, seen, trainers) = persistent_setup(&python);
    let panel = panel(&[1, 5]);
    let config = config_with(&trainers, "negvol", "{}");
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let name = |job: &Job| config.models[job.model].name.as_str();
    let mut pids = Vec::new();
    for job in plan.jobs.iter().filter(|job| name(job) == "mine") {
        let twin = plan
            .jobs
            .iter()
            .find(|other| name(other) == "-vol_60" && other.retrain_day == job.retrain_day)
            .expect("the baseline's job");
        let external = run(&panel, &config, job, &trainers).expect("the persistent job");
        let factor = run_job(&panel, &config, twin, &Device::Cpu).expect("the factor job");
        assert_eq!((external.ages, external.rankings), (factor.ages, factor.rankings));
        pids.push(std::fs::read_to_string(seen.join(job.key.to_string())).expect("served"));
    }
    assert!(pids.len() >= 2);
    assert!(pids.iter().all(|pid| *pid == pids[0]), "one process served every job: {pids:?}");
}

#[test]
fn a_persistent_trainer_that_dies_mid_job_is_restarted_and_the_job_retried() {
    let Some(python) = python() else { return };
    let (_folder, seen, trainers) = persistent_setup(&python);
    let panel = panel(&[1, 5]);
    let config = config_with(&trainers, "negvol", "{ die = true }");
    let job = &external_jobs(&config, &panel)[0];
    let error = run(&panel, &config, job, &trainers).expect_err("it died");
    assert!(error.retryable() && error.to_string().contains("mid-job"), "{error}");
    let first = std::fs::read_to_string(seen.join(job.key.to_string())).expect("served");
    // The retry gets a new process, which finishes it.
    let output = run(&panel, &config, job, &trainers).expect("retried");
    assert!(!output.ages.is_empty());
    let second = std::fs::read_to_string(seen.join(job.key.to_string())).expect("served");
    assert_ne!(first, second, "a new process");
}

#[test]
fn a_persistent_trainers_failure_is_answered_and_it_serves_on() {
    let Some(python) = python() else { return };
    let (_folder, seen, trainers) = persistent_setup(&python);
    let panel = panel(&[1, 5]);
    // A failure whose traceback is longer than a log line: answered, not waited out.
    let failing = config_with(&trainers, "negvol", "{ fail = true }");
    let job = &external_jobs(&failing, &panel)[0];
    let started = Instant::now();
    let error = run(&panel, &failing, job, &trainers).expect_err("it raised");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!error.retryable() && error.to_string().contains("the end of a long failure"), "{error}");
    let first = std::fs::read_to_string(seen.join(job.key.to_string())).expect("served");
    // The same process serves the next job.
    let config = config_with(&trainers, "negvol", "{}");
    let job = &external_jobs(&config, &panel)[0];
    run(&panel, &config, job, &trainers).expect("the next job");
    assert_eq!(std::fs::read_to_string(seen.join(job.key.to_string())).expect("served"), first);
}

#[test]
fn a_program_changed_after_registration_is_refused() {
    let folder = tempfile::tempdir().expect("tempdir");
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    let path = register(&mut trainers, folder.path(), "t", Path::new("/bin/sh"), &shell("exit 0"));
    let panel = panel(&[1, 5]);
    let config = config_with(&trainers, "t", "{}");
    let job = &external_jobs(&config, &panel)[0];
    std::fs::write(&path, format!("#!/bin/sh\n{}# edited\n", shell("exit 0"))).expect("edit");
    let error = run(&panel, &config, job, &trainers).expect_err("changed");
    assert!(!error.retryable() && error.to_string().contains("changed since the worker registered it"), "{error}");
}

#[test]
fn a_trainer_over_its_memory_limit_fails_with_the_reason() {
    let Some(python) = python() else { return };
    let folder = tempfile::tempdir().expect("tempdir");
    let mut trainers = Trainers::in_folder(folder.path().join("work"));
    trainers.memory = Some(1 << 30);
    let body = "import sys\nif sys.argv[1:] == ['--version']:\n    print('hog 1')\n    sys.exit(0)\nhog = bytearray(3 << 30)\n";
    register(&mut trainers, folder.path(), "hog", &python, body);
    let panel = panel(&[1, 5]);
    let config = config_with(&trainers, "hog", "{}");
    let job = &external_jobs(&config, &panel)[0];
    let error = run(&panel, &config, job, &trainers).expect_err("over its limit");
    assert!(!error.retryable() && error.to_string().contains("MemoryError"), "{error}");
}
