//! Hand-computed cases for each rule, an independent re-implementation (plain loops over
//! dense weight vectors, no code shared with the product) compared on random markets, and
//! the invariants of issue 17.

use proptest::prelude::*;

use super::*;

/// Top `k`, rebalanced daily, without costs, at a capital of 10⁶.
fn setting(k: u32) -> PortfolioSetting {
    PortfolioSetting { buy_bps: 0.0, sell_bps: 0.0, capital: 1e6, ..PortfolioSetting::new(k, Rebalance::Days(1)) }
}

fn market(returns: Vec<Vec<f64>>) -> Market {
    let shape = |value: f64| returns.iter().map(|day| vec![value; day.len()]).collect();
    Market { vol: shape(0.02), adv: shape(1e6), returns }
}

fn days<'a>(rankings: &'a [Vec<u32>], models: &[usize]) -> Vec<Day<'a>> {
    rankings.iter().zip(models).map(|(ranking, &model)| Day { ranking, model }).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn holdings_drift_with_prices_between_rebalances() {
    let rankings = vec![vec![0, 1]; 2];
    let market = market(vec![vec![0.10, -0.10], vec![0.20, 0.0]]);
    let path = simulate(&days(&rankings, &[0, 0]), &[true, false], &setting(2), &market);
    assert!(close(path.gross[0], 0.0));
    // Weights drifted to 0.55 / 0.45: the second day earns 0.55 × 0.20.
    assert!(close(path.gross[1], 0.11), "{path:?}");
    assert_eq!(path.turnover, vec![0.5, 0.0], "the first rebalance buys from cash (one-sided 1/2)");
}

#[test]
fn a_buffer_keeps_a_name_that_slipped_within_it() {
    let rankings = vec![vec![0, 1, 2, 3], vec![1, 0, 2, 3]];
    let market = market(vec![vec![0.0; 4]; 2]);
    let days = days(&rankings, &[0, 0]);
    let tight = simulate(&days, &[true, true], &setting(1), &market);
    assert!(close(tight.turnover[1], 1.0), "sold 0, bought 1: {tight:?}");
    let buffered = simulate(&days, &[true, true], &PortfolioSetting { buffer: 1, ..setting(1) }, &market);
    assert!(close(buffered.turnover[1], 0.0), "rank 2 is within K + 1: {buffered:?}");
}

#[test]
fn max_replace_sells_the_worst_candidates_first_and_fills_the_slots() {
    let rankings = vec![vec![0, 1, 2, 3], vec![2, 3, 0, 1], vec![2, 3, 0, 1]];
    let returns = vec![vec![0.0; 4], vec![0.0; 4], vec![0.0, 0.01, 0.02, 0.03]];
    let market = market(returns);
    let limited = PortfolioSetting { max_replace: Some(1), ..setting(2) };
    let path = simulate(&days(&rankings, &[0, 0, 0]), &[true, true, false], &limited, &market);
    // Day 1 sells stock 1 (rank 4, the worst) only and buys stock 2: it holds {0, 2}.
    assert!(close(path.turnover[1], 0.5));
    assert!(close(path.gross[2], 0.5 * 0.0 + 0.5 * 0.02), "{path:?}");
}

#[test]
fn resizes_below_min_trade_are_skipped() {
    let rankings = vec![vec![0, 1]; 2];
    let market = market(vec![vec![0.10, 0.0], vec![0.0, 0.0]]);
    let days = days(&rankings, &[0, 0]);
    // After day 0 the weights are 0.55 / 1.05 and 0.5 / 1.05: 0.0238 off target.
    let skipped = simulate(&days, &[true, true], &PortfolioSetting { min_trade: 0.03, ..setting(2) }, &market);
    assert!(close(skipped.turnover[1], 0.0), "{skipped:?}");
    let traded = simulate(&days, &[true, true], &PortfolioSetting { min_trade: 0.01, ..setting(2) }, &market);
    assert!(close(traded.turnover[1], 0.55 / 1.05 - 0.5), "{traded:?}");
}

#[test]
fn costs_are_basis_points_of_traded_value_plus_square_root_impact() {
    let rankings = vec![vec![0, 1], vec![1, 0]];
    let market = market(vec![vec![0.01, 0.0], vec![0.0, 0.0]]);
    let days = days(&rankings, &[0, 1]);
    let bps = PortfolioSetting { buy_bps: 10.0, sell_bps: 20.0, ..setting(1) };
    let path = simulate(&days, &[true, true], &bps, &market);
    assert!(close(path.costs[0], 0.001), "buy 100% at 10 bps");
    assert!(close(path.net[0], (1.0 - 0.001) * 1.01 - 1.0));
    assert!(close(path.costs[1], 0.002 + 0.001), "sell at 20, buy at 10");
    assert!(close(path.switch_turnover, path.turnover[1]), "the model changed at day 1");
    // Impact: 0.5 × σ 0.02 × sqrt(1e6 traded / 1e6 ADV) = 1% on the 100% bought.
    let impact = PortfolioSetting { impact: 0.5, ..bps };
    let path = simulate(&days, &[true, false], &impact, &market);
    assert!(close(path.costs[0], 0.001 + 0.01), "{path:?}");
}

#[test]
fn the_benchmark_holds_the_universe_at_equal_weight() {
    let universe = vec![vec![0, 1, 2]; 2];
    let market = market(vec![vec![0.03, 0.0, -0.03], vec![0.03, 0.03, 0.03]]);
    let path = benchmark(&universe, &[true, true], &setting(1), &market);
    assert!(close(path.gross[0], 0.0) && close(path.gross[1], 0.03), "{path:?}");
    // Every day, K = all: the schedule's portfolio is the benchmark.
    let all = simulate(&days(&universe, &[0, 0]), &[true, true], &setting(3), &market);
    assert_eq!(all, path);
}

#[test]
fn a_replayed_schedule_trades_the_live_models_rankings_and_counts_the_switch() {
    use crate::age::{AgeMatrix, ModelRun};
    use crate::replay::Replay;
    let run = |retrain_day: usize, rankings: Vec<Vec<u32>>| ModelRun {
        window: 10,
        model: 0,
        seed: 0,
        retrain_day,
        train_seconds: 1.0,
        ages: vec![None; rankings.len()],
        exposures: Default::default(),
        horizons: Vec::new(),
        importance: Default::default(),
        drift: None,
        rankings,
    };
    let matrix = AgeMatrix {
        basis: Default::default(),
        horizon: 1,
        max_age: 4,
        runs: vec![run(0, vec![vec![0, 1], vec![0, 1], vec![1, 0], vec![1, 0]]), run(2, vec![vec![2, 3], vec![2, 3]])],
    };
    // Run 0 is live on days 0 and 1, run 1 (retrained on day 2) on days 2 and 3.
    let replay = Replay {
        retrain_days: vec![0, 2],
        first_day: 0,
        live: vec![Some((0, 0)), Some((0, 1)), Some((1, 0)), Some((1, 1))],
    };
    let days = schedule_days(&replay, &matrix);
    assert_eq!(
        days.iter().map(|d| d.ranking.to_vec()).collect::<Vec<_>>(),
        vec![vec![0, 1], vec![0, 1], vec![2, 3], vec![2, 3]]
    );
    let market = market(vec![vec![0.0; 4]; 4]);
    let path = simulate(&days, &[true, true, true, true], &setting(1), &market);
    // Day 2's new model ranks stock 2 first: stock 0 is sold and 2 bought, a switch.
    assert_eq!(path.turnover, vec![0.5, 0.0, 1.0, 0.0]);
    assert!(close(path.switch_turnover, 1.0));
    let gap = Replay { live: vec![Some((0, 0)), None, Some((1, 0)), Some((1, 1))], ..replay };
    let days = schedule_days(&gap, &matrix);
    assert!(days[1].ranking.is_empty(), "no live row, no ranking");
}

#[test]
fn rebalance_days_follow_counts_weeks_and_months() {
    let dates: Vec<NaiveDate> = ["2024-01-29", "2024-01-30", "2024-02-01", "2024-02-05", "2024-02-06"]
        .iter()
        .map(|d| d.parse().expect("date"))
        .collect();
    assert_eq!(rebalance_days(&dates, Rebalance::Days(2)), vec![true, false, true, false, true]);
    assert_eq!(rebalance_days(&dates, Rebalance::Weekly), vec![true, false, false, true, false]);
    assert_eq!(rebalance_days(&dates, Rebalance::Monthly), vec![true, false, true, false, false]);
}

/// The rules again, written apart: dense weights, plain loops (on purpose).
#[allow(clippy::needless_range_loop)]
fn reference(
    rankings: &[Vec<u32>],
    models: &[usize],
    rebalance: &[bool],
    s: &PortfolioSetting,
    m: &Market,
    stocks: usize,
) -> (Vec<f64>, Vec<f64>, f64) {
    let mut w = vec![0.0f64; stocks];
    let mut order: Vec<usize> = Vec::new(); // held, in the order bought
    let (mut net, mut costs) = (Vec::new(), Vec::new());
    let mut nav = 1.0;
    let mut switch = 0.0;
    let mut last: Option<usize> = None;
    for t in 0..rankings.len() {
        let mut c = 0.0;
        if rebalance[t] {
            let rank = |stock: usize| rankings[t].iter().position(|&x| x as usize == stock).map(|p| p + 1);
            let limit = (s.k + s.buffer) as usize;
            let mut stay = Vec::new();
            let mut cand = Vec::new();
            for &i in &order {
                match rank(i) {
                    Some(r) if r <= limit => stay.push(i),
                    r => cand.push((r, i)),
                }
            }
            // worst first: unranked (low index first), then highest rank number
            cand.sort_by(|a, b| match (a.0, b.0) {
                (None, None) => a.1.cmp(&b.1),
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => y.cmp(&x),
            });
            let n_sell = match s.max_replace {
                Some(l) => (l as usize).min(cand.len()),
                None => cand.len(),
            };
            for &(_, i) in &cand[n_sell..] {
                stay.push(i);
            }
            for &x in &rankings[t] {
                if stay.len() >= s.k as usize {
                    break;
                }
                if !stay.contains(&(x as usize)) {
                    stay.push(x as usize);
                }
            }
            let mut new_w = vec![0.0f64; stocks];
            if !stay.is_empty() {
                let target = 1.0 / stay.len() as f64;
                let mut kept = 0.0;
                let mut n_trading = 0;
                let mut skip = vec![false; stocks];
                for &i in &stay {
                    if w[i] > 0.0 && (target - w[i]).abs() < s.min_trade {
                        skip[i] = true;
                        kept += w[i];
                    } else {
                        n_trading += 1;
                    }
                }
                for &i in &stay {
                    new_w[i] = if skip[i] {
                        if n_trading == 0 { w[i] / kept } else { w[i] }
                    } else {
                        (1.0 - kept).max(0.0) / n_trading as f64
                    };
                }
            }
            let mut traded = 0.0;
            let mut worst = 0.0f64;
            let mut rates = vec![None; stocks];
            for i in 0..stocks {
                let d = new_w[i] - w[i];
                if d != 0.0 && s.impact > 0.0 {
                    let rate = s.impact * m.vol[t][i] * (d.abs() * nav * s.capital / m.adv[t][i]).sqrt();
                    if rate.is_finite() && m.adv[t][i] > 0.0 {
                        rates[i] = Some(rate);
                        worst = worst.max(rate);
                    }
                }
            }
            for i in 0..stocks {
                let d = new_w[i] - w[i];
                if d == 0.0 {
                    continue;
                }
                traded += d.abs();
                c += d.abs() * if d > 0.0 { s.buy_bps } else { s.sell_bps } / 1e4;
                if s.impact > 0.0 {
                    c += d.abs() * rates[i].unwrap_or(worst);
                }
            }
            c = c.min(1.0);
            if let Some(l) = last
                && l != models[t]
            {
                switch += traded / 2.0;
            }
            last = Some(models[t]);
            w = new_w;
            order = stay;
        }
        let mut gross = 0.0;
        for i in 0..stocks {
            let r = if m.returns[t][i].is_finite() { m.returns[t][i] } else { 0.0 };
            gross += w[i] * r;
        }
        if 1.0 + gross > 0.0 {
            for i in 0..stocks {
                let r = if m.returns[t][i].is_finite() { m.returns[t][i] } else { 0.0 };
                w[i] = w[i] * (1.0 + r) / (1.0 + gross);
            }
        }
        let y = (1.0 - c) * (1.0 + gross) - 1.0;
        nav *= 1.0 + y;
        net.push(y);
        costs.push(c);
    }
    (net, costs, switch)
}

const STOCKS: usize = 6;
const DAYS: usize = 25;

prop_compose! {
    fn a_market()(
        returns in proptest::collection::vec(proptest::collection::vec(-0.1f64..0.1, STOCKS), DAYS),
        missing in proptest::collection::vec((0..DAYS, 0..STOCKS), 0..4),
        rankings in proptest::collection::vec(Just((0..STOCKS as u32).collect::<Vec<_>>()).prop_shuffle(), DAYS),
        depth in proptest::collection::vec(2usize..=STOCKS, DAYS),
        models in proptest::collection::vec(0usize..3, DAYS),
        rebalance in proptest::collection::vec(any::<bool>(), DAYS),
        adv in 1e5f64..1e7,
    ) -> (Market, Vec<Vec<u32>>, Vec<usize>, Vec<bool>) {
        let mut returns = returns;
        for (t, i) in missing {
            returns[t][i] = f64::NAN;
        }
        let rankings = rankings.into_iter().zip(depth).map(|(mut r, d)| { r.truncate(d); r }).collect();
        let mut rebalance = rebalance;
        rebalance[0] = true;
        let market = Market { vol: vec![vec![0.02; STOCKS]; DAYS], adv: vec![vec![adv; STOCKS]; DAYS], returns };
        (market, rankings, models, rebalance)
    }
}

prop_compose! {
    fn a_setting()(
        k in 1u32..=4,
        buffer in 0u32..3,
        max_replace in proptest::option::of(1u32..3),
        min_trade in prop_oneof![Just(0.0), Just(0.01), Just(0.05)],
        buy_bps in 0.0f64..30.0,
        sell_bps in 0.0f64..30.0,
        impact in prop_oneof![Just(0.0), Just(0.3)],
    ) -> PortfolioSetting {
        PortfolioSetting { k, rebalance: Rebalance::Days(1), buffer, max_replace, min_trade, buy_bps, sell_bps, impact, capital: 1e6 }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_product_agrees_with_an_independent_implementation((market, rankings, models, rebalance) in a_market(), setting in a_setting()) {
        let path = simulate(&days(&rankings, &models), &rebalance, &setting, &market);
        let (net, costs, switch) = reference(&rankings, &models, &rebalance, &setting, &market, STOCKS);
        for t in 0..DAYS {
            prop_assert!((path.net[t] - net[t]).abs() < 1e-12, "day {}: {} vs {}", t, path.net[t], net[t]);
            prop_assert!((path.costs[t] - costs[t]).abs() < 1e-12, "day {}: {} vs {}", t, path.costs[t], costs[t]);
        }
        prop_assert!((path.switch_turnover - switch).abs() < 1e-12);
    }

    #[test]
    fn zero_costs_make_net_equal_gross_and_double_bps_double_the_drag((market, rankings, models, rebalance) in a_market(), setting in a_setting()) {
        let days = days(&rankings, &models);
        let free = PortfolioSetting { buy_bps: 0.0, sell_bps: 0.0, impact: 0.0, ..setting };
        let path = simulate(&days, &rebalance, &free, &market);
        prop_assert_eq!(&path.net, &path.gross);
        let single = PortfolioSetting { impact: 0.0, ..setting };
        let double = PortfolioSetting { buy_bps: 2.0 * setting.buy_bps, sell_bps: 2.0 * setting.sell_bps, ..single };
        let (one, two) = (simulate(&days, &rebalance, &single, &market), simulate(&days, &rebalance, &double, &market));
        let (c1, c2): (f64, f64) = (one.costs.iter().sum(), two.costs.iter().sum());
        prop_assert!((c2 - 2.0 * c1).abs() < 1e-12, "{} vs 2 × {}", c2, c1);
        prop_assert_eq!(one.turnover, two.turnover);
    }

    #[test]
    fn k_equal_to_the_universe_every_day_is_the_benchmark((market, _, _, _) in a_market(), setting in a_setting()) {
        let universe = vec![(0..STOCKS as u32).collect::<Vec<_>>(); DAYS];
        let every = vec![true; DAYS];
        let all = PortfolioSetting { k: STOCKS as u32, ..setting };
        let path = simulate(&days(&universe, &[0; DAYS]), &every, &all, &market);
        prop_assert_eq!(path, benchmark(&universe, &every, &all, &market));
    }
}

/// Issue 17 expected "a larger buffer never increases turnover". It does not hold: a
/// buffer delays a sale, and the market can move so that the delayed sale is followed by
/// another. K = 1 on flat prices, buffer 1 against buffer 2 (found by a property test):
#[test]
fn a_larger_buffer_can_trade_more_this_is_the_counterexample() {
    let at = |t: usize| match t {
        0 => vec![0, 1, 2, 3, 4, 5],
        2 => vec![4, 3, 2, 0, 1, 5],
        5 => vec![1, 0, 2, 3, 4, 5],
        15 => vec![4, 2, 1, 0, 3, 5],
        17 => vec![0, 4, 2, 1, 3, 5],
        _ => vec![4, 3, 1, 0, 2, 5],
    };
    let rebalance: Vec<bool> = (0..20).map(|t| [0, 2, 5, 15, 17, 19].contains(&t)).collect();
    let rankings: Vec<Vec<u32>> =
        (0..20).map(|t| at([0, 2, 5, 15, 17, 19].into_iter().rfind(|&r| r <= t).unwrap_or(0))).collect();
    let market = market(vec![vec![0.0; 6]; 20]);
    let days = days(&rankings, &[0; 20]);
    let turnover = |buffer| -> f64 {
        simulate(&days, &rebalance, &PortfolioSetting { buffer, ..setting(1) }, &market).turnover.iter().sum()
    };
    // Buffer 1 keeps 4 from day 15 on; buffer 2 keeps 1 at day 15, then must sell it at
    // 17 (rank 4) and sell 0 at 19 (rank 4): one replacement more.
    assert!(close(turnover(1), 3.5) && close(turnover(2), 4.5), "{} {}", turnover(1), turnover(2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// What does hold: on flat prices with full rankings, a buffer covering the whole
    /// universe never sells, so the only turnover is the first purchase.
    #[test]
    fn a_buffer_covering_the_universe_never_sells((market, rankings, models, rebalance) in a_market(), setting in a_setting()) {
        let market = Market { returns: vec![vec![0.0; STOCKS]; DAYS], ..market };
        let full: Vec<Vec<u32>> = rankings.iter().map(|r| {
            let mut all = r.clone();
            all.extend((0..STOCKS as u32).filter(|s| !r.contains(s)));
            all
        }).collect();
        let wide = PortfolioSetting { buffer: STOCKS as u32, min_trade: 0.0, ..setting };
        let path = simulate(&days(&full, &models), &rebalance, &wide, &market);
        prop_assert!((path.turnover.iter().sum::<f64>() - 0.5).abs() < 1e-12, "{:?}", path.turnover);
    }
}
