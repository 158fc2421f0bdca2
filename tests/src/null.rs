//! The null market as a calibration target: a quickstart-shaped sweep (one window,
//! `linear`, the quickstart's trigger grid) on `synth:null`, where nothing can be
//! predicted, run by the real `wf`. Its report should find no skill: the fixed cadences'
//! ΔP@K intervals should exclude zero about as often as their level says (5%), and the
//! verdict should say no adaptive policy beats the best fixed cadence.
//!
//! Used by the e2e test (one seed) and by `cargo run --release -p wf-tests --example
//! null_calibration -- SEEDS` (the many-seed figures).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::wf_in;

/// The quickstart's sweep on the null market of `seed`, with `basis`.
pub fn null_spec(seed: u64, basis: &str) -> String {
    format!(
        r#"name = "null-{seed}"
[dataset]
panel = "synth:null,seed={seed}"
[evaluation]
start = 2022-01-03
end = 2024-10-31
[plan]
train_windows = [126]
cadences = ["weekly", "monthly", "quarterly", "21d", "63d"]
horizons = [1, 5]
primary_horizon = 5
embargo = 0
max_age = 126
[metrics]
k = 20
bootstrap_samples = 1000
bootstrap_seed = 7
basis = "{basis}"
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = {{ epochs = 20 }}
[triggers.performance]
metric = "delta_p_at_k"
tau = [0.0, 0.02, 0.04]
lookback = [10, 21]
[triggers.drift]
theta = [0.1, 0.25]
share = [0.3]
days = [5]
[triggers.age]
max_age = [63, 105]
"#
    )
}

/// What one basis's report of a null sweep said.
#[derive(Debug, Clone, PartialEq)]
pub struct NullReading {
    pub basis: String,
    /// Fixed cadences with an interval, and those whose interval excludes zero.
    pub fixed: usize,
    pub fixed_excluding_zero: usize,
    /// Lines with a verdict, and those it calls beaten (some policy beats the best fixed
    /// cadence after correction).
    pub lines: usize,
    pub beaten: usize,
    /// Per line: SPA p, policies tried.
    pub spa: Vec<(f64, u64)>,
    /// The verdict as `wf run` printed it.
    pub verdict_text: String,
}

/// Runs the null sweep of `seed` in `dir` on each basis (the second run reuses the
/// first's trainings) and reads the reports.
pub fn run_null(dir: &Path, seed: u64, bases: &[&str], timeout: Duration) -> Vec<NullReading> {
    bases
        .iter()
        .map(|basis| {
            let spec = format!("null-{seed}-{basis}.toml");
            std::fs::write(dir.join(&spec), null_spec(seed, basis)).expect("spec");
            let run = wf_in(dir, &["run", &spec, "--out", "out"], timeout);
            assert!(run.succeeded(), "wf run failed on seed {seed}: {}", run.stderr);
            let html = run
                .stderr
                .lines()
                .find_map(|l| l.strip_prefix("report: "))
                .map(|p| Path::new(p.trim()).to_path_buf())
                .expect("wf run prints the report's path");
            let report_path = html.with_file_name("report.json");
            let report: Value =
                serde_json::from_slice(&std::fs::read(&report_path).expect("report.json")).expect("report JSON");
            reading(basis, &report, &run.stdout)
        })
        .collect()
}

fn reading(basis: &str, report: &Value, stdout: &str) -> NullReading {
    let lines = report["lines"].as_array().cloned().unwrap_or_default();
    let (mut fixed, mut excluding) = (0, 0);
    let (mut verdicts, mut beaten, mut spa) = (0, 0, Vec::new());
    for line in &lines {
        for schedule in line["schedules"].as_array().into_iter().flatten() {
            if schedule["adaptive"].as_bool() == Some(false)
                && let (Some(low), Some(high)) =
                    (schedule["delta_interval"]["low"].as_f64(), schedule["delta_interval"]["high"].as_f64())
            {
                fixed += 1;
                excluding += usize::from(low > 0.0 || high < 0.0);
            }
        }
        let verdict = &line["verdict"];
        if verdict.is_object() {
            verdicts += 1;
            let spa_p = verdict["superiority"]["spa_p"].as_f64().unwrap_or(f64::NAN);
            let stepm = verdict["stepm"].as_array().map_or(0, Vec::len);
            beaten += usize::from(spa_p < 0.05 && stepm > 0);
            let tried = verdict["policies"].as_u64().unwrap_or(0) + verdict["selectors"].as_u64().unwrap_or(0);
            spa.push((spa_p, tried));
        }
    }
    NullReading {
        basis: basis.to_string(),
        fixed,
        fixed_excluding_zero: excluding,
        lines: verdicts,
        beaten,
        spa,
        verdict_text: stdout.lines().take_while(|l| !l.starts_with("out-of-sample")).collect::<Vec<_>>().join("\n"),
    }
}
