//! The label guard on a real panel: what it costs, and how close the panel's features come
//! to its thresholds (the largest |Spearman ρ| of a feature with a target, on the guard's
//! own sample; the largest |mean same-day RankIC|, the look-ahead check).
//!
//! ```text
//! cargo run --release -p wf-data --example label_guard -- out/jp_panel.parquet
//! cargo run --release -p wf-data --example label_guard -- synth:null,stocks=1000,days=1650
//! ```

use std::time::Instant;

use wf_data::dataset::{DataRoots, open};
use wf_shared::label_guard::{LOOKAHEAD_RANK_IC, TRANSFORM_RHO, check_panel, rank_correlation, same_day_rank_ics};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::args().nth(1).unwrap_or_else(|| "out/jp_panel.parquet".into());
    // Loading runs the guard once; it is timed again alone below.
    let panel = open(&uri, &[1, 5, 10, 20], None, &DataRoots::Any)?.whole()?.panel;
    let started = Instant::now();
    let checked = check_panel(&panel);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{uri}: label guard on {} rows x {} features x {} targets: {seconds:.3} s ({})",
        panel.rows(),
        panel.features().len(),
        panel.horizons().len(),
        if checked.is_ok() { "passed" } else { "refused" }
    );
    let mut pairs = Vec::new();
    for (name, feature) in panel.feature_names().iter().zip(panel.features()) {
        for (horizon, target) in panel.horizons().iter().zip(panel.targets()) {
            if let Some((rho, rows)) = rank_correlation(feature, target) {
                pairs.push((rho.abs(), rho, name.clone(), *horizon, rows));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("largest |rho| of a feature with a target (refused at {TRANSFORM_RHO}):");
    for (_, rho, name, horizon, rows) in pairs.iter().take(3) {
        println!("  {name} with fwd_ret_{horizon}: {rho:+.4} on {rows} rows");
    }
    let started = Instant::now();
    let ics = same_day_rank_ics(&panel);
    println!(
        "largest |mean same-day RankIC| of a feature with a target (a look-ahead suspect at {LOOKAHEAD_RANK_IC}; {:.3} s):",
        started.elapsed().as_secs_f64()
    );
    for pair in ics.iter().take(3) {
        println!("  {} with {}: {:+.4} over {} days", pair.feature, pair.target, pair.rank_ic, pair.days);
    }
    Ok(())
}
