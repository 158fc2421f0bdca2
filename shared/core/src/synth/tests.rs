use super::*;
use crate::bars::Bars;
use crate::feature::{PanelSpec, build_panel};
use crate::linear::fit_ridge;
use crate::metric::day_metrics;
use crate::panel::Panel;
use crate::spec::TopK;

fn bit_equal(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn same_seed_gives_the_same_market_and_another_seed_does_not() {
    let spec = SynthSpec { stocks: 25, days: 420, ..SynthSpec::default() };
    let first = generate(&spec).expect("valid spec");
    let second = generate(&spec).expect("valid spec");
    assert!(bit_equal(&first.bars.close, &second.bars.close));
    assert!(bit_equal(&first.bars.volume, &second.bars.volume));
    assert_eq!(first.truth, second.truth);
    let other = generate(&SynthSpec { seed: spec.seed + 1, ..spec }).expect("valid spec");
    assert!(!bit_equal(&first.bars.close, &other.bars.close));
}

#[test]
fn truth_names_the_breaks_and_the_regimes_between_them() {
    let market = generate(&SynthSpec::default()).expect("valid spec");
    let truth = &market.truth;
    assert_eq!(truth.breaks.len(), BREAK_FRACTIONS.len());
    assert_eq!(truth.regimes.len(), truth.breaks.len() + 1);
    for (regime, next) in truth.regimes.iter().zip(&truth.regimes[1..]) {
        assert!(regime.last_date < next.first_date);
    }
    for (regime, break_date) in truth.regimes[1..].iter().zip(&truth.breaks) {
        assert_eq!(regime.first_date, *break_date);
    }
    assert_eq!(truth.regimes[0].premia["momentum"], REGIME_PREMIA[0][0]);
    let json = serde_json::to_string(truth).expect("truth serialises");
    assert!(json.contains("\"breaks\""));
}

#[test]
fn market_is_valid_and_has_late_listings_and_no_trade_days() {
    let market = generate(&SynthSpec::default()).expect("valid spec");
    let nulls = market.bars.close.iter().filter(|c| c.is_nan()).count();
    assert!(nulls > 0, "some no-trade days are planted");
    assert!(market.bars.date.len() < 200 * 1000, "some stocks list late");
    let bars = Bars::new(market.bars).expect("synthetic bars are valid");
    assert_eq!(bars.codes().len(), 200);
    assert_eq!(bars.calendar().len(), 1000);
}

#[test]
fn too_small_a_market_is_refused_naming_the_field() {
    let error = generate(&SynthSpec { stocks: 3, ..SynthSpec::default() }).expect_err("too few stocks");
    assert_eq!(error.to_string(), "stocks: must be at least 20, got 3");
}

/// Mean ΔP@K of a scorer over `days` at horizon `h`.
fn mean_delta(
    panel: &Panel,
    scorer: &crate::linear::LinearScorer,
    days: std::ops::Range<usize>,
    h: u32,
    k: usize,
) -> f64 {
    let target = panel.target(h).expect("horizon built");
    let deltas: Vec<f64> = days
        .filter_map(|day| {
            let rows = panel.rows_of_day(day);
            let scores: Vec<f64> = rows.clone().map(|row| scorer.score_row(panel, row)).collect();
            let targets: Vec<f64> = rows.map(|row| target[row]).collect();
            day_metrics(&scores, &targets, TopK::Count(k as u32)).map(|d| d.delta())
        })
        .collect();
    deltas.iter().sum::<f64>() / deltas.len() as f64
}

/// The planted truth is measurable: a linear fit trained before the first break ranks
/// well out of sample before it and loses ΔP@K after it.
#[test]
fn a_model_trained_before_a_break_loses_precision_after_it() {
    let seeds: Vec<u64> = std::env::var("WF_SYNTH_SEEDS")
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|_| vec![SynthSpec::default().seed]);
    for seed in seeds {
        model_trained_before_a_break_loses_precision_after_it(seed);
    }
}

fn model_trained_before_a_break_loses_precision_after_it(seed: u64) {
    let market = generate(&SynthSpec { seed, ..SynthSpec::default() }).expect("valid spec");
    let calendar = crate::calendar::TradingCalendar::from_dates(market.bars.date.clone());
    let first_break = calendar.index_of(market.truth.breaks[0]).expect("break is a trading day");
    let bars = Bars::new(market.bars).expect("valid bars");
    let panel = build_panel(&bars, &PanelSpec { horizons: vec![5] });
    let (h, window, k) = (5usize, 252usize, 20usize);
    // Retrain 120 days before the break; purge: the last training label is known before it.
    let retrain = first_break - 120;
    let train_days = retrain - h - window..retrain - h;
    let scorer = fit_ridge(&panel, train_days, 5, 1e-3).expect("enough training rows");
    let before = mean_delta(&panel, &scorer, retrain..first_break - h, 5, k);
    let after = mean_delta(&panel, &scorer, first_break..first_break + 120, 5, k);
    println!("seed {seed}: mean ΔP@K before the break {before:.4}, after {after:.4}");
    assert!(before > 0.05, "the planted signal is learnable: ΔP@K before the break is {before:.4}");
    assert!(after < before - 0.08, "the break costs precision: before {before:.4}, after {after:.4}");
}

#[test]
fn the_null_market_has_the_default_shapes_without_premia_breaks_or_betas() {
    let spec = SynthSpec { stocks: 200, days: 600, seed: 5, ..SynthSpec::default() };
    let default = generate(&spec).expect("valid spec");
    let null = generate(&SynthSpec { null: true, ..spec.clone() }).expect("valid spec");
    // The same calendar, listings and missing trades (the same draws, other returns).
    assert_eq!(null.bars.date, default.bars.date);
    assert_eq!(null.bars.code, default.bars.code);
    let missing = |bars: &BarsColumns| bars.close.iter().map(|c| c.is_nan()).collect::<Vec<_>>();
    assert_eq!(missing(&null.bars), missing(&default.bars));
    assert!(!bit_equal(&null.bars.close, &default.bars.close));
    let truth = &null.truth;
    assert!(truth.breaks.is_empty() && truth.regimes.len() == 1, "{truth:?}");
    assert!(truth.regimes[0].premia.values().all(|p| *p == 0.0));
    assert!(truth.description.as_deref().is_some_and(|d| d.starts_with("null market")));
    assert!(serde_json::to_string(truth).expect("json").contains("\"null\":true"));
    // The default market's truth is written as before: no `null`, no description.
    let json = serde_json::to_string(&default.truth).expect("json");
    assert!(!json.contains("\"null\"") && !json.contains("description"), "{json}");

    // Nothing is learnable: a linear fit's top 20 earn what its bottom 20 do out of
    // sample, where the default market's planted premia are learned (both before the
    // default market's first break, at day 300).
    let learned = |market: SynthMarket| {
        let bars = Bars::new(market.bars).expect("valid bars");
        let panel = build_panel(&bars, &PanelSpec { horizons: vec![5] });
        let target = panel.target(5).expect("horizon");
        let scorer = fit_ridge(&panel, 70..200, 5, 1e-3).expect("rows");
        let spreads: Vec<f64> = (210..295)
            .filter_map(|day| {
                let rows = panel.rows_of_day(day);
                let scores: Vec<f64> = rows.clone().map(|row| scorer.score_row(&panel, row)).collect();
                let targets: Vec<f64> = rows.map(|row| target[row]).collect();
                day_metrics(&scores, &targets, TopK::Count(20)).map(|d| d.spread)
            })
            .collect();
        spreads.iter().sum::<f64>() / spreads.len() as f64
    };
    let (null_spread, default_spread) = (learned(null), learned(default));
    println!("top-20 minus bottom-20 5-day return: null {null_spread:.5}, default {default_spread:.5}");
    assert!(null_spread.abs() < 0.004, "null market: {null_spread}");
    assert!(default_spread > 0.01, "default market: {default_spread}");
}
