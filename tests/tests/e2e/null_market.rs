//! The null market end to end: the quickstart-shaped sweep on `synth:null` (nothing is
//! predictable) must not read as skill. `wf_tests::null` runs it; the many-seed figures
//! come from `cargo run --release -p wf-tests --example null_calibration`.

use std::time::Duration;

use wf_tests::null::run_null;

const LIMIT: Duration = Duration::from_secs(900);

#[test]
fn on_the_null_market_the_verdict_finds_no_policy_beating_the_best_fixed_cadence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let readings = run_null(dir.path(), 1, &["median"], LIMIT);
    let reading = &readings[0];
    println!("{}", reading.verdict_text);
    assert_eq!(reading.lines, 1, "one trained line");
    assert_eq!(reading.beaten, 0, "{reading:?}");
    assert!(reading.verdict_text.contains("no adaptive policy beats"), "{}", reading.verdict_text);
    let (spa_p, tried) = reading.spa[0];
    assert!(spa_p >= 0.05 && tried > 50, "SPA over the quickstart grid's policies: {reading:?}");
    // The fixed cadences' ordinary intervals: none excludes zero on this seed (over 20
    // seeds the example prints the rate, at most 10% by the bar).
    assert_eq!(reading.fixed, 5);
    assert_eq!(reading.fixed_excluding_zero, 0, "{reading:?}");
}
