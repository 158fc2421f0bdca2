//! The deployment files against the binaries they run: every `WF_*` variable a
//! Kubernetes manifest sets is one the container's binary reads (as its `--help` shows),
//! the images build the binaries their entry points name, the kustomizations render (with
//! `kubectl`) into manifests that validate against the Kubernetes schemas, and the
//! Prometheus Operator's rules are the rule file.

use std::path::{Path, PathBuf};
use std::process::Command;

use wf_tests::{required_tool, wf_binary, wf_worker_binary};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("deploy/k8s is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `WF_*` names set by `name: WF_…` entries.
fn env_names(text: &str) -> Vec<String> {
    text.match_indices("name: WF_")
        .map(|(at, _)| {
            let name = &text[at + "name: ".len()..];
            name.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect()
        })
        .collect()
}

fn help(binary: &Path, args: &[&str]) -> String {
    let output = Command::new(binary).args(args).arg("--help").output().expect("binary runs");
    assert!(output.status.success(), "{} --help failed", binary.display());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn manifests_set_only_variables_their_binaries_read() {
    let coordinator = help(wf_binary(), &["coordinator"]);
    let worker = help(&wf_worker_binary(), &[]);
    let mut checked = 0;
    for file in yaml_files(&repo().join("deploy/k8s")) {
        let text = std::fs::read_to_string(&file).expect("manifest");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let reader = if name.contains("coordinator") {
            &coordinator
        } else if name.contains("worker") {
            &worker
        } else {
            continue;
        };
        for variable in env_names(&text) {
            // WF_LOG is the log filter, read by the logger rather than the argument parser.
            let read = variable == "WF_LOG" || reader.contains(&format!("[env: {variable}="));
            assert!(read, "{} sets {variable}, which its binary does not read", file.display());
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} variables found: did the manifests move?");
}

#[test]
fn images_build_the_binaries_their_entry_points_run() {
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let profile = cargo.split("[profile.image]").nth(1).expect("an image profile").split("\n[").next().unwrap_or("");
    assert!(profile.contains("inherits = \"release\"") && profile.contains("strip = \"symbols\""), "{profile}");
    for (dockerfile, binaries) in
        [("deploy/docker/Dockerfile", &["wf", "wf-worker"][..]), ("deploy/docker/Dockerfile.cuda", &["wf-worker"][..])]
    {
        let text = std::fs::read_to_string(repo().join(dockerfile)).expect("Dockerfile");
        for binary in binaries {
            assert!(text.contains(&format!("--bin {binary}")), "{dockerfile} does not build {binary}");
            assert!(text.contains(&format!("ENTRYPOINT [\"{binary}\"")), "{dockerfile} runs no {binary}");
            assert!(text.contains(&format!("target/image/{binary} ")), "{dockerfile} copies no stripped {binary}");
        }
        assert!(text.contains("cargo build --profile image "), "{dockerfile} does not build the stripped profile");
    }
}

/// `deploy/k8s/monitoring/prometheus-rule.yaml`: the rule file's groups as a
/// PrometheusRule's spec, line for line.
fn prometheus_rule(rules: &str) -> String {
    let groups = rules.find("\ngroups:").map(|at| &rules[at + 1..]).expect("the rule file's groups");
    let mut text = String::from(
        "# Generated from deploy/prometheus/walkforward-rules.yaml: edit that file, then run\n\
         #   WF_BLESS=1 cargo nextest run -p wf-tests prometheus_rule\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  \
           name: walkforward\n  \
           namespace: walkforward\n  \
           labels: {app.kubernetes.io/part-of: walkforward, prometheus: walkforward}\n\
         spec:\n",
    );
    for line in groups.lines() {
        if !line.is_empty() {
            text.push_str("  ");
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The Prometheus Operator's copy of the alert rules is the rule file promtool tests.
#[test]
fn the_prometheus_rule_is_the_rule_file() {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/walkforward-rules.yaml")).expect("rules");
    let path = repo().join("deploy/k8s/monitoring/prometheus-rule.yaml");
    let expected = prometheus_rule(&rules);
    if std::env::var_os("WF_BLESS").is_some() {
        std::fs::write(&path, &expected).expect("write the PrometheusRule");
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == expected,
        "{} differs from the rule file: run WF_BLESS=1 cargo nextest run -p wf-tests prometheus_rule",
        path.display()
    );
    assert!(written.matches("- alert: ").count() >= 15);
}

/// Renders a kustomization directory with `kubectl kustomize`.
fn render(kubectl: &Path, dir: &Path) -> String {
    let output = Command::new(kubectl).arg("kustomize").arg(dir).output().expect("kubectl runs");
    assert!(output.status.success(), "{}: {}", dir.display(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The rendered document of `kind` named `name`.
fn document<'a>(rendered: &'a str, kind: &str, name: &str) -> &'a str {
    rendered
        .split("\n---\n")
        .find(|doc| doc.contains(&format!("kind: {kind}\n")) && doc.contains(&format!("\n  name: {name}\n")))
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// What `kubectl kustomize` renders, for the CPU base, the GPU overlay and the base with
/// the monitoring component, validates against the Kubernetes 1.29 schemas offline (with
/// `kubernetes-validate`). The custom resources without a schema there are the KEDA
/// ScaledObject (its query is checked to read a metric the coordinator exports) and the
/// Prometheus Operator's PodMonitor and PrometheusRule (the latter is the rule file
/// promtool checks). The GPU overlay's worker asks for a GPU, runs on GPU nodes and keeps
/// its probes; the worker pool has a PodDisruptionBudget in every overlay.
#[test]
fn rendered_overlays_validate_against_the_kubernetes_schemas() {
    let keda = std::fs::read_to_string(repo().join("deploy/k8s/base/keda.yaml")).expect("keda.yaml");
    let telemetry = std::fs::read_to_string(repo().join("coordinator/src/telemetry.rs")).expect("telemetry");
    let query = keda.lines().find_map(|l| l.trim().strip_prefix("query: ")).expect("the ScaledObject's query");
    let metric = query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).find(|w| w.starts_with("wf_"));
    let metric = metric.expect("a wf_ metric in the query");
    assert!(telemetry.contains(&format!("`{metric}{{")), "KEDA reads {metric}, which the coordinator does not export");
    assert!(query.contains("process=\"coordinator\""), "KEDA must read the coordinator's gauge: {query}");

    let Some(kubectl) =
        required_tool("WF_KUBECTL", "kubectl", "kubectl with kustomize v5, from Kubernetes' apt repository")
    else {
        return;
    };
    let Some(validate) = required_tool(
        "WF_KUBERNETES_VALIDATE",
        "kubernetes-validate",
        "pip install kubernetes-validate, or run .ci/run",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let monitored = dir.path().join("monitored");
    std::fs::create_dir(&monitored).expect("overlay dir");
    // kustomize takes only relative paths: up to the root, then down to the repository.
    let up = "../".repeat(monitored.canonicalize().expect("overlay dir").components().count() - 1);
    let at = |dir: &str| {
        let path = repo().join(dir).canonicalize().expect("deploy/k8s");
        format!("{up}{}", path.display().to_string().trim_start_matches('/'))
    };
    std::fs::write(
        monitored.join("kustomization.yaml"),
        format!("resources: [{}]\ncomponents: [{}]\n", at("deploy/k8s/base"), at("deploy/k8s/monitoring")),
    )
    .expect("overlay");
    let overlays =
        [("base", repo().join("deploy/k8s/base")), ("gpu", repo().join("deploy/k8s/gpu")), ("monitored", monitored)];
    for (name, overlay) in overlays {
        let rendered = render(&kubectl, &overlay);
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).expect("rendered");
        let output = Command::new(&validate).args(["-k", "1.29"]).arg(&file).output().expect("kubernetes-validate");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && !text.contains("ERROR"), "{name}: {text}");
        for resource in [
            "deployment/coordinator",
            "deployment/worker",
            "statefulset/redis",
            "poddisruptionbudget/worker",
            "networkpolicy/default-deny-ingress",
            "networkpolicy/worker",
            "service/coordinator",
        ] {
            assert!(
                text.contains(&format!("passed for resource {resource} ")),
                "{name}: {resource} not validated:\n{text}"
            );
        }
        let mut unvalidated: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("WARN"))
            .filter_map(|l| l.split("for kind ").nth(1)?.split(' ').next())
            .collect();
        unvalidated.sort();
        let expected: &[&str] =
            if name == "monitored" { &["PodMonitor", "PrometheusRule", "ScaledObject"] } else { &["ScaledObject"] };
        assert_eq!(unvalidated, expected, "{name}: {text}");

        let worker = document(&rendered, "Deployment", "worker");
        for probe in ["livenessProbe:", "readinessProbe:"] {
            assert!(worker.contains(probe), "{name}: the worker has no {probe}");
        }
        let gpu = name == "gpu";
        for (what, means) in [
            ("nvidia.com/gpu: \"1\"", "a GPU request"),
            ("nvidia.com/gpu.present: \"true\"", "a GPU node selector"),
            ("key: nvidia.com/gpu", "a GPU toleration"),
            ("image: walkforward/worker-cuda:", "the CUDA image"),
            ("value: cuda:0", "the CUDA device"),
        ] {
            assert_eq!(worker.contains(what), gpu, "{name}: {means} belongs to the GPU overlay, and only there");
        }
        assert!(document(&rendered, "PodDisruptionBudget", "worker").contains("app.kubernetes.io/name: worker"));
        if name == "monitored" {
            let rule = document(&rendered, "PrometheusRule", "walkforward");
            assert!(rule.contains("namespace: walkforward") && rule.contains("alert: WalkforwardQueueNotDraining"));
            let monitor = document(&rendered, "PodMonitor", "walkforward");
            assert!(monitor.contains("port: metrics"), "{monitor}");
            // Every pod the monitor selects names the port it scrapes.
            for pod in ["coordinator", "worker"] {
                assert!(document(&rendered, "Deployment", pod).contains("name: metrics"), "{pod} has no metrics port");
            }
        }
    }
}

/// The checks `deploy/README.md` justifies leaving failed: its rows `| CKV_… | … |`.
fn justified_checks() -> std::collections::BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).expect("deploy/README.md");
    readme
        .lines()
        .filter_map(|line| line.strip_prefix("| CKV_"))
        .map(|rest| format!("CKV_{}", rest.split('|').next().unwrap_or_default().trim()))
        .collect()
}

#[test]
fn checkov_finds_nothing_in_the_manifests_that_deploy_readme_does_not_justify() {
    let Some(checkov) = required_tool("WF_CHECKOV", "checkov", "pip install checkov, or run .ci/run") else {
        return;
    };
    let output = Command::new(&checkov)
        .args(["-d", "deploy/k8s/base", "--framework", "kubernetes", "-o", "json", "--quiet", "--compact"])
        .arg("--skip-download")
        .current_dir(repo())
        .output()
        .expect("checkov runs");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("checkov printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    let reports = if report.is_array() { report.as_array().cloned().unwrap_or_default() } else { vec![report] };
    let mut failed = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut passed = 0;
    for report in &reports {
        passed += report["summary"]["passed"].as_u64().unwrap_or(0);
        for check in report["results"]["failed_checks"].as_array().into_iter().flatten() {
            let id = check["check_id"].as_str().unwrap_or_default().to_string();
            failed.entry(id).or_default().push(check["resource"].as_str().unwrap_or_default().to_string());
        }
    }
    println!("checkov: {passed} checks passed; failed: {failed:?}");
    assert!(passed > 100, "checkov checked almost nothing ({passed} passed): did the manifests move?");
    let justified = justified_checks();
    let unjustified: Vec<_> = failed.iter().filter(|(id, _)| !justified.contains(*id)).collect();
    assert!(unjustified.is_empty(), "fix these or justify them in deploy/README.md: {unjustified:?}");
    let stale: Vec<_> = justified.iter().filter(|id| !failed.contains_key(*id)).collect();
    assert!(stale.is_empty(), "deploy/README.md justifies checks that now pass; remove them: {stale:?}");
}
