//! `wf live simulate` against the offline replay, with the real binary: a sweep runs,
//! then deployments of its fixed cadences and of policies of each trigger kind are fed
//! its days one by one. Each retrains on exactly the days the report's replay of the same
//! schedule does, reuses the sweep's results for them (same job keys, nothing trained),
//! and leaves the replay's daily series.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use wf_tests::wf_in;

const LIMIT: Duration = Duration::from_secs(240);

const SPEC: &str = r#"name = "live-e2e"
[dataset]
panel = "synth:stocks=60,days=520,seed=4"
[evaluation]
start = 2021-08-02
end = 2022-09-30
[plan]
train_windows = [126]
cadences = ["weekly", "monthly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 63
[metrics]
k = 15
bootstrap_samples = 50
bootstrap_seed = 1
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = { epochs = 3 }
[triggers.performance]
metric = "delta_p_at_k"
tau = [0.0, 0.05]
lookback = [5, 10]
[triggers.drift]
theta = [0.02, 0.1]
share = [0.3]
days = [5]
[triggers.age]
max_age = [21, 42]
"#;

/// `wf live simulate` of `policy` in `dir`: the summary (`--json`) and daily.csv by date
/// (ΔP@K, empty where nothing was scored).
fn simulate(dir: &Path, policy: &str, out: &str) -> (Value, HashMap<String, Option<f64>>) {
    let args = [
        "live",
        "simulate",
        "spec.toml",
        "--model",
        "linear",
        "--window",
        "126",
        "--policy",
        policy,
        "--artifacts",
        "out/artifacts",
        "--out",
        out,
        "--json",
    ];
    let run = wf_in(dir, &args, LIMIT);
    assert!(run.succeeded(), "wf live simulate --policy {policy:?} failed:\n{}", run.stderr);
    let summary: Value = serde_json::from_str(&run.stdout).expect("summary JSON");
    let daily = std::fs::read_to_string(dir.join(out).join("daily.csv")).expect("daily.csv");
    let mut lines = daily.lines();
    assert_eq!(lines.next(), Some("date,version,retrain_date,age,delta_p_at_k,p_at_k,rank_ic"));
    let days = lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (cells[0].to_string(), cells[4].parse::<f64>().ok())
        })
        .collect();
    (summary, days)
}

#[test]
fn a_simulated_deployment_retrains_on_the_replays_days_and_reuses_the_sweeps_results() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("spec.toml"), SPEC).expect("spec");
    let run = wf_in(dir.path(), &["run", "spec.toml", "--out", "out", "--workers", "2", "--json"], LIMIT);
    assert!(run.succeeded(), "wf run failed:\n{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("report JSON");
    let line = &report["lines"][0];
    let schedules = line["schedules"].as_array().expect("schedules");
    let series: HashMap<String, &Value> = report["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| (s["schedule"].as_str().expect("name").to_string(), s))
        .collect();

    // Both fixed cadences, and the first policy of each kind, of each pair and of all three.
    let mut chosen: Vec<&Value> = schedules.iter().filter(|s| s["adaptive"] == false).collect();
    let kinds = |s: &&Value| {
        let name = s["name"].as_str().unwrap_or_default();
        (name.contains("P@K<"), name.contains("PSI>"), name.contains("age>="))
    };
    let mut seen = Vec::new();
    for schedule in schedules.iter().filter(|s| s["adaptive"] == true) {
        let kind = kinds(&schedule);
        if !seen.contains(&kind) {
            seen.push(kind);
            chosen.push(schedule);
        }
    }
    assert_eq!(seen.len(), 7, "every combination of trigger kinds is in the grid");
    let best = series.values().find(|s| s["adaptive"] == true).expect("the best policy's series");
    chosen.extend(schedules.iter().filter(|s| s["name"] == best["schedule"]));

    let mut adaptive_retrains = Vec::new();
    for (index, schedule) in chosen.iter().enumerate() {
        let name = schedule["name"].as_str().expect("name");
        let (summary, daily) = simulate(dir.path(), name, &format!("live{index}"));
        let days = |value: &Value| -> Vec<u64> {
            value.as_array().expect("days").iter().map(|d| d.as_u64().expect("day")).collect()
        };
        let replayed = days(&schedule["retrain_days"]);
        assert_eq!(days(&summary["retrain_days"]), replayed, "{name}: the replay's retrain days");
        assert_eq!(summary["trained"], 0, "{name}: every retrain is a job the sweep already ran");
        assert_eq!(summary["reused"].as_u64(), Some(replayed.len() as u64), "{name}");
        let retrains = replayed.len();
        if schedule["adaptive"] == true {
            adaptive_retrains.push(retrains);
        }
        // Where the report keeps the schedule's daily series, the simulation's is the same.
        if let Some(series) = series.get(name) {
            let report_dates = series["dates"].as_array().expect("dates");
            assert_eq!(report_dates.len(), daily.len(), "{name}: the same days");
            for (date, delta) in report_dates.iter().zip(series["delta"].as_array().expect("delta")) {
                let date = date.as_str().expect("date");
                let simulated = daily.get(date).unwrap_or_else(|| panic!("{name}: no simulated {date}"));
                match (delta.as_f64(), simulated) {
                    (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{name} {date}: {a} vs {b}"),
                    (None, None) => {}
                    (a, b) => panic!("{name} {date}: report {a:?}, simulation {b:?}"),
                }
            }
        }
    }
    eprintln!("retrains of the adaptive policies: {adaptive_retrains:?}");
    assert!(adaptive_retrains.iter().any(|n| *n > 1), "some policy retrains: {adaptive_retrains:?}");
    assert!(
        adaptive_retrains.iter().collect::<std::collections::HashSet<_>>().len() > 1,
        "policies differ in what they decide: {adaptive_retrains:?}"
    );

    // Decisions carry their readings; a retrain row names what fired.
    let decisions = std::fs::read_to_string(dir.path().join("live2/decisions.csv")).expect("decisions.csv");
    assert!(decisions.starts_with("date,version,age,retrain,reason,readings\n"));
    assert!(decisions.lines().skip(1).all(|l| l.contains("P@K<") || l.contains("PSI>") || l.contains("age>=")));
}

#[test]
fn a_simulation_without_a_sweep_trains_what_it_decides_and_refuses_bad_arguments() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("spec.toml"), SPEC).expect("spec");
    let run = |policy: &str, model: &str, window: &str| {
        let args =
            ["live", "simulate", "spec.toml", "--model", model, "--window", window, "--policy", policy, "--json"];
        wf_in(dir.path(), &args, LIMIT)
    };
    let ok = run("age>=42d", "linear", "126");
    assert!(ok.succeeded(), "{}", ok.stderr);
    let summary: Value = serde_json::from_str(&ok.stdout).expect("summary");
    let retrains = summary["retrain_dates"].as_array().expect("dates").len();
    assert!(retrains >= 3, "age 42 over a year retrains: {summary}");
    assert_eq!(summary["trained"].as_u64(), Some(retrains as u64));

    for (policy, model, window, expected) in [
        ("fortnightly", "linear", "126", "--policy"),
        ("quarterly", "linear", "126", "not a cadence of the spec"),
        ("ΔP@K<x over 5d", "linear", "126", "τ is not a number"),
        ("weekly", "mlp", "126", "--model: the spec has no model \"mlp\""),
        ("weekly", "linear", "252", "--window: 252 is not a train window"),
    ] {
        let refused = run(policy, model, window);
        assert!(!refused.succeeded(), "{policy} {model} {window} ran");
        assert!(refused.stderr.contains(expected), "{policy} {model} {window}: {}", refused.stderr);
    }
}
