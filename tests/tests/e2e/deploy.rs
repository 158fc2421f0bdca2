//! The deployment files against the binaries they run: every `WF_*` variable a
//! Kubernetes manifest sets is one the container's binary reads (as its `--help` shows),
//! the images build the binaries their entry points name, and the kustomizations render
//! (with `kubectl`, where installed).

use std::path::{Path, PathBuf};
use std::process::Command;

use wf_tests::{wf_binary, wf_worker_binary};

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
        for kind in ["kind: Deployment", "kind: StatefulSet", "kind: ScaledObject", "kind: Service"] {
            assert!(rendered.contains(kind), "{overlay} renders no {kind}");
        }
        let gpu = rendered.contains("nvidia.com/gpu");
        assert_eq!(gpu, overlay.ends_with("gpu"), "{overlay}: GPU resources where they do not belong, or missing");
    }
}
