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

pub(crate) const SPEC: &str = r#"name = "live-e2e"
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

/// The spec with an `mlp` (slower to train, so an advance can be killed midway).
fn mlp_spec() -> String {
    SPEC.replace("name = \"linear\"\nkind = \"linear\"", "name = \"mlp\"\nkind = \"mlp\"")
        .replace("params = { epochs = 3 }", "params = { hidden = [64, 32], epochs = 12 }")
}

/// The deployment's state.json.
fn state(dir: &Path, id: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(format!("live/live/{id}/state.json"))).expect("state.json");
    serde_json::from_str(&text).expect("state JSON")
}

fn live_run(dir: &Path, args: &[&str]) -> wf_tests::Run {
    let mut all = args.to_vec();
    all.extend(["--artifacts", "live"]);
    wf_in(dir, &all, LIMIT)
}

/// A deployment advanced in one go and one killed (SIGKILL) midway and advanced again
/// end with the same decisions, versions and switches, each version trained once; both
/// retrain on the days `wf live simulate` decides for the policy.
#[test]
fn a_deployment_killed_midway_continues_without_losing_or_repeating_a_decision() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("spec.toml"), mlp_spec()).expect("spec");
    let policy = "ΔP@K<0.05 over 10d or age>=42d";
    let deploy = |id: &str| {
        let run = live_run(
            dir.path(),
            &["live", "deploy", "spec.toml", "--model", "mlp", "--window", "126", "--policy", policy, "--id", id],
        );
        assert!(run.succeeded(), "deploy {id}: {}", run.stderr);
        assert_eq!(run.stdout.trim(), id);
    };
    deploy("whole");
    deploy("killed");
    let again = live_run(
        dir.path(),
        &["live", "deploy", "spec.toml", "--model", "mlp", "--window", "126", "--policy", policy, "--id", "whole"],
    );
    assert!(!again.succeeded() && again.stderr.contains("exists already"), "{}", again.stderr);
    // A deploy that stopped before its first state (killed while training) finishes when run
    // again with the same arguments; other arguments under the same id are refused.
    std::fs::remove_file(dir.path().join("live/live/whole/state.json")).expect("state");
    let finished = live_run(
        dir.path(),
        &["live", "deploy", "spec.toml", "--model", "mlp", "--window", "126", "--policy", policy, "--id", "whole"],
    );
    assert!(finished.succeeded(), "{}", finished.stderr);
    std::fs::remove_file(dir.path().join("live/live/whole/state.json")).expect("state");
    let other = live_run(
        dir.path(),
        &["live", "deploy", "spec.toml", "--model", "mlp", "--window", "126", "--policy", "monthly", "--id", "whole"],
    );
    assert!(!other.succeeded() && other.stderr.contains("exists already"), "{}", other.stderr);
    let restored = live_run(
        dir.path(),
        &["live", "deploy", "spec.toml", "--model", "mlp", "--window", "126", "--policy", policy, "--id", "whole"],
    );
    assert!(restored.succeeded(), "{}", restored.stderr);

    let whole = live_run(dir.path(), &["live", "advance", "whole"]);
    assert!(whole.succeeded(), "{}", whole.stderr);

    // Kill the other once it has decided a few retrains.
    let mut process = wf_tests::Process::start(dir.path(), &["live", "advance", "killed", "--artifacts", "live"], &[]);
    let versions_of = |dir: &Path| state(dir, "killed")["versions"].as_array().map_or(0, Vec::len);
    wf_tests::wait_until("three versions", Duration::from_secs(120), || versions_of(dir.path()) >= 3);
    process.signal("KILL");
    process.wait(Duration::from_secs(10));
    let at_kill = state(dir.path(), "killed");
    let whole_state = state(dir.path(), "whole");
    assert!(
        at_kill["next_day"].as_u64() < whole_state["next_day"].as_u64(),
        "killed before the end: {} of {}",
        at_kill["next_day"],
        whole_state["next_day"]
    );
    let resumed = live_run(dir.path(), &["live", "advance", "killed"]);
    assert!(resumed.succeeded(), "{}", resumed.stderr);
    let killed_state = state(dir.path(), "killed");
    for field in ["decisions", "switches", "next_day", "live"] {
        assert_eq!(killed_state[field], whole_state[field], "{field}");
    }
    let versions = |state: &Value| -> Vec<(Value, Value)> {
        state["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| (v["retrain_day"].clone(), v["job_key"].clone()))
            .collect()
    };
    assert_eq!(versions(&killed_state), versions(&whole_state));
    let files = std::fs::read_dir(dir.path().join("live/live/killed/versions")).expect("versions").count();
    assert_eq!(files, versions(&killed_state).len(), "one weights file per version");
    let decisions = whole_state["decisions"].as_array().expect("decisions");
    assert!(decisions.iter().filter(|d| d["retrain"] == true).count() >= 3, "the policy retrains");

    // The simulation of the same policy retrains on the same days, as far as it goes (the
    // plan's days: it replays scored results, so it stops at the last matured day); the
    // deployment goes on deciding through the panel's last day.
    let simulated = wf_in(
        dir.path(),
        &["live", "simulate", "spec.toml", "--model", "mlp", "--window", "126", "--policy", policy, "--json"],
        LIMIT,
    );
    assert!(simulated.succeeded(), "{}", simulated.stderr);
    let summary: Value = serde_json::from_str(&simulated.stdout).expect("summary");
    let deployed: Vec<Value> = versions(&whole_state).into_iter().map(|(day, _)| day).collect();
    let replayed = summary["retrain_days"].as_array().expect("days");
    assert_eq!(replayed.as_slice(), &deployed[..replayed.len().min(deployed.len())]);
    assert!(deployed.len() > replayed.len(), "no retrain past the plan's last decision day");
}

/// A directory with the spec and a monthly `linear` deployment `id` in `live/`.
fn monthly_deployment(id: &str) -> tempfile::TempDir {
    monthly_deployment_of(id, "local")
}

/// [`monthly_deployment`] of `tenant`.
fn monthly_deployment_of(id: &str, tenant: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("spec.toml"), SPEC).expect("spec");
    let deploy = live_run(
        dir.path(),
        &[
            "live",
            "deploy",
            "spec.toml",
            "--model",
            "linear",
            "--window",
            "126",
            "--policy",
            "monthly",
            "--id",
            id,
            "--tenant",
            tenant,
        ],
    );
    assert!(deploy.succeeded(), "{}", deploy.stderr);
    dir
}

/// Predictions come from the version live on the day, and from the earlier one at once
/// after a rollback; each is written for audit; bad requests are refused by name.
#[test]
fn predictions_follow_promotions_and_rollbacks() {
    let dir = monthly_deployment("m");
    let early = live_run(dir.path(), &["predict", "m", "--date", "2022-06-01"]);
    assert!(!early.succeeded() && early.stderr.contains("not processed yet"), "{}", early.stderr);
    let advance = live_run(dir.path(), &["live", "advance", "m", "--to", "2022-06-30"]);
    assert!(advance.succeeded(), "{}", advance.stderr);
    let predict = |date: &str| -> Value {
        let run = live_run(dir.path(), &["predict", "m", "--date", date, "--k", "5", "--json"]);
        assert!(run.succeeded(), "{}", run.stderr);
        serde_json::from_str(&run.stdout).expect("prediction JSON")
    };
    let state_now = state(dir.path(), "m");
    let live = state_now["versions"].as_array().expect("versions").len() as u64;
    assert!(live >= 6, "monthly over 11 months: {live} versions");
    let before = predict("2022-06-30");
    assert_eq!(before["version"].as_u64(), Some(live));
    assert_eq!(before["top"].as_array().expect("top").len(), 5);
    // A day in March was ranked by the version live then.
    let march = predict("2022-03-15");
    assert!(march["version"].as_u64() < Some(live));
    assert!(dir.path().join(format!("live/live/m/predictions/2022-06-30-v{live}.parquet")).exists());

    let rollback = live_run(dir.path(), &["live", "rollback", "m"]);
    assert!(rollback.succeeded(), "{}", rollback.stderr);
    let after = predict("2022-06-30");
    assert_eq!(after["version"].as_u64(), Some(live - 1), "the previous version, at once");
    assert_ne!(after["top"], before["top"], "another model's ranking");
    let status = live_run(dir.path(), &["live", "status", "m", "--json"]);
    assert!(status.succeeded(), "{}", status.stderr);
    let view: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(view[0]["rollbacks"], 1);
    assert_eq!(view[0]["live_version"].as_u64(), Some(live - 1));
    // Forward again to the newest, then the deployment keeps deciding from there.
    let forward = live_run(dir.path(), &["live", "rollback", "m", "--to", &live.to_string()]);
    assert!(forward.succeeded(), "{}", forward.stderr);
    assert_eq!(predict("2022-06-30")["top"], before["top"]);
    let more = live_run(dir.path(), &["live", "advance", "m"]);
    assert!(more.succeeded(), "{}", more.stderr);
    assert!(state(dir.path(), "m")["versions"].as_array().expect("versions").len() as u64 > live);

    for (args, expected) in [
        (vec!["live", "rollback", "m", "--to", "999"], "no version 999"),
        (vec!["predict", "m", "--date", "2022-06-04"], "not a trading day"),
        (vec!["live", "status", "nope"], "does not exist"),
    ] {
        let run = live_run(dir.path(), &args);
        assert!(!run.succeeded(), "{args:?} ran");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
}

/// With `--shadow 5` a retrained version is served only after its first five days'
/// labels matured and only if it did not score worse there: each promotion is a shadow
/// won, a version that lost never goes live, and predictions in a shadow period come
/// from the version live before it.
#[test]
fn shadow_versions_go_live_only_after_winning_their_shadow_period() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("spec.toml"), SPEC).expect("spec");
    let args =
        ["live", "deploy", "spec.toml", "--model", "linear", "--window", "126", "--policy", "monthly", "--shadow", "5"];
    let deploy = live_run(dir.path(), &[&args[..], &["--id", "s"]].concat());
    assert!(deploy.succeeded(), "{}", deploy.stderr);
    let advance = live_run(dir.path(), &["live", "advance", "s"]);
    assert!(advance.succeeded(), "{}", advance.stderr);
    let state = state(dir.path(), "s");
    let shadows = state["shadows"].as_array().expect("shadows");
    assert!(shadows.len() >= 6, "one shadow period per monthly retrain: {}", shadows.len());
    let switches = state["switches"].as_array().expect("switches");
    for switch in &switches[1..] {
        let won = shadows.iter().find(|s| s["day"] == switch["day"] && s["candidate"] == switch["version"]);
        let won = won.unwrap_or_else(|| panic!("switch {switch} is a promotion without a shadow"));
        assert_eq!(won["promoted"], true);
        assert!(won["candidate_mean"].as_f64() >= won["live_mean"].as_f64(), "{won}");
        assert_eq!(won["days"], 5);
    }
    for lost in shadows.iter().filter(|s| s["promoted"] == false) {
        assert!(switches.iter().all(|s| s["version"] != lost["candidate"]), "{lost} went live");
    }
    assert!(shadows.iter().any(|s| s["promoted"] == false) && shadows.iter().any(|s| s["promoted"] == true));

    // A day inside a shadow period (its candidate's retrain date) is ranked by the version
    // live before it.
    let run = live_run(dir.path(), &["live", "status", "s", "--json"]);
    assert!(run.succeeded(), "{}", run.stderr);
    let view: Value = serde_json::from_str(&run.stdout).expect("status JSON");
    let shadow = &shadows[0];
    let candidate = view[0]["version_list"]
        .as_array()
        .expect("version list")
        .iter()
        .find(|v| v["number"] == shadow["candidate"])
        .expect("the candidate");
    let date = candidate["retrain_date"].as_str().expect("date");
    let run = live_run(dir.path(), &["predict", "s", "--date", date, "--json"]);
    assert!(run.succeeded(), "{}", run.stderr);
    let prediction: Value = serde_json::from_str(&run.stdout).expect("prediction");
    assert_eq!(prediction["version"], shadow["live"], "on {date}");
}

/// A coordinator started with `--live-artifacts` answers `Predict` for the deployments
/// there (behind its tokens: a user may, a worker may not), with what `wf predict`
/// computes locally; a rollback by another process shows at the next call; and its
/// `/metrics` carries the deployment's `wf_live_*` series and the predictions served.
#[test]
fn a_coordinator_serves_predictions_and_live_metrics() {
    let dir = monthly_deployment_of("m", "team");
    let advance = live_run(dir.path(), &["live", "advance", "m"]);
    assert!(advance.succeeded(), "{}", advance.stderr);
    let token_of = |tenant: &str, role: &str| {
        let run =
            wf_in(dir.path(), &["auth", "new-token", "--tenant", tenant, "--role", role, "--file", "tokens"], LIMIT);
        assert!(run.succeeded(), "{}", run.stderr);
        run.stdout.trim().to_string()
    };
    let token = |role: &str| token_of("team", role);
    let (user, worker) = (token("user"), token("worker"));
    let (stranger, admin) = (token_of("other", "user"), token_of("other", "admin"));
    let (port, metrics_port) = (wf_tests::free_port(), wf_tests::free_port());
    let listen = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{metrics_port}");
    let url = format!("http://{listen}");
    let coordinator = wf_tests::Process::start(
        dir.path(),
        &[
            "coordinator",
            "--listen",
            &listen,
            "--artifacts",
            "a",
            "--auth",
            "tokens",
            "--live-artifacts",
            "live",
            "--metrics",
            &metrics,
        ],
        &[],
    );
    wf_tests::wait_until("the coordinator listens", LIMIT, || coordinator.stdout().contains("listening on"));

    let remote = |token: &str| {
        wf_tests::wf_env(
            dir.path(),
            &["predict", "m", "--coordinator", &url, "--k", "5", "--json"],
            &[("WF_TOKEN", token)],
        )
    };
    let local = || {
        let run = live_run(dir.path(), &["predict", "m", "--k", "5", "--json"]);
        assert!(run.succeeded(), "{}", run.stderr);
        serde_json::from_str::<Value>(&run.stdout).expect("local prediction")
    };
    let served = remote(&user);
    assert!(served.succeeded(), "{}", served.stderr);
    let served: Value = serde_json::from_str(&served.stdout).expect("served prediction");
    let here = local();
    for field in ["date", "version", "job_key", "stocks", "top"] {
        assert_eq!(served[field], here[field], "{field}");
    }
    // Another tenant's user is told the deployment does not exist; an admin sees it.
    let hidden = remote(&stranger);
    assert!(!hidden.succeeded() && hidden.stderr.contains("does not exist"), "{}", hidden.stderr);
    let seen = remote(&admin);
    assert!(seen.succeeded(), "{}", seen.stderr);
    let refused = remote(&worker);
    assert!(!refused.succeeded() && refused.stderr.contains("may not call LiveService"), "{}", refused.stderr);
    let anonymous = wf_tests::wf(dir.path(), &["predict", "m", "--coordinator", &url]);
    assert!(!anonymous.succeeded() && anonymous.stderr.contains("needs a token"), "{}", anonymous.stderr);

    let rollback = live_run(dir.path(), &["live", "rollback", "m"]);
    assert!(rollback.succeeded(), "{}", rollback.stderr);
    let after: Value = serde_json::from_str(&remote(&user).stdout).expect("after the rollback");
    assert_eq!(after["version"].as_u64(), served["version"].as_u64().map(|v| v - 1), "at once");

    let versions = state(dir.path(), "m")["versions"].as_array().expect("versions").len();
    wf_tests::wait_until("the live metrics", LIMIT, || {
        let Ok((200, text)) = wf_tests::http_get(&metrics, "/metrics") else { return false };
        let series = |name: &str| wf_tests::metric(&text, name, &[("deployment", "m")]);
        series("wf_live_versions") == Some(versions as f64)
            && series("wf_live_rollbacks_total") == Some(1.0)
            && series("wf_predictions_total") == Some(3.0)
            && series("wf_live_model_age_days").is_some_and(|age| age > 0.0)
            && series("wf_live_model_retrained_timestamp_seconds").is_some_and(|t| t > 1.6e9)
    });
}

/// A retrain that fails is recorded (in the state and by `wf live status`) and leaves the
/// deployment at the last day saved before it, serving its live version; the next advance
/// retrains that day and ends exactly where an advance without the failure ends.
#[test]
fn a_failed_retrain_is_recorded_and_the_next_advance_retries_it() {
    let dir = monthly_deployment("f");
    let args = ["live", "deploy", "spec.toml", "--model", "linear", "--window", "126", "--policy", "monthly"];
    let other = live_run(dir.path(), &[&args[..], &["--id", "w"]].concat());
    assert!(other.succeeded(), "{}", other.stderr);
    let whole = live_run(dir.path(), &["live", "advance", "w"]);
    assert!(whole.succeeded(), "{}", whole.stderr);

    let early = live_run(dir.path(), &["live", "advance", "f", "--to", "2022-03-31"]);
    assert!(early.succeeded(), "{}", early.stderr);
    let before = state(dir.path(), "f");
    let failed = wf_tests::wf_in_env(
        dir.path(),
        &["live", "advance", "f", "--artifacts", "live"],
        &[("WF_FAULT_FAIL_JOBS", "")],
        LIMIT,
    );
    assert!(!failed.succeeded() && failed.stderr.contains("injected failure"), "{}", failed.stderr);
    let stuck = state(dir.path(), "f");
    assert_eq!(stuck["retrain_failures_total"], 1);
    let failure = &stuck["retrain_failures"][0];
    assert!(failure["error"].as_str().is_some_and(|e| e.contains("injected failure")), "{failure}");
    assert!(failure["day"].as_u64() >= stuck["next_day"].as_u64(), "the failed day is not processed: {failure}");
    for field in ["decisions", "versions", "switches", "live"] {
        assert_eq!(stuck[field], before[field], "{field}: nothing of the failed advance was kept");
    }
    let status = |json: bool| {
        let run =
            live_run(dir.path(), &[&["live", "status", "f"][..], if json { &["--json"][..] } else { &[] }].concat());
        assert!(run.succeeded(), "{}", run.stderr);
        run.stdout
    };
    assert!(status(false).contains("retrain failures: 1 (FAILING"), "{}", status(false));
    let predicted = live_run(dir.path(), &["predict", "f", "--json"]);
    assert!(predicted.succeeded(), "the live version still serves: {}", predicted.stderr);

    let retried = live_run(dir.path(), &["live", "advance", "f"]);
    assert!(retried.succeeded(), "{}", retried.stderr);
    let done = state(dir.path(), "f");
    let reference = state(dir.path(), "w");
    for field in ["decisions", "switches", "next_day", "live"] {
        assert_eq!(done[field], reference[field], "{field}");
    }
    let view: Value = serde_json::from_str(&status(true)).expect("status JSON");
    assert_eq!(view[0]["retrain_failing"], false);
    assert_eq!(view[0]["retrain_failures"], 1);
    assert!(status(false).contains("(since retrained)"), "{}", status(false));
}

/// The daily loop on a prepared panel: `wf live ingest` adds days to the deployment's
/// panel file; `wf live advance` processes them, then a coordinator started with
/// `--live-advance-seconds` does, its retrains trained by a worker through the queue
/// (across a SIGKILL of the coordinator while one waits), and serves the newest day. The
/// deployment ends with the same decisions, versions and switches as one deployed on the
/// panel prepared from the whole history and trained in process, whose file the ingested
/// one equals byte for byte. A missing day is refused and changes nothing.
#[test]
fn days_ingested_into_a_deployments_panel_are_decided_as_if_prepared_whole() {
    use wf_shared::synth::{SynthSpec, generate};
    let dir = tempfile::tempdir().expect("dir");
    let bars = generate(&SynthSpec { stocks: 60, days: 520, seed: 4, ..SynthSpec::default() }).expect("synth").bars;
    let mut dates = bars.date.clone();
    dates.sort_unstable();
    dates.dedup();
    let at = |date: &str| dates.iter().position(|d| d.to_string() == date).expect("a trading day");
    let cut = at("2022-06-30");
    let write = |name: &str, keep: &dyn Fn(chrono::NaiveDate) -> bool| {
        wf_data::ohlcv::write_ohlcv(&dir.path().join(name), &bars.rows_where(|d, _| keep(d))).expect("OHLCV");
    };
    write("whole.ohlcv.parquet", &|_| true);
    write("head.ohlcv.parquet", &|d| d <= dates[cut]);
    write("day.ohlcv.parquet", &|d| d == dates[cut + 1]);
    write("gap.ohlcv.parquet", &|d| d == dates[cut + 3]);
    write("rest.ohlcv.parquet", &|d| d > dates[cut + 1]);
    for (input, out) in [("whole.ohlcv.parquet", "whole.parquet"), ("head.ohlcv.parquet", "live.parquet")] {
        let run = wf_in(dir.path(), &["data", "prepare", "--input", input, "--out", out], LIMIT);
        assert!(run.succeeded(), "{}", run.stderr);
    }
    for (name, panel) in [("whole", "whole.parquet"), ("live", "live.parquet")] {
        let spec = SPEC.replace("panel = \"synth:stocks=60,days=520,seed=4\"", &format!("panel = \"{panel}\""));
        std::fs::write(dir.path().join(format!("{name}.toml")), spec).expect("spec");
        let deploy = live_run(
            dir.path(),
            &["live", "deploy", &format!("{name}.toml"), "--model", "linear", "--window", "126", "--policy", "monthly"],
        );
        assert!(deploy.succeeded(), "{}", deploy.stderr);
        std::fs::write(dir.path().join(format!("{name}.id")), deploy.stdout.trim()).expect("id");
    }
    let id = |name: &str| std::fs::read_to_string(dir.path().join(format!("{name}.id"))).expect("id");
    let (whole, live) = (id("whole"), id("live"));
    let advance = |id: &str| {
        let run = live_run(dir.path(), &["live", "advance", id]);
        assert!(run.succeeded(), "{}", run.stderr);
    };
    advance(&whole);
    advance(&live);
    let before = state(dir.path(), &live);
    assert!(before["next_day"].as_u64() < state(dir.path(), &whole)["next_day"].as_u64());

    let ingest = |input: &str| live_run(dir.path(), &["live", "ingest", &live, "--input", input]);
    let panel_bytes = || std::fs::read(dir.path().join("live.parquet")).expect("panel");
    let day = ingest("day.ohlcv.parquet");
    assert!(day.succeeded(), "{}", day.stderr);
    assert!(day.stdout.contains("added 1 days"), "{}", day.stdout);
    let unchanged = panel_bytes();
    let gap = ingest("gap.ohlcv.parquet");
    assert!(!gap.succeeded() && gap.stderr.contains(&format!("no data for {}", dates[cut + 2])), "{}", gap.stderr);
    assert!(panel_bytes() == unchanged, "a refused ingest changed the panel");
    advance(&live);
    assert_eq!(state(dir.path(), &live)["next_day"].as_u64(), Some(cut as u64 + 2));

    // From here a coordinator advances the deployment as its panel grows, its retrains
    // queued as training-only jobs for the workers. There is no worker at first: it
    // stops before the first retrain, and is killed (SIGKILL) there; the job it queued
    // lived in its memory only, and a new coordinator restores it from the artifact
    // store (its sweep record names the training line) before a worker trains it.
    let root = dir.path().display().to_string();
    let coordinator = |listen: &str| {
        let args = ["coordinator", "--listen", listen, "--artifacts", "a", "--live-artifacts", "live"];
        let rest = ["--live-advance-seconds", "1", "--data-root", &root, "--reconcile-seconds", "1"];
        let process = wf_tests::Process::start(dir.path(), &[&args[..], &rest[..]].concat(), &[]);
        wf_tests::wait_until("the coordinator listens", LIMIT, || process.stdout().contains("listening on"));
        process
    };
    let first = coordinator(&format!("127.0.0.1:{}", wf_tests::free_port()));
    let rest = ingest("rest.ohlcv.parquet");
    assert!(rest.succeeded(), "{}", rest.stderr);
    let again = ingest("day.ohlcv.parquet");
    assert!(!again.succeeded() && again.stderr.contains("already in the panel"), "{}", again.stderr);
    wf_tests::wait_until("the coordinator waits for a retrain on the workers", LIMIT, || {
        first.stderr().contains("a retrain the workers are training")
    });
    assert!(first.stderr().contains("retrain queued on the workers"), "{}", first.stderr());
    let stalled = state(dir.path(), &live);
    let waiting = stalled["next_day"].as_u64().expect("next day");
    assert!(waiting < dates.len() as u64, "the deployment went past a retrain no worker trained");
    first.signal("KILL");
    let listen = format!("127.0.0.1:{}", wf_tests::free_port());
    let coordinator = coordinator(&listen);
    let worker = wf_tests::Process::start(
        dir.path(),
        // Every prepared panel read by days (the default is above 4 M rows): each retrain
        // reads its days of the grown panel, checked against its metadata.
        &[
            "worker",
            "--coordinator",
            &format!("http://{listen}"),
            "--device",
            "cpu",
            "--data-root",
            &root,
            "--days-above-rows",
            "0",
        ],
        &[],
    );
    wf_tests::wait_until("the coordinator advances the deployment", LIMIT, || {
        state(dir.path(), &live)["next_day"].as_u64() == Some(dates.len() as u64)
    });
    // Every retrain after the stop was trained by the worker, once.
    let trained: Vec<String> = state(dir.path(), &live)["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|v| v["retrain_day"].as_u64() >= Some(waiting))
        .map(|v| v["job_key"].as_str().expect("key")[..12].to_string())
        .collect();
    assert!(trained.len() >= 2, "too few retrains after the stop to show the loop: {trained:?}");
    let log = worker.stderr();
    for key in &trained {
        let done = log.lines().filter(|l| l.contains("job done") && l.contains(key.as_str())).count();
        assert_eq!(done, 1, "retrain {key} trained {done} times by the worker:\n{log}");
    }
    let served = wf_tests::wf(dir.path(), &["predict", &live, "--coordinator", &format!("http://{listen}"), "--json"]);
    assert!(served.succeeded(), "{}", served.stderr);
    let served: Value = serde_json::from_str(&served.stdout).expect("served prediction");
    assert_eq!(served["date"], dates[dates.len() - 1].to_string(), "the newest day is served");
    assert!(coordinator.stderr().contains("deployment advanced"), "{}", coordinator.stderr());
    assert!(panel_bytes() == std::fs::read(dir.path().join("whole.parquet")).expect("whole"), "ingested != whole");
    let (live_state, whole_state) = (state(dir.path(), &live), state(dir.path(), &whole));
    for field in ["decisions", "switches", "next_day", "live", "versions"] {
        assert_eq!(live_state[field], whole_state[field], "{field}");
    }
    assert_eq!(live_state["retrain_failures_total"], 0, "a retrain failed on the way:\n{}", coordinator.stderr());
}
