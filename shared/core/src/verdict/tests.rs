use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::*;
use crate::age::Line;
use crate::bootstrap::Interval;
use crate::replay::ScheduleOutcome;

const DAYS: usize = 400;

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

fn outcome(name: &str, adaptive: bool, values: &[f64]) -> ScheduleOutcome {
    ScheduleOutcome {
        line: Line { window: 126, model: 0, seed: 0 },
        name: name.to_string(),
        adaptive,
        retrain_days: vec![0],
        train_seconds: 0.0,
        delta: Summary::of(values),
        delta_interval: None,
        rank_ic: Summary::of(values),
        difference_vs_best_fixed: None,
        on_frontier: false,
        covered_days: values.iter().filter(|v| v.is_finite()).count(),
        period_days: values.len(),
    }
}

/// Two fixed cadences and `policies` adaptive ones of independent noise around a common
/// day effect, `edge` added to policy `planted`.
fn comparison(seed: u64, policies: usize, planted: Option<(usize, f64)>) -> LineComparison {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let common: Vec<f64> = (0..DAYS).map(|_| 0.03 * normal(&mut rng)).collect();
    let mut series: Vec<Vec<f64>> =
        (0..2 + policies).map(|_| common.iter().map(|c| c + 0.05 * normal(&mut rng)).collect()).collect();
    if let Some((index, edge)) = planted {
        series[2 + index].iter_mut().for_each(|v| *v += edge);
    }
    let mut outcomes: Vec<ScheduleOutcome> =
        ["weekly", "monthly"].iter().zip(&series).map(|(name, s)| outcome(name, false, s)).collect();
    outcomes.extend((0..policies).map(|p| outcome(&format!("policy {p}"), true, &series[2 + p])));
    let best_fixed = if outcomes[0].delta.mean >= outcomes[1].delta.mean { 0 } else { 1 };
    LineComparison { outcomes, series, first_day: 10, best_fixed: Some(best_fixed) }
}

fn settings(selection: &SelectionConfig) -> VerdictSettings<'_> {
    VerdictSettings { selection, horizon: 1, samples: 500, seed: 7 }
}

#[test]
fn no_edge_reads_as_no_policy_beating_the_best_fixed_cadence() {
    let selection = SelectionConfig::default();
    let decisions: Vec<usize> = (10..10 + DAYS).step_by(5).collect();
    let verdict = line_verdict(&comparison(3, 20, None), &decisions, settings(&selection));
    assert_eq!((verdict.policies, verdict.selectors, verdict.tried()), (20, 2, 22));
    let superiority = verdict.superiority.as_ref().expect("tested");
    assert_eq!(superiority.candidates, 22);
    assert!(!verdict.beaten(), "{verdict:?}");
    let text = verdict.sentences().join("\n");
    println!("{text}");
    assert!(text.contains("no adaptive policy beats"), "{text}");
    assert!(text.contains("22 tried: 20 adaptive policies and 2 out-of-sample selectors (SPA p = "), "{text}");
    assert!(text.contains("hindsight best"), "{text}");
}

#[test]
fn a_planted_edge_is_named_and_the_selector_finds_it() {
    let selection = SelectionConfig { lookbacks: vec![63], among: Among::Adaptive };
    let decisions: Vec<usize> = (10..10 + DAYS).step_by(5).collect();
    let line = comparison(4, 20, Some((7, 0.04)));
    let verdict = line_verdict(&line, &decisions, settings(&selection));
    assert!(verdict.beaten(), "{verdict:?}");
    assert!(verdict.stepm.contains(&"policy 7".to_string()), "{:?}", verdict.stepm);
    assert_eq!(verdict.hindsight.as_ref().map(|h| h.name.as_str()), Some("policy 7"));
    // After its first matured lookback the selector follows the planted policy, so it
    // earns most of the edge.
    let chosen = &verdict.out_of_sample[0];
    let difference = chosen.difference_vs_best_fixed.as_ref().expect("difference");
    assert!(difference.mean > 0.02, "{chosen:?}");
    assert_eq!(difference.common_days, DAYS);
    let text = verdict.sentences().join("\n");
    println!("{text}");
    assert!(text.contains("beat weekly") || text.contains("beat monthly"), "{text}");
}

#[test]
fn a_selector_among_all_may_follow_a_fixed_cadence_and_decides_only_from_the_first_day() {
    let selection = SelectionConfig { lookbacks: vec![21], among: Among::All };
    let mut line = comparison(5, 3, None);
    // The monthly cadence is far better: a selector among all follows it.
    line.series[1].iter_mut().for_each(|v| *v += 0.2);
    line.outcomes[1] = outcome("monthly", false, &line.series[1]);
    line.best_fixed = Some(1);
    // Decision days before the line's first day are ignored.
    let decisions: Vec<usize> = (0..10 + DAYS).step_by(5).collect();
    let verdict = line_verdict(&line, &decisions, settings(&selection));
    let chosen = &verdict.out_of_sample[0];
    let difference = chosen.difference_vs_best_fixed.as_ref().expect("difference");
    // The first decision with 21 matured days (horizon 1) is at offset 25 (day 35): the
    // selector follows weekly, the pool's first, until then and monthly after.
    let before: f64 = (0..25).map(|t| line.series[0][t] - line.series[1][t]).sum();
    assert!((difference.mean - before / DAYS as f64).abs() < 1e-12, "{chosen:?}");
    assert_eq!(chosen.switches, 1, "{chosen:?}");
}

#[test]
fn the_bases_warning_fires_only_when_both_intervals_are_sure_of_opposite_signs() {
    let reading = |mean: f64, low: f64, high: f64| Reading { mean, interval: Some(Interval { low, high }) };
    let bases = |zero: Reading, median: Reading| Bases {
        schedule: "monthly".into(),
        zero,
        median,
        spread: reading(-0.004, -0.006, -0.002),
    };
    // The planted case: low volatility in a rising market reads as skill on the zero
    // basis and as anti-skill against the median.
    let planted = bases(reading(0.012, 0.004, 0.020), reading(-0.010, -0.018, -0.002));
    assert!(planted.disagree());
    let text = planted.sentences().join("\n");
    assert!(
        text.contains(
            "warning: the bases disagree on monthly: the zero basis reads skill and the median basis anti-skill"
        ),
        "{text}"
    );
    // Opposite means with an interval covering zero, or the same sure sign: no warning.
    assert!(!bases(reading(0.012, 0.004, 0.020), reading(-0.010, -0.018, 0.001)).disagree());
    assert!(!bases(reading(0.012, 0.004, 0.020), reading(0.010, 0.002, 0.018)).disagree());
    assert!(!bases(reading(0.012, 0.004, 0.020), Reading { mean: -0.01, interval: None }).disagree());
    assert!(
        !bases(reading(0.012, 0.004, 0.020), reading(0.010, 0.002, 0.018)).sentences().join(" ").contains("warning")
    );
}
