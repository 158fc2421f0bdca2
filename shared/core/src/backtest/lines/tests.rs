//! A line's backtest agrees with the engine run by hand on each schedule and setting;
//! schedules without a live model on every day are left out; the best fixed cadence,
//! the frontier and the curves are what their definitions say.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::age::ModelRun;
use crate::backtest::portfolio::simulate;
use crate::backtest::{DEFAULT_DEPTH, Depth, Rebalance};

const STOCKS: usize = 12;
const DAYS: usize = 40;

fn ranking(rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut stocks: Vec<u32> = (0..STOCKS as u32).collect();
    for i in (1..stocks.len()).rev() {
        stocks.swap(i, rng.random_range(0..=i));
    }
    stocks
}

fn grid() -> BacktestGrid {
    BacktestGrid {
        k: vec![3],
        rebalance: vec![Rebalance::Days(1), Rebalance::Days(5)],
        buffer: vec![0, 2],
        max_replace: vec![None],
        min_trade: vec![0.0],
        buy_bps: vec![10.0],
        sell_bps: vec![20.0],
        impact: vec![0.1],
        capital: vec![1e7],
        retrain_cost: 1e4,
        depth: Depth::Top(DEFAULT_DEPTH),
    }
}

#[test]
fn every_schedule_and_setting_is_the_engine_run_by_hand() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Models retrained on days 0, 10, 20 and 30, each scoring 40 days from its retrain.
    let runs: Vec<ModelRun> = [0usize, 10, 20, 30]
        .iter()
        .map(|&retrain_day| ModelRun {
            window: 10,
            model: 0,
            seed: 0,
            retrain_day,
            train_seconds: 1.0,
            ages: vec![None; DAYS],
            drift: None,
            rankings: (0..DAYS).map(|_| ranking(&mut rng)).collect(),
            exposures: Default::default(),
            horizons: Vec::new(),
            importance: Default::default(),
        })
        .collect();
    let matrix = AgeMatrix { horizon: 1, max_age: DAYS as u32, runs, basis: Default::default() };
    let replay_of = |retrains: &[(usize, usize)]| Replay {
        retrain_days: retrains.iter().map(|(day, _)| *day).collect(),
        first_day: 0,
        live: (0..DAYS)
            .map(|day| {
                let (retrain, run) = retrains.iter().rev().find(|(d, _)| *d <= day).copied().unwrap_or((0, 0));
                Some((run, day - retrain))
            })
            .collect(),
    };
    let every_10 = replay_of(&[(0, 0), (10, 1), (20, 2), (30, 3)]);
    let once = replay_of(&[(0, 0)]);
    let policy = replay_of(&[(0, 0), (20, 2)]);
    let mut gap = policy.clone();
    gap.live[7] = None;
    let schedules = [
        Schedule { name: "10d", adaptive: false, replay: &every_10, curves: true },
        Schedule { name: "never", adaptive: false, replay: &once, curves: false },
        Schedule { name: "policy", adaptive: true, replay: &policy, curves: true },
        Schedule { name: "gap", adaptive: true, replay: &gap, curves: true },
    ];
    let returns: Vec<Vec<f64>> =
        (0..DAYS + 5).map(|_| (0..STOCKS).map(|_| rng.random_range(-0.03..0.03)).collect()).collect();
    let shape = |value: f64| vec![vec![value; STOCKS]; DAYS + 5];
    let market = Market { returns, vol: shape(0.02), adv: shape(1e8) };
    let dates: Vec<NaiveDate> = (0..DAYS as i64 + 5)
        .map(|d| NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default() + chrono::Duration::days(d))
        .collect();
    let universe = vec![(0..STOCKS as u32).collect::<Vec<_>>(); DAYS + 5];
    let grid = grid();
    let settings = grid.settings();
    let line = backtest_line(LineInput {
        matrix: &matrix,
        schedules: &schedules,
        grid: &grid,
        settings: &settings,
        market: &market,
        dates: &dates,
        universe: &universe,
        samples: 200,
        seed: 3,
        selection: &crate::spec::SelectionConfig { lookbacks: vec![5], among: crate::spec::Among::All },
        statistics: true,
    });

    assert_eq!(line.skipped, vec!["gap".to_string()], "a day without a live model leaves the schedule out");
    assert_eq!(line.outcomes.len(), 3 * settings.len());
    assert_eq!(line.dates.len(), DAYS);
    for (index, outcome) in line.outcomes.iter().enumerate() {
        let schedule = &schedules[index / settings.len()];
        assert_eq!((outcome.schedule.as_str(), outcome.setting), (schedule.name, index % settings.len()));
        let setting = &settings[outcome.setting];
        let rebalance = rebalance_days(&dates[..DAYS], setting.rebalance);
        let days = schedule_days(schedule.replay, &matrix);
        let path = simulate(&days, &rebalance, setting, &market);
        let bench = benchmark(&universe[..DAYS], &rebalance, setting, &market);
        let by_hand = summarise(&path, &bench, 200, 0);
        let m = &outcome.metrics;
        assert_eq!((m.annual_net, m.annual_gross, m.costs), (by_hand.annual_net, by_hand.annual_gross, by_hand.costs));
        assert_eq!((m.turnover_per_year, m.switch_share), (by_hand.turnover_per_year, by_hand.switch_share));
        assert_eq!(m.annual_excess, by_hand.annual_excess);
        assert!(m.costs > 0.0, "costs are charged");
        assert!(m.excess_interval.is_some(), "fixed cadences, curves and the best policies get intervals");
        assert_eq!(outcome.retrains, schedule.replay.retrain_days.len());
        assert_eq!(outcome.total_cost, m.costs + outcome.retrains as f64 * 1e4 / 1e7);
    }
    for setting in 0..settings.len() {
        let of =
            |name: &str| line.outcomes.iter().find(|o| o.schedule == name && o.setting == setting).expect("outcome");
        let (fixed_a, fixed_b, policy) = (of("10d"), of("never"), of("policy"));
        let best = if fixed_a.metrics.annual_net >= fixed_b.metrics.annual_net { fixed_a } else { fixed_b };
        let other = if std::ptr::eq(best, fixed_a) { fixed_b } else { fixed_a };
        assert!(best.vs_best_fixed.is_none(), "the best fixed cadence is not compared with itself");
        for compared in [other, policy] {
            let difference = compared.vs_best_fixed.as_ref().expect("compared with the best fixed cadence");
            assert_eq!(difference.against, best.schedule);
            assert!(difference.annual <= 0.0 || compared.adaptive, "a fixed cadence never beats the best one");
        }
        // The frontier: nothing both cheaper and better.
        let mine: Vec<&BacktestOutcome> = line.outcomes.iter().filter(|o| o.setting == setting).collect();
        for o in &mine {
            let dominated = mine.iter().any(|p| {
                p.total_cost <= o.total_cost
                    && p.metrics.annual_excess >= o.metrics.annual_excess
                    && (p.total_cost < o.total_cost || p.metrics.annual_excess > o.metrics.annual_excess)
            });
            assert_eq!(o.on_frontier, !dominated);
        }
        // Curves: the benchmark and the schedules that asked for them.
        let curves: Vec<Option<&str>> =
            line.curves.iter().filter(|c| c.setting == setting).map(|c| c.schedule.as_deref()).collect();
        assert_eq!(curves, vec![None, Some("10d"), Some("policy")]);
        let curve = line.curves.iter().find(|c| c.setting == setting && c.schedule.is_none()).expect("benchmark");
        let annual = f64::from(*curve.net.last().expect("days")).powf(252.0 / DAYS as f64) - 1.0;
        assert!((annual - line.benchmark[setting].annual_net).abs() < 1e-5);
    }
    // Per setting: the best net schedule (highest Sharpe ratio of net returns) deflated
    // for the schedules tried, and the PBO over them.
    assert_eq!(line.overfitting.len(), settings.len());
    for (index, o) in line.overfitting.iter().enumerate() {
        assert_eq!(o.setting, index);
        let deflated = o.deflated.as_ref().expect("schedules with returns");
        let outcomes: Vec<&BacktestOutcome> = line.outcomes.iter().filter(|x| x.setting == index).collect();
        assert_eq!(deflated.trials, outcomes.len());
        let sharpe = |o: &&&BacktestOutcome| o.metrics.sharpe.unwrap_or(f64::NEG_INFINITY);
        let best = outcomes.iter().max_by(|a, b| sharpe(a).total_cmp(&sharpe(b))).expect("outcomes");
        assert_eq!(o.best.as_deref(), Some(best.schedule.as_str()));
        assert!((deflated.moments.sharpe * 252f64.sqrt() - sharpe(&best)).abs() < 1e-9, "{o:?}");
        let (dsr, pbo) = (deflated.dsr.expect("dsr"), o.pbo.as_ref().expect("pbo"));
        assert!((0.0..=1.0).contains(&dsr) && (0.0..=1.0).contains(&pbo.pbo), "{o:?}");
        assert_eq!((pbo.blocks, pbo.schedules, pbo.days), (PBO_BLOCKS, 3, 32));
        // The selector (lookback 5, among all) over the covering schedules' net returns,
        // deciding at the setting's rebalances.
        let setting = &settings[index];
        let rebalance = rebalance_days(&dates[..DAYS], setting.rebalance);
        let nets: Vec<Vec<f64>> = schedules[..3]
            .iter()
            .map(|s| simulate(&schedule_days(s.replay, &matrix), &rebalance, setting, &market).net)
            .collect();
        let pool: Vec<&[f64]> = nets.iter().map(Vec::as_slice).collect();
        let decisions: Vec<usize> = (0..DAYS).filter(|d| rebalance[*d]).collect();
        let by_hand = crate::replay::select::select(&pool, &decisions, 0, 5);
        let chosen = &o.out_of_sample[..];
        assert_eq!(chosen.len(), 1);
        assert_eq!((chosen[0].lookback, chosen[0].switches), (5, by_hand.choices.len() - 1));
        assert!((chosen[0].annual_net - super::super::metrics::annualised(&by_hand.series)).abs() < 1e-12);
        let best_fixed = line.outcomes.iter().find(|x| x.setting == index && x.vs_best_fixed.is_none() && !x.adaptive);
        assert_eq!(
            chosen[0].vs_best_fixed.as_ref().map(|(name, _)| name.as_str()),
            best_fixed.map(|b| b.schedule.as_str())
        );
    }
}
