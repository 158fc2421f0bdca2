//! The workspace's layering: the app crate (`wf`, in `app/`) is the only composition root.
//! No other crate depends on it, in any kind of dependency, and only it builds the `wf`
//! and `wf-worker` binaries. Read from `cargo metadata`, so the rule cannot silently
//! return with a new `Cargo.toml` line.

use std::process::Command;

use serde_json::{Value, json};

const APP: &str = "wf";

/// The workspace's own packages, as `cargo metadata --no-deps` lists them.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn packages(metadata: &Value) -> &[Value] {
    metadata["packages"].as_array().map_or(&[], Vec::as_slice)
}

/// Every package other than the app that depends on it: `name (kind)`.
fn dependents_of_the_app(metadata: &Value) -> Vec<String> {
    dependents_of(metadata, APP)
}

/// Every package other than `target` that depends on it: `name (kind)`.
fn dependents_of(metadata: &Value, target: &str) -> Vec<String> {
    let mut found = Vec::new();
    for package in packages(metadata) {
        let name = package["name"].as_str().unwrap_or("?");
        if name == target {
            continue;
        }
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            if dependency["name"] == target {
                let kind = dependency["kind"].as_str().unwrap_or("normal");
                found.push(format!("{name} ({kind})"));
            }
        }
    }
    found
}

/// Every package other than the app with a binary target: `name: binary`.
fn binaries_outside_the_app(metadata: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for package in packages(metadata) {
        let name = package["name"].as_str().unwrap_or("?");
        if name == APP {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            let binary = target["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
            if binary {
                found.push(format!("{name}: {}", target["name"].as_str().unwrap_or("?")));
            }
        }
    }
    found
}

#[test]
fn no_library_crate_depends_on_the_app_crate() {
    let metadata = metadata();
    let names: Vec<&str> = packages(&metadata).iter().filter_map(|p| p["name"].as_str()).collect();
    for expected in [APP, "wf-coordinator", "wf-live", "wf-report", "wf-worker", "wf-data", "wf-shared", "wf-proto"] {
        assert!(names.contains(&expected), "{expected} missing from the workspace's packages {names:?}");
    }
    let dependents = dependents_of_the_app(&metadata);
    assert!(dependents.is_empty(), "library crates depend on the app crate `{APP}`: {dependents:?}");
    let binaries = binaries_outside_the_app(&metadata);
    assert!(binaries.is_empty(), "binaries outside the app crate: {binaries:?}");
}

#[test]
fn the_check_finds_a_planted_dependency_and_binary() {
    // The same checks on a workspace where the coordinator depends on the app (as a
    // dev-dependency) and builds a binary of its own: both are found.
    let planted = json!({
        "packages": [
            { "name": APP, "dependencies": [{ "name": "wf-coordinator", "kind": null }],
              "targets": [{ "name": "wf", "kind": ["bin"] }] },
            { "name": "wf-coordinator", "dependencies": [{ "name": APP, "kind": "dev" }],
              "targets": [{ "name": "wf_coordinator", "kind": ["lib"] }, { "name": "wf", "kind": ["bin"] }] },
        ]
    });
    assert_eq!(dependents_of_the_app(&planted), vec!["wf-coordinator (dev)".to_string()]);
    assert_eq!(binaries_outside_the_app(&planted), vec!["wf-coordinator: wf".to_string()]);
}

/// `wf-live` reaches the coordinator only through its ports (`LiveFiles`, `Retrainer`),
/// and `wf-report` needs nothing of it: neither depends on the coordinator in any kind of
/// dependency, and neither does anything below them.
#[test]
fn the_live_and_report_crates_and_those_below_them_do_not_depend_on_the_coordinator() {
    let metadata = metadata();
    let dependents = dependents_of(&metadata, "wf-coordinator");
    for below in ["wf-live", "wf-report", "wf-worker", "wf-data", "wf-shared", "wf-proto"] {
        assert!(
            !dependents.iter().any(|d| d.starts_with(&format!("{below} "))),
            "{below} depends on wf-coordinator: {dependents:?}"
        );
    }
    // The check sees the coordinator's real dependents.
    assert!(dependents.iter().any(|d| d == "wf (normal)"), "the app's dependency unseen: {dependents:?}");
}
