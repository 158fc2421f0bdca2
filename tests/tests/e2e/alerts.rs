//! The alert rules (`deploy/prometheus/walkforward-rules.yaml`): `promtool check rules`
//! accepts them and `promtool test rules` passes their unit tests (series that must fire
//! each rule with its labels and annotations, and series that must not); every rule has a
//! severity, a summary and a description naming a section of `docs/RUNBOOK.md` that exists,
//! is covered by the unit tests, and reads only metrics the processes export (or
//! redis_exporter's).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The rules' alerts, each with its block of text.
fn alerts(rules: &str) -> Vec<(String, String)> {
    let mut alerts: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            alerts.push((name.trim().to_string(), String::new()));
        } else if let Some((_, block)) = alerts.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    alerts
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_names_its_runbook_section_is_unit_tested_and_reads_exported_metrics() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/walkforward-rules.yaml")).expect("rules");
    let tests = std::fs::read_to_string(root().join("deploy/prometheus/tests.yaml")).expect("tests");
    let runbook = std::fs::read_to_string(root().join("docs/RUNBOOK.md")).expect("runbook");
    let telemetry = std::fs::read_to_string(root().join("coordinator/src/telemetry.rs")).expect("telemetry");
    let anchors: Vec<String> = runbook.lines().filter(|l| l.starts_with('#')).map(anchor).collect();
    let alerts = alerts(&rules);
    assert!(alerts.len() >= 15, "{} alerts", alerts.len());
    for (name, block) in &alerts {
        assert!(block.contains("severity: page") || block.contains("severity: ticket"), "{name}: severity");
        assert!(block.contains("summary:"), "{name}: summary");
        let section = block
            .split("docs/RUNBOOK.md#")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).next())
            .unwrap_or_else(|| panic!("{name}: its description names no runbook section"));
        assert!(anchors.iter().any(|a| a == section), "{name}: docs/RUNBOOK.md has no section #{section}");
        assert!(
            tests.contains(&format!("alertname: {name}\n")) || tests.contains(&format!("alertname: {name},")),
            "{name}: no unit test in tests.yaml"
        );
        let expr = block.lines().find_map(|l| l.trim().strip_prefix("expr: ")).expect("expr");
        for metric in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("wf_")) {
            let exported = metric.trim_end_matches("_bucket");
            assert!(telemetry.contains(&format!("\"{exported}\"")), "{name}: {metric} is not an exported metric");
        }
    }
}

/// Every metric the runbook and the live guide tell an operator to look at is one the
/// processes export, and every alert the live guide names is a rule.
#[test]
fn the_runbook_names_only_exported_metrics() {
    let telemetry = std::fs::read_to_string(root().join("coordinator/src/telemetry.rs")).expect("telemetry");
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/walkforward-rules.yaml")).expect("rules");
    for doc in ["docs/RUNBOOK.md", "docs/LIVE.md"] {
        let text = std::fs::read_to_string(root().join(doc)).expect("doc");
        let words: Vec<&str> = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
        let named: Vec<&&str> = words.iter().filter(|w| w.len() > 3 && w.starts_with("wf_")).collect();
        assert!(named.len() >= 5, "{doc}: {named:?}");
        for metric in named {
            let exported = metric.trim_end_matches("_bucket");
            assert!(telemetry.contains(&format!("\"{exported}\"")), "{doc} names {metric}, which is not exported");
        }
        for alert in words.iter().filter(|w| w.starts_with("Walkforward")) {
            assert!(rules.contains(&format!("alert: {alert}\n")), "{doc} names the alert {alert}, which is no rule");
        }
    }
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) =
        wf_tests::required_tool("WF_PROMTOOL", "promtool", "Debian package prometheus, or run .ci/run")
    else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    for args in [&["check", "rules", "walkforward-rules.yaml"][..], &["test", "rules", "tests.yaml"][..]] {
        let output = Command::new(&promtool).args(args).current_dir(&dir).output().expect("promtool runs");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "promtool {}:\n{text}", args.join(" "));
        assert!(text.contains("SUCCESS"), "promtool {}:\n{text}", args.join(" "));
    }
}
