//! Result identity end to end, with the real `wf` binary: a rerun reuses only the
//! results of the very jobs it plans (K and the primary horizon included), its numbers
//! equal a fresh run's, and a result file edited by hand is not reused.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use wf_tests::wf_in;

const LIMIT: Duration = Duration::from_secs(240);

const SPEC: &str = r#"name = "reuse-e2e"
[dataset]
panel = "synth:stocks=60,days=420,seed=9"
[evaluation]
start = 2021-08-02
end = 2022-03-31
[plan]
train_windows = [126]
cadences = ["monthly", "quarterly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 42
[metrics]
k = 20
bootstrap_samples = 100
bootstrap_seed = 1
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = { epochs = 4 }
"#;

/// The second spec: K 30 and primary horizon 1, all else equal.
fn second_spec() -> String {
    SPEC.replace("k = 20", "k = 30").replace("primary_horizon = 5", "primary_horizon = 1")
}

struct Outcome {
    report: Value,
    jobs: usize,
    reused: usize,
}

/// `wf run spec.toml --out out --json` in `dir` with `spec`.
fn run(dir: &Path, spec: &str) -> Outcome {
    std::fs::write(dir.join("spec.toml"), spec).expect("spec");
    let run = wf_in(dir, &["run", "spec.toml", "--out", "out", "--workers", "2", "--json"], LIMIT);
    assert!(run.succeeded(), "wf run failed:\n{}", run.stderr);
    // "sweep ID (NAME): N distinct trainings from M by window x cadence, R reused; ..."
    let summary = run.stderr.lines().find(|l| l.contains(" reused;")).expect("the run's summary line");
    let number_before = |marker: &str| -> usize {
        let head = summary.split(marker).next().expect("marker");
        head.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {summary}"))
    };
    Outcome {
        report: serde_json::from_str(&run.stdout).expect("report JSON"),
        jobs: number_before(" distinct trainings"),
        reused: number_before(" reused;"),
    }
}

/// Each schedule's name, mean ΔP@K and mean RankIC.
fn figures(report: &Value) -> Vec<(String, f64, f64)> {
    let mut figures = Vec::new();
    for line in report["lines"].as_array().expect("lines") {
        for schedule in line["schedules"].as_array().expect("schedules") {
            figures.push((
                format!("{} {}", line["window"], schedule["name"]),
                schedule["delta"]["mean"].as_f64().expect("delta mean"),
                schedule["rank_ic"]["mean"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    figures
}

#[test]
fn a_rerun_with_another_k_and_horizon_reuses_nothing_and_matches_a_fresh_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = run(dir.path(), SPEC);
    assert_eq!(first.reused, 0);
    assert!(first.jobs >= 3, "{} jobs", first.jobs);

    let second = run(dir.path(), &second_spec());
    assert_eq!(second.reused, 0, "results of K 20 / horizon 5 were reused for K 30 / horizon 1");
    assert_eq!(second.report["horizon"], 1);
    assert_eq!(second.report["k"], serde_json::json!({"count": 30}));

    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = run(fresh_dir.path(), &second_spec());
    assert_eq!(figures(&second.report), figures(&fresh.report), "the rerun's numbers are not a fresh run's");
    assert_ne!(figures(&first.report), figures(&second.report), "K and horizon changed nothing?");

    let third = run(dir.path(), &second_spec());
    assert_eq!((third.reused, third.jobs), (second.jobs, second.jobs), "a third run reuses everything");
    assert_eq!(figures(&third.report), figures(&second.report));
}

#[test]
fn a_result_file_edited_by_hand_is_not_reused_and_the_report_still_builds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = run(dir.path(), SPEC);
    let results = dir.path().join("out/artifacts/results");
    let mut files: Vec<_> = std::fs::read_dir(&results).expect("results").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert_eq!(files.len(), first.jobs);
    let mut bytes = std::fs::read(&files[0]).expect("result");
    let last = bytes.len() - 40;
    bytes[last] = bytes[last].wrapping_add(1);
    std::fs::write(&files[0], bytes).expect("edit one byte");

    // The offline report (no rerun) builds and names the job as missing.
    let offline = wf_in(dir.path(), &["report", "out", "--json"], LIMIT);
    assert!(offline.succeeded(), "{}", offline.stderr);
    let offline: Value = serde_json::from_str(&offline.stdout).expect("report JSON");
    assert_eq!(offline["missing"].as_array().map(Vec::len), Some(1), "{}", offline["missing"]);

    let again = run(dir.path(), SPEC);
    assert_eq!(again.reused, first.jobs - 1, "the edited result was reused");
    assert_eq!(figures(&again.report), figures(&first.report));
    assert_eq!(again.report["missing"].as_array().map(Vec::len), Some(0));
    assert!(dir.path().join("out/artifacts/refused").read_dir().expect("refused/").next().is_some());
}
