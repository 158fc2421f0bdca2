//! Calibration on the null market: `cargo run --release -p wf-tests --example
//! null_calibration -- [SEEDS] [FIRST]` runs the quickstart-shaped null sweep
//! (`wf_tests::null`) on seeds FIRST..FIRST+SEEDS (default 20 from 1) with both bases and
//! prints, per basis, how often a fixed cadence's 95% ΔP@K interval excludes zero
//! (calibrated: about 5%; the target is at most 10%) and on how many seeds the verdict
//! finds no adaptive policy beating the best fixed cadence (the target: 9 of 10).

use std::time::Duration;

use wf_tests::null::run_null;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let seeds = args.first().copied().unwrap_or(20);
    let first = args.get(1).copied().unwrap_or(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let bases = ["median", "zero"];
    let mut totals = vec![(0usize, 0usize, 0usize, 0usize); bases.len()];
    for seed in first..first + seeds {
        let readings = run_null(dir.path(), seed, &bases, Duration::from_secs(3600));
        for (index, reading) in readings.iter().enumerate() {
            let total = &mut totals[index];
            total.0 += reading.fixed;
            total.1 += reading.fixed_excluding_zero;
            total.2 += reading.lines;
            total.3 += reading.lines - reading.beaten;
            let spa: Vec<String> =
                reading.spa.iter().map(|(p, tried)| format!("SPA p {p:.3} over {tried} tried")).collect();
            println!(
                "seed {seed:>3} {:<6}: fixed-cadence intervals excluding 0: {} of {}; verdict: {} of {} lines not beaten ({})",
                reading.basis,
                reading.fixed_excluding_zero,
                reading.fixed,
                reading.lines - reading.beaten,
                reading.lines,
                spa.join(", ")
            );
        }
    }
    for (basis, (fixed, excluding, lines, not_beaten)) in bases.iter().zip(totals) {
        println!(
            "{basis:<6} basis, {seeds} seeds: fixed-cadence intervals excluding 0 in {excluding} of {fixed} ({:.1}%); \
             no adaptive policy beats the best fixed cadence on {not_beaten} of {lines} lines",
            100.0 * excluding as f64 / fixed.max(1) as f64
        );
    }
}
