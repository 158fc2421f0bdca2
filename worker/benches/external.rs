//! The overhead of an external trainer (`docs/TRAINERS.md`): what an external job costs
//! beyond the trainer's own work (writing the job's files, starting the program, reading
//! and checking its scores), on a jp_tse1000 window-252 job, for a no-op Python trainer
//! (polars imported; it writes a score of 0 for every row) spawned per job and persistent;
//! printed next to a built-in `linear` job's whole time on the same retrain.
//!
//! ```text
//! cargo bench -p wf-worker --bench external
//! ```
//!
//! The panel: `WF_BENCH_PANEL` (default `out/jp_panel.parquet`, from `wf data prepare`
//! on `../shared/data/jp_tse1000`). Python: `WF_PYTHON`, else the CI venv's. Each mode runs
//! `WF_BENCH_REPEATS` jobs (default 5); medians are printed. Targets: overhead ≤ 0.3 s
//! persistent, ≤ 1.5 s spawned; a miss exits 1.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use wf_data::dataset::DataRoots;
use wf_shared::plan::Job;
use wf_shared::spec::SweepConfig;
use wf_worker::external::Trainers;
use wf_worker::job::{JobContext, JobData, run_job, run_job_in};

#[path = "../tests/support/python.rs"]
mod support_python;

const TRAINER: &str = r#"
import sys, time
started = time.perf_counter()
import json
import polars as pl
if sys.argv[1:] == ["--version"]:
    print("noop 1")
    sys.exit(0)

def noop(folder):
    began = time.perf_counter()
    job = json.load(open(f"{folder}/job.json"))
    score = pl.read_parquet(f"{folder}/{job['score_file']}", columns=["date", "code"])
    score.with_columns(pl.lit(0.0).alias("score")).write_parquet(f"{folder}/{job['scores_file']}")
    with open(job["options"]["times"], "a") as times:
        times.write(f"{time.perf_counter() - began}\n")

if sys.argv[1:] == ["--serve"]:
    for line in sys.stdin:
        request = json.loads(line)
        noop(request["job_dir"])
        print(json.dumps({"job": request["job"], "ok": True}), flush=True)
else:
    noop(sys.argv[1])
"#;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn spec(panel: &str, times: &Path) -> String {
    format!(
        r#"name = "external-bench"
[dataset]
panel = "{panel}"
[evaluation]
start = 2023-04-03
end = 2023-04-28
[plan]
train_windows = [252]
cadences = ["monthly"]
horizons = [5]
primary_horizon = 5
max_age = 63
[metrics]
k = 50
bootstrap_samples = 100
bootstrap_seed = 1
[[models]]
name = "noop"
kind = "external"
params = {{ trainer = "noop", options = {{ times = "{}" }} }}
[[models]]
name = "linear"
kind = "linear"
"#,
        times.display()
    )
}

fn main() {
    let panel = std::env::var("WF_BENCH_PANEL").unwrap_or_else(|_| "out/jp_panel.parquet".into());
    let panel = if Path::new(&panel).exists() { panel } else { format!("../{panel}") };
    if !Path::new(&panel).exists() {
        println!(
            "skipped: no panel at {panel} (wf data prepare --input ../shared/data/jp_tse1000/… --out out/jp_panel.parquet)"
        );
        return;
    }
    let Some(python) = support_python::with_polars() else {
        println!("skipped: no Python with polars (set WF_PYTHON)");
        return;
    };
    let repeats: usize = std::env::var("WF_BENCH_REPEATS").ok().and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let folder = tempfile::tempdir().expect("tempdir");
    let times = folder.path().join("times.txt");
    let program = folder.path().join("noop.py");
    std::fs::write(&program, format!("#!{}\n{TRAINER}", python.display())).expect("write trainer");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let text = spec(&panel, &times);
    let config = SweepConfig::from_toml(&text).expect("spec");
    let started = Instant::now();
    let data = JobData::open(&panel, &config.horizons, None, &DataRoots::Any, u64::MAX).expect("panel");
    let mut universe = Vec::new();
    let registered = |persistent: bool| {
        let mut trainers = Trainers::in_folder(folder.path().join(if persistent { "persistent" } else { "spawned" }));
        trainers.register("noop", &program, &[], persistent).expect("registered");
        trainers
    };
    let (spawned, persistent) = (registered(false), registered(true));
    let (_, config) = wf_shared::model::pin_trainers(&text, &config, |name| spawned.pin(name)).expect("pinned");
    let plan = wf_shared::plan::plan(&config, &data.plan_input(&mut universe)).expect("plan");
    let job_of = |name: &str| -> Job {
        plan.jobs.iter().find(|job| config.models[job.model].name == name).cloned().expect("a job")
    };
    let (external, linear) = (job_of("noop"), job_of("linear"));
    let panel = data.panel(&config, &external, &DataRoots::Any).expect("the job's days");
    let stocks = panel.rows_of_day(external.retrain_day).len();
    println!(
        "external trainer overhead: jp window-252 job ({stocks} stocks, {} training and {} scored days), panel read in {:.1} s, {repeats} jobs per mode",
        external.train_days.len(),
        external.score_days.len(),
        started.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    let mut targets = wf_shared::targets::Targets::default();
    for (mode, trainers, target) in [("spawned", &spawned, 1.5), ("persistent", &persistent, 0.3)] {
        // The persistent trainer starts (imports polars) at its first job: not counted.
        if mode == "persistent" {
            let context = JobContext { trainers: Some(trainers), ..JobContext::default() };
            run_job_in(&panel, &config, &external, &Device::Cpu, &context).expect("warm-up job");
        }
        let _ = std::fs::remove_file(&times);
        let mut totals = Vec::new();
        for _ in 0..repeats {
            let context = JobContext { trainers: Some(trainers), ..JobContext::default() };
            let begun = Instant::now();
            run_job_in(&panel, &config, &external, &Device::Cpu, &context).expect("external job");
            totals.push(begun.elapsed().as_secs_f64());
        }
        let mut own: Vec<f64> = std::fs::read_to_string(&times)
            .expect("the trainer's times")
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        let mut overheads: Vec<f64> = totals.iter().zip(&own).map(|(total, own)| total - own).collect();
        let (total, own, overhead) = (median(&mut totals), median(&mut own), median(&mut overheads));
        let verdict = targets.at_most(&format!("{mode} overhead (s)"), overhead, target);
        rows.push(format!("{mode:<11} {total:>8.3} s {own:>12.3} s {overhead:>10.3} s   <= {target} s: {verdict}"));
    }
    let mut linear_times = Vec::new();
    let linear_panel = data.panel(&config, &linear, &DataRoots::Any).expect("the job's days");
    for _ in 0..repeats.min(3) {
        let begun = Instant::now();
        run_job(&linear_panel, &config, &linear, &Device::Cpu).expect("linear job");
        linear_times.push(begun.elapsed().as_secs_f64());
    }
    println!("mode        job total   trainer's own   overhead   target");
    for row in rows {
        println!("{row}");
    }
    println!("built-in linear job, whole (train, importance, score): {:.3} s", median(&mut linear_times));
    println!("{}", targets.summary());
    std::process::exit(targets.exit_code());
}
