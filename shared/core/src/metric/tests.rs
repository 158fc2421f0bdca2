use super::*;

fn count(k: u32) -> TopK {
    TopK::Count(k)
}

#[test]
fn hand_computed_day() {
    // Scores rank stocks 3, 0, 2, 1; returns 0.02, 0.01, -0.03, -0.01.
    let scores = [0.9, 0.1, 0.5, 1.2];
    let targets = [0.02, 0.01, -0.03, -0.01];
    let day = day_metrics(&scores, &targets, count(2)).expect("scored day");
    assert_eq!(day.p_at_k, 0.5);
    assert_eq!(day.base_rate, 0.5);
    assert_eq!(day.delta(), 0.0);
    // Top 2 (stocks 3, 0): mean 0.005; bottom 2 (stocks 2, 1): mean -0.01.
    assert!((day.top_k_mean - 0.005).abs() < 1e-15);
    assert!((day.spread - 0.015).abs() < 1e-15);
    // Score ranks 3,1,2,4; return ranks 4,3,1,2: Spearman = 1 - 6*sum(d^2)/(n(n^2-1)).
    let d2 = [1.0f64, 4.0, 1.0, 4.0].iter().sum::<f64>();
    let expected = 1.0 - 6.0 * d2 / (4.0 * 15.0);
    assert!((day.rank_ic.expect("defined") - expected).abs() < 1e-12);
    let top1 = day_metrics(&scores, &targets, count(1)).expect("scored day");
    assert_eq!(top1.p_at_k, 0.0);
}

#[test]
fn nulls_are_not_scored_and_k_is_capped_on_small_days() {
    let scores = [f64::NAN, 0.3, 0.2];
    let targets = [0.1, f64::NAN, 0.05];
    let day = day_metrics(&scores, &targets, count(5)).expect("one stock scored");
    assert_eq!((day.stocks, day.k, day.p_at_k, day.base_rate), (1, 1, 1.0, 1.0));
    assert_eq!(day.rank_ic, None, "one stock has no correlation");
    assert_eq!(day_metrics(&[f64::NAN], &[0.1], count(1)), None);
}

#[test]
fn k_as_a_fraction_of_the_day() {
    let scores: Vec<f64> = (0..50).map(f64::from).collect();
    let targets: Vec<f64> = (0..50).map(|i| if i >= 45 { 0.01 } else { -0.01 }).collect();
    let day = day_metrics(&scores, &targets, TopK::Fraction(0.1)).expect("scored day");
    assert_eq!(day.k, 5);
    assert_eq!(day.p_at_k, 1.0);
    assert_eq!(day.base_rate, 0.1);
}

#[test]
fn tied_stocks_at_the_cut_count_fractionally_and_share_ranks() {
    let day = day_metrics(&[1.0, 1.0, 1.0], &[-0.1, 0.2, 0.3], count(1)).expect("scored day");
    assert!((day.p_at_k - 2.0 / 3.0).abs() < 1e-15, "each of the 3 tied stocks counts 1/3: {}", day.p_at_k);
    assert!((day.top_k_mean - 0.4 / 3.0).abs() < 1e-15);
    assert!(day.spread.abs() < 1e-15, "top and bottom are the same tied group");
    // Stock 0 is above the cut; stocks 1-3 tie for the last two places of the top 3.
    let day = day_metrics(&[5.0, 2.0, 2.0, 2.0, 1.0], &[0.1, 0.3, -0.3, 0.6, -0.1], count(3)).expect("day");
    assert!((day.p_at_k - (1.0 + 2.0 * 2.0 / 3.0) / 3.0).abs() < 1e-15, "{}", day.p_at_k);
    assert!((day.top_k_mean - (0.1 + 0.6 * 2.0 / 3.0) / 3.0).abs() < 1e-15);
    // Bottom 3: stock 4 below the cut, the tied three for the other two places.
    assert!((day.spread - (day.top_k_mean - (-0.1 + 0.6 * 2.0 / 3.0) / 3.0)).abs() < 1e-15);
    assert_eq!(average_ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    let tied = spearman(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).expect("defined");
    assert!((tied - 0.9486832980505138).abs() < 1e-12, "{tied}");
}

#[test]
fn constant_predictions_give_a_missing_rank_ic_not_zero_or_nan() {
    let day = day_metrics(&[0.5; 4], &[0.1, -0.2, 0.3, 0.0], count(2)).expect("scored day");
    assert_eq!(day.rank_ic, None);
    let constant_returns = day_metrics(&[1.0, 2.0, 3.0], &[0.01; 3], count(1)).expect("scored day");
    assert_eq!(constant_returns.rank_ic, None);
}

#[test]
fn summary_skips_missing_values() {
    let summary = Summary::of(&[0.1, f64::NAN, -0.1, 0.3]);
    assert_eq!(summary.n, 3);
    assert!((summary.mean - 0.1).abs() < 1e-12);
    assert!((summary.std - 0.2).abs() < 1e-12);
    assert!((summary.t_stat - 0.1 / (0.2 / 3f64.sqrt())).abs() < 1e-9);
    assert!((summary.hit_rate - 2.0 / 3.0).abs() < 1e-12);
    assert!((summary.ratio() - 0.5).abs() < 1e-12);
    assert_eq!(Summary::of(&[]).n, 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Renaming stock codes reorders a day's rows: no metric may change with the order,
    /// ties included (scores drawn from a few values, so most days have ties at the cut).
    #[test]
    fn a_days_metrics_do_not_depend_on_the_order_of_its_stocks(
        rows in proptest::collection::vec((0u8..6, -50i32..50), 1..40),
        k in 1u32..20,
        rotation in 0usize..40,
        swaps in proptest::collection::vec((0usize..40, 0usize..40), 0..20),
    ) {
        let scores: Vec<f64> = rows.iter().map(|(s, _)| f64::from(*s) * 0.5).collect();
        let targets: Vec<f64> = rows.iter().map(|(_, t)| f64::from(*t) * 1e-3).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.rotate_left(rotation % rows.len());
        for (a, b) in swaps {
            order.swap(a % rows.len(), b % rows.len());
        }
        let permuted = |values: &[f64]| order.iter().map(|i| values[*i]).collect::<Vec<f64>>();
        let a = day_metrics(&scores, &targets, count(k)).expect("scored day");
        let b = day_metrics(&permuted(&scores), &permuted(&targets), count(k)).expect("scored day");
        proptest::prop_assert_eq!((a.p_at_k, a.base_rate, a.stocks, a.k), (b.p_at_k, b.base_rate, b.stocks, b.k));
        proptest::prop_assert!((a.top_k_mean - b.top_k_mean).abs() < 1e-12);
        proptest::prop_assert!((a.spread - b.spread).abs() < 1e-12);
        proptest::prop_assert_eq!(a.rank_ic.is_some(), b.rank_ic.is_some());
        proptest::prop_assert!((a.rank_ic.unwrap_or(0.0) - b.rank_ic.unwrap_or(0.0)).abs() < 1e-12);
        proptest::prop_assert!((0.0..=1.0).contains(&a.p_at_k));
    }
}

/// RankIC reuses the sort by score for the scores' ranks: it equals the Spearman
/// correlation computed directly, bit for bit, with ties on both sides.
#[test]
fn rank_ic_equals_spearman_with_ties() {
    for seed in 0..20u64 {
        let scores: Vec<f64> = (0..300).map(|i| ((i as u64 * 7919 + seed * 31) % 23) as f64 * 0.5 - 3.0).collect();
        let targets: Vec<f64> = (0..300).map(|i| ((i as u64 * 104_729 + seed) % 37) as f64 * 0.01 - 0.1).collect();
        let day = day_metrics(&scores, &targets, TopK::Count(10)).expect("scored");
        assert_eq!(day.rank_ic, spearman(&scores, &targets), "seed {seed}");
    }
    assert_eq!(day_metrics(&[1.0], &[0.5], TopK::Count(1)).expect("one stock").rank_ic, None);
}

proptest::proptest! {
    /// Ranks within a subset from the ranks in a larger set equal ranking the subset.
    #[test]
    fn subset_ranks_equal_ranking_the_subset(
        values in proptest::collection::vec((-5i8..5, proptest::bool::ANY), 0..80),
    ) {
        let all: Vec<f64> = values.iter().map(|v| f64::from(v.0)).collect();
        let ranks = average_ranks(&all);
        let kept: Vec<usize> = (0..values.len()).filter(|i| values[*i].1).collect();
        let subset: Vec<f64> = kept.iter().map(|i| all[*i]).collect();
        let from_ranks: Vec<f64> = kept.iter().map(|i| ranks[*i]).collect();
        let mut counts = Vec::new();
        proptest::prop_assert_eq!(subset_ranks(&from_ranks, &mut counts), average_ranks(&subset));
    }
}

#[test]
fn in_a_rising_market_a_low_volatility_ranking_reads_as_skill_only_on_the_zero_basis() {
    // A rising day: every stock's return is the market's +1% plus its volatility times a
    // shock; the shocks are the same set for calm and volatile stocks, so neither group
    // earns more than the other on average. Ranking by low volatility puts the calm
    // stocks, all close to +1%, on top.
    let shocks = [-1.5, -0.5, 0.5, 1.5, -1.2, -0.2, 0.2, 1.2];
    let mut scores = Vec::new();
    let mut targets = Vec::new();
    for (group, volatility) in [(0, 0.004), (1, 0.05)] {
        for shock in shocks {
            scores.push(if group == 0 { 1.0 + shock * 1e-3 } else { -1.0 + shock * 1e-3 });
            targets.push(0.01 + volatility * shock);
        }
    }
    let day = day_metrics(&scores, &targets, count(8)).expect("scored day");
    // Zero basis: every calm stock is above 0 (P@K 1), 12 of 16 stocks are (base 0.75).
    assert_eq!((day.p_at_k, day.base_rate), (1.0, 0.75));
    assert!(day.delta() > 0.2);
    // Median basis: the calm stocks straddle the median as the volatile ones do.
    assert_eq!((day.median_p_at_k, day.median_base_rate), (0.5, 0.5));
    assert_eq!(day.median_delta(), 0.0, "{day:?}");
    assert_eq!(day.delta_on(Basis::Zero), day.delta());
    assert_eq!(day.delta_on(Basis::Median), day.median_delta());
}

#[test]
fn both_bases_agree_with_a_direct_computation_day_by_day() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for day in 0..200 {
        let n = 5 + day % 40;
        // Coarse values make ties (on the score and at the median) common.
        let scores: Vec<f64> = (0..n).map(|_| f64::from(rng.random_range(0..12))).collect();
        let targets: Vec<f64> = (0..n).map(|_| f64::from(rng.random_range(-5..8)) / 100.0).collect();
        let k = 1 + day % n;
        let metrics = day_metrics(&scores, &targets, count(k as u32)).expect("scored");
        let mut sorted = targets.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        // Expected P@K over every order of tied scores: a stock strictly inside the top K
        // counts 1; those tied at the cut share the places left.
        let precision = |hit: &dyn Fn(f64) -> bool| {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
            let cut = scores[order[k - 1]];
            let above: Vec<usize> = (0..n).filter(|i| scores[*i] > cut).collect();
            let tied: Vec<usize> = (0..n).filter(|i| scores[*i] == cut).collect();
            let places = (k - above.len()) as f64 / tied.len() as f64;
            let hits = |set: &[usize]| set.iter().filter(|i| hit(targets[**i])).count() as f64;
            (hits(&above) + places * hits(&tied)) / k as f64
        };
        let share = |hit: &dyn Fn(f64) -> bool| targets.iter().filter(|t| hit(**t)).count() as f64 / n as f64;
        let (zero, above_median) = (|t: f64| t > 0.0, |t: f64| t > median);
        assert!((metrics.p_at_k - precision(&zero)).abs() < 1e-12, "day {day}");
        assert!((metrics.base_rate - share(&zero)).abs() < 1e-12, "day {day}");
        assert!((metrics.median_p_at_k - precision(&above_median)).abs() < 1e-12, "day {day}");
        assert!((metrics.median_base_rate - share(&above_median)).abs() < 1e-12, "day {day}");
    }
}
