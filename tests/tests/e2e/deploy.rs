//! The deployment files against the binaries they run: every `WF_*` variable a
//! Kubernetes manifest sets is one the container's binary reads (as its `--help` shows),
//! the images build the binaries their entry points name, and the kustomizations render
//! (with `kubectl`, where installed).

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
    for (dockerfile, binaries) in
        [("deploy/docker/Dockerfile", &["wf", "wf-worker"][..]), ("deploy/docker/Dockerfile.cuda", &["wf-worker"][..])]
    {
        let text = std::fs::read_to_string(repo().join(dockerfile)).expect("Dockerfile");
        for binary in binaries {
            assert!(text.contains(&format!("--bin {binary}")), "{dockerfile} does not build {binary}");
            assert!(text.contains(&format!("ENTRYPOINT [\"{binary}\"")), "{dockerfile} runs no {binary}");
        }
    }
}

#[test]
fn kustomizations_render() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        println!("skipped: kubectl is not installed, so the kustomizations were not rendered");
        return;
    }
    for overlay in ["deploy/k8s/base", "deploy/k8s/gpu"] {
        let output = Command::new("kubectl").arg("kustomize").arg(repo().join(overlay)).output().expect("kubectl");
        let rendered = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{overlay}: {}", String::from_utf8_lossy(&output.stderr));
        for kind in [
            "kind: Deployment",
            "kind: StatefulSet",
            "kind: ScaledObject",
            "kind: Service",
            "kind: NetworkPolicy",
            "kind: PodDisruptionBudget",
        ] {
            assert!(rendered.contains(kind), "{overlay} renders no {kind}");
        }
        let gpu = rendered.contains("nvidia.com/gpu");
        assert_eq!(gpu, overlay.ends_with("gpu"), "{overlay}: GPU resources where they do not belong, or missing");
    }
}

/// Every base manifest validates against the Kubernetes 1.29 schemas (offline, with the
/// `kubernetes-validate` package); KEDA's ScaledObject has no schema there, so its query
/// is checked to read a metric the coordinator exports. The GPU overlay's file is a
/// partial patch: it validates only once kustomize renders it (`kustomizations_render`).
#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let keda = std::fs::read_to_string(repo().join("deploy/k8s/base/keda.yaml")).expect("keda.yaml");
    let telemetry = std::fs::read_to_string(repo().join("coordinator/src/telemetry.rs")).expect("telemetry");
    let query = keda.lines().find_map(|l| l.trim().strip_prefix("query: ")).expect("the ScaledObject's query");
    let metric = query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).find(|w| w.starts_with("wf_"));
    let metric = metric.expect("a wf_ metric in the query");
    assert!(telemetry.contains(&format!("`{metric}{{")), "KEDA reads {metric}, which the coordinator does not export");
    assert!(query.contains("process=\"coordinator\""), "KEDA must read the coordinator's gauge: {query}");

    let Some(validate) = required_tool(
        "WF_KUBERNETES_VALIDATE",
        "kubernetes-validate",
        "pip install kubernetes-validate, or run .ci/run",
    ) else {
        return;
    };
    let files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/k8s/base"))
        .expect("base")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("kustomization.yaml"))
        .collect();
    let output = Command::new(&validate).args(["-k", "1.29"]).args(&files).output().expect("kubernetes-validate runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && !text.contains("ERROR"), "{text}");
    for resource in [
        "deployment/coordinator",
        "deployment/worker",
        "statefulset/redis",
        "poddisruptionbudget/worker",
        "networkpolicy/default-deny-ingress",
        "service/coordinator",
    ] {
        assert!(text.contains(&format!("passed for resource {resource} ")), "{resource} was not validated:\n{text}");
    }
    let unvalidated: Vec<&str> = text.lines().filter(|l| l.starts_with("WARN")).collect();
    assert!(unvalidated.iter().all(|l| l.contains("ScaledObject")), "{unvalidated:?}");
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
