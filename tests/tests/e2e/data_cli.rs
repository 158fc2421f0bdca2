//! `wf data …` as a user runs it: real process, real files, exit codes and messages.

use std::path::Path;

use wf_shared::synth::{SynthSpec, generate};
use wf_tests::{Run, wf};

fn field<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find_map(|l| l.trim().strip_prefix(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in {text}"))
}

fn assert_one_line_error(run: &Run, expected: &str) {
    assert_eq!(run.code, Some(2), "stdout {} stderr {}", run.stdout, run.stderr);
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "error spans lines: {line:?}");
    assert!(line.starts_with("error: "), "{line:?}");
    assert!(line.contains(expected), "{line:?} does not contain {expected:?}");
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn version_is_printed() {
    let run = wf(Path::new("."), &["--version"]);
    assert!(run.succeeded());
    assert_eq!(run.stdout.trim(), format!("wf {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn synth_prepare_check_and_hash_form_one_pipeline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = wf(dir.path(), &["data", "synth", "--out", "market", "--stocks", "40", "--days", "450", "--seed", "5"]);
    assert!(run.succeeded(), "{}", run.stderr);
    assert!(run.stdout.contains("planted regime breaks: "));
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("market/truth.json")).expect("truth.json"))
            .expect("truth is JSON");
    assert_eq!(truth["breaks"].as_array().map(Vec::len), Some(2));
    assert_eq!(truth["spec"]["seed"], 5);

    let run = wf(dir.path(), &["data", "prepare", "--input", "market/ohlcv.parquet", "--out", "panel.parquet"]);
    assert!(run.succeeded(), "{}", run.stderr);
    let hash = field(&run.stdout, "content hash ").to_string();
    assert_eq!(hash.len(), 64);

    // 450 days: the 60-day features are null for their first 60 days (13.9% of rows),
    // which the default 10% gate rightly flags; this short panel allows 20%.
    let check = wf(dir.path(), &["data", "check", "panel.parquet"]);
    assert_eq!(check.code, Some(1), "{}", check.stdout);
    assert!(check.stdout.contains("FAIL  null share of ret_60"), "{}", check.stdout);
    let check = wf(dir.path(), &["data", "check", "panel.parquet", "--max-null-share", "0.2"]);
    assert!(check.succeeded(), "{}", check.stdout);
    assert!(check.stdout.contains("result  PASSED"));
    let check = wf(dir.path(), &["data", "check", "market/ohlcv.parquet", "--json"]);
    assert!(check.succeeded());
    let report: serde_json::Value = serde_json::from_str(&check.stdout).expect("JSON report");
    assert_eq!(report["stocks"], 40);
    assert_eq!(report["kind"], "ohlcv");

    let hashed = wf(dir.path(), &["data", "hash", "panel.parquet"]);
    assert_eq!(hashed.stdout.trim(), hash);

    // The same seed gives the same dataset identity.
    let run = wf(dir.path(), &["data", "synth", "--out", "again", "--stocks", "40", "--days", "450", "--seed", "5"]);
    assert!(run.succeeded());
    let run = wf(dir.path(), &["data", "prepare", "--input", "again/ohlcv.parquet", "--out", "again.parquet"]);
    assert_eq!(field(&run.stdout, "content hash "), hash);
}

#[test]
fn check_exits_1_naming_a_planted_68_percent_null_column_and_a_volume_shift() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bars = generate(&SynthSpec { stocks: 30, days: 420, ..SynthSpec::default() }).expect("valid spec").bars;
    let rows = bars.date.len();
    if let Some(turnover) = bars.turnover.as_mut() {
        turnover.iter_mut().take(rows * 68 / 100).for_each(|v| *v = f64::NAN);
    }
    let s12: Vec<usize> = (0..rows).filter(|r| bars.code[*r] == "S0012").collect();
    s12[200..].iter().for_each(|r| bars.volume[*r] *= 8.0);
    wf_data::ohlcv::write_ohlcv(&dir.path().join("planted.parquet"), &bars).expect("write");

    let run = wf(dir.path(), &["data", "check", "planted.parquet"]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("FAIL  null share of turnover"), "{}", run.stdout);
    assert!(run.stdout.contains("68.0% > max 10.0%"));
    let shift = format!("WARN  volume level shifts (x3 over 60 days)    1 (S0012 at {}", bars.date[s12[200]]);
    assert!(run.stdout.contains(&shift), "{shift:?} not in {}", run.stdout);

    let run = wf(dir.path(), &["data", "check", "planted.parquet", "--json"]);
    assert_eq!(run.code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    let failed: Vec<(&str, &str)> = report["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .filter(|g| g["passed"] == false)
        .filter_map(|g| Some((g["check"].as_str()?, g["severity"].as_str()?)))
        .collect();
    // The synthetic market lists stocks late but delists none: survivor-only, a warning.
    assert_eq!(
        failed,
        vec![
            ("null share of turnover", "error"),
            ("volume level shifts (x3 over 60 days)", "warning"),
            ("survivorship (stocks that exit)", "warning")
        ]
    );

    let run = wf(dir.path(), &["data", "check", "planted.parquet", "--max-null-share", "0.7"]);
    assert_eq!(run.code, Some(0), "a looser gate passes; the shift is a warning: {}", run.stdout);
    let run = wf(dir.path(), &["data", "check", "planted.parquet", "--max-null-share", "0.7", "--strict"]);
    assert_eq!(run.code, Some(1), "strict mode fails on the shift: {}", run.stdout);
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("missing.csv"), "date,code,open,high,low,volume\n2024-01-04,7203,1,1,1,5\n")
        .expect("write");
    std::fs::write(dir.path().join("empty.csv"), "").expect("write");
    let cases: [(&[&str], &str); 6] = [
        (&["data", "prepare", "--input", "missing.csv", "--out", "p.parquet"], "missing column close"),
        (&["data", "prepare", "--input", "empty.csv", "--out", "p.parquet"], "file is empty"),
        (&["data", "prepare", "--input", "absent.parquet", "--out", "p.parquet"], "cannot read absent.parquet"),
        (
            &["data", "prepare", "--input", "missing.csv", "--out", "p.parquet", "--horizons", "5,5"],
            "--horizons: 5 appears twice",
        ),
        (&["data", "check", "absent.csv"], "cannot read absent.csv"),
        (&["data", "synth", "--out", "m", "--stocks", "3"], "stocks: must be at least 20, got 3"),
    ];
    for (args, expected) in cases {
        assert_one_line_error(&wf(dir.path(), args), expected);
    }
    assert!(!dir.path().join("p.parquet").exists());
}
