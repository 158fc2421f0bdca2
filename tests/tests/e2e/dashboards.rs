//! The Grafana dashboards (`deploy/grafana/*.json`) against a real Prometheus (Debian's
//! `prometheus`, started here) that scraped a real coordinator and worker through a short
//! sweep with a dead-lettered job, and a coordinator serving a live deployment's metrics
//! and predictions: every panel's query parses and returns data, with a finite value.
//! The same Prometheus loads the alert rules (every rule evaluates without error, and a
//! failed live retrain fires its alert) and answers KEDA's scaling query.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use wf_coordinator::testing::RedisServer;
use wf_tests::{Process, free_port, http_get, wait_until, wf_in, wf_in_env};

use crate::cluster::{Cluster, LIMIT, spec};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Prometheus server scraping `targets` every second, with the alert rules loaded.
struct Prometheus {
    address: String,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = root().join("deploy/prometheus/walkforward-rules.yaml").canonicalize().expect("rules");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: walkforward\n    static_configs: [{{targets: [{}]}}]\n",
            rules.display(),
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let address = format!("127.0.0.1:{}", free_port());
        let process = Process::start_program(
            binary,
            dir.path(),
            &[
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=data",
                &format!("--web.listen-address={address}"),
                "--log.level=warn",
            ],
            &[],
        );
        wait_until("Prometheus is ready", LIMIT, || http_get(&address, "/-/ready").is_ok_and(|(code, _)| code == 200));
        Self { address, _process: process, _dir: dir }
    }

    /// An instant query's `data` (panics on an error response, such as a parse error).
    fn query(&self, expr: &str) -> Value {
        let (code, body) = http_get(&self.address, &format!("/api/v1/query?query={}", encode(expr))).expect("query");
        let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"));
        assert!(code == 200 && answer["status"] == "success", "{expr}: {body}");
        answer["data"].clone()
    }

    /// The finite values of an instant vector (or scalar) query.
    fn values(&self, expr: &str) -> Vec<f64> {
        let data = self.query(expr);
        let samples: Vec<&Value> = match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().expect("result").iter().map(|s| &s["value"][1]).collect(),
            Some("scalar") => vec![&data["result"][1]],
            other => panic!("{expr}: a {other:?} result"),
        };
        samples.iter().filter_map(|v| v.as_str()?.parse::<f64>().ok()).filter(|v| v.is_finite()).collect()
    }

    fn total(&self, expr: &str) -> f64 {
        self.values(expr).iter().sum()
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A dashboard's panels (rows' nested panels included), each with its targets' `expr`.
fn panels(dashboard: &Value) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("every panel has a title").to_string();
        let exprs: Vec<String> = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"))
            .iter()
            .map(|t| t["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr")).to_string())
            .collect();
        assert!(!exprs.is_empty(), "{title}: no query");
        out.push((title, exprs));
    }
    out
}

/// The dashboards, with what is checked of their form: unique ids, every panel on the
/// `datasource` variable, every `$variable` of a query defined (or Grafana's own).
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for name in ["cluster", "results"] {
        let path = root().join(format!("deploy/grafana/{name}.json"));
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(dashboard["uid"], format!("walkforward-{name}"));
        let variables: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .map(|v| v["name"].as_str().expect("a variable's name"))
            .collect();
        assert!(variables.contains(&"datasource"), "{name}: no datasource variable");
        let mut ids = std::collections::BTreeSet::new();
        let mut stack: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
        while let Some(panel) = stack.pop() {
            stack.extend(panel["panels"].as_array().into_iter().flatten());
            assert!(ids.insert(panel["id"].as_u64().expect("a panel id")), "{name}: panel id {} twice", panel["id"]);
            if panel["type"] != "row" {
                assert_eq!(panel["datasource"]["uid"], "${datasource}", "{name}: {}", panel["title"]);
            }
        }
        for (title, exprs) in panels(&dashboard) {
            for expr in exprs {
                for variable in expr.split('$').skip(1) {
                    let variable: String =
                        variable.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    assert!(
                        variable == "__rate_interval" || variables.contains(&variable.as_str()),
                        "{name}: {title}: ${variable} is not defined"
                    );
                }
            }
        }
        out.push((name.to_string(), dashboard));
    }
    out
}

/// A query as Grafana sends it, for the test's short history: rate windows of a minute
/// (4 scrape intervals of a production Prometheus), the trailing window an hour, every
/// tenant and deployment.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$window", "1h")
        .replace("$tenant", ".*")
        .replace("$deployment", ".*")
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let dashboards = dashboards();
    let telemetry = std::fs::read_to_string(root().join("coordinator/src/telemetry.rs")).expect("telemetry");
    for (name, dashboard) in &dashboards {
        for (title, exprs) in panels(dashboard) {
            for expr in exprs {
                for metric in
                    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("wf_"))
                {
                    let exported = ["_bucket", "_sum", "_count"].iter().fold(metric, |m, s| m.trim_end_matches(s));
                    assert!(
                        telemetry.contains(&format!("\"{exported}\"")),
                        "{name}: {title}: {metric} is not exported"
                    );
                }
            }
        }
    }
    let Some(binary) =
        wf_tests::required_tool("WF_PROMETHEUS", "prometheus", "Debian package prometheus, or run .ci/run")
    else {
        return;
    };

    // A live deployment for the results dashboard, advanced into its spec, then stuck on a
    // retrain that fails (every job key starts with the empty prefix).
    let live = tempfile::tempdir().expect("tempdir");
    std::fs::write(live.path().join("spec.toml"), crate::live_cli::SPEC).expect("spec");
    let live_args: [&[&str]; 2] = [
        &["live", "deploy", "spec.toml", "--model", "linear", "--window", "126", "--policy", "monthly", "--id", "d"],
        &["live", "advance", "d", "--to", "2022-04-30"],
    ];
    for args in live_args {
        let run = wf_in(live.path(), &[args, &["--artifacts", "live"]].concat(), LIMIT);
        assert!(run.succeeded(), "{args:?}: {}", run.stderr);
    }
    let failed =
        wf_in_env(live.path(), &["live", "advance", "d", "--artifacts", "live"], &[("WF_FAULT_FAIL_JOBS", "")], LIMIT);
    assert!(!failed.succeeded() && failed.stderr.contains("injected failure"), "{}", failed.stderr);
    let status = wf_in(live.path(), &["live", "status", "d", "--artifacts", "live"], LIMIT);
    assert!(status.stdout.contains("retrain failures: 1 (FAILING"), "{}", status.stdout);
    let live_store = live.path().join("live");

    let cluster = Cluster::start_on(
        RedisServer::start().expect("redis-server"),
        3_000,
        &["--live-artifacts", live_store.to_str().expect("path")],
    );
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let prometheus = Prometheus::start(&binary, &[cluster.metrics_address(), worker_metrics.clone()]);

    // Scraped from before the sweep starts, and the sweep long enough (about 20 jobs) for
    // its rates and histograms to move over several scrapes.
    let scraped = format!("up{{instance=\"{}\"}}", cluster.metrics_address());
    wait_until("the coordinator is scraped", LIMIT, || prometheus.total(&scraped) == 1.0);
    // A sweep whose third job fails every attempt: failures, retries, a dead letter.
    let id = cluster.submit(&spec("\"weekly\"", 20));
    let manifest = cluster.manifest(&id);
    let doomed = manifest["jobs"][2]["key"].as_str().expect("job key").to_string();
    let jobs = manifest["jobs"].as_array().expect("jobs").len() as f64;
    let _worker = cluster.failing_worker(&worker_metrics, &doomed);
    wait_until("every job ends", LIMIT, || cluster.finished(&id));
    // Two predictions a few scrapes apart, so that their rate is seen.
    for _ in 0..2 {
        let run = cluster.wf(&["predict", "d", "--k", "5"]);
        assert!(run.succeeded(), "{}", run.stderr);
        std::thread::sleep(Duration::from_secs(3));
    }
    wait_until("Prometheus has scraped the sweep's end and the live metrics", LIMIT, || {
        prometheus.total("sum(wf_results_committed_total)") == jobs - 1.0
            && prometheus.total("sum(wf_dead_letters_total)") == 1.0
            && prometheus.total("sum(wf_predictions_total)") == 2.0
            && prometheus.total(r#"sum(wf_worker_jobs_total{outcome="completed"})"#) == jobs - 1.0
            && !prometheus.values("wf_live_versions").is_empty()
    });

    let mut queried = 0;
    for (name, dashboard) in &dashboards {
        for (title, exprs) in panels(dashboard) {
            for expr in exprs {
                let sent = as_sent(&expr);
                let values = prometheus.values(&sent);
                assert!(
                    !values.is_empty(),
                    "{name}: {title}: no finite value from\n{sent}\n{}",
                    prometheus.query(&sent)
                );
                queried += 1;
            }
        }
    }
    println!("{queried} dashboard queries answered");
    assert!(queried >= 40, "{queried} queries");

    // What the dashboards show is what happened.
    assert_eq!(
        prometheus.total(&as_sent(r#"sum(increase(wf_dead_letters_total{process="coordinator"}[1h]))"#)).round(),
        1.0
    );
    let tenants = prometheus.query(r#"sum by (tenant) (wf_sweeps_submitted_total)"#);
    assert_eq!(tenants["result"].as_array().map(Vec::len), Some(1), "{tenants}");
    let kinds = prometheus.query("sum by (kind) (wf_job_delta_p_at_k_count)");
    assert_eq!(kinds["result"][0]["metric"]["kind"], "mlp", "{kinds}");
    assert_eq!(kinds["result"][0]["value"][1], (jobs - 1.0).to_string(), "{kinds}");
    assert_eq!(prometheus.total("count(wf_worker_jobs_running)"), 1.0);

    // KEDA's scaling query reads the coordinator's gauge.
    let keda = std::fs::read_to_string(root().join("deploy/k8s/base/keda.yaml")).expect("keda.yaml");
    let query = keda.lines().find_map(|l| l.trim().strip_prefix("query: ")).expect("the ScaledObject's query");
    assert!(!prometheus.values(query.trim_matches(|c| c == '\'' || c == '"')).is_empty(), "KEDA's {query}");

    // The failed retrain fires its alert, and only that live alert is firing.
    wait_until("the failed retrain's alert fires", LIMIT, || {
        let (_, body) = http_get(&prometheus.address, "/api/v1/alerts").expect("alerts");
        let alerts: Value = serde_json::from_str(&body).expect("alerts JSON");
        alerts["data"]["alerts"].as_array().into_iter().flatten().any(|a| {
            a["labels"]["alertname"] == "WalkforwardRetrainFailing"
                && a["labels"]["deployment"] == "d"
                && a["state"] == "firing"
        })
    });
    assert_eq!(prometheus.total("sum(wf_live_retrain_failures_total)"), 1.0);

    // Every alert rule evaluates against these series without an error.
    wait_until("every rule is evaluated", LIMIT, || {
        let (_, body) = http_get(&prometheus.address, "/api/v1/rules").expect("rules");
        let rules: Value = serde_json::from_str(&body).expect("rules JSON");
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        for rule in &all {
            assert_ne!(rule["health"], "err", "{rule}");
        }
        all.len() >= 15 && all.iter().all(|r| r["health"] == "ok")
    });
}
