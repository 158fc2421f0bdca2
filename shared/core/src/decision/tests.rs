use proptest::prelude::*;

use super::*;
use crate::age::{AgeMatrix, Line, Metric};
use crate::replay::{LineReplayer, expand_policies};
use crate::spec::{AgeGrid, DriftGrid, PerformanceGrid, TriggerGrid};

const LINE: Line = Line { window: 10, model: 0, seed: 0 };

fn metrics(delta: f64) -> DayMetrics {
    DayMetrics {
        p_at_k: 0.5 + delta,
        base_rate: 0.5,
        median_p_at_k: 0.5 + delta,
        median_base_rate: 0.5,
        rank_ic: Some(delta),
        spread: delta,
        top_k_mean: delta,
        stocks: 10,
        k: 2,
    }
}

/// A line retrained on `days`, `ages` rows each; ΔP@K and the drift bins are a hash of
/// (seed, retrain day, age), with a few unscored days.
fn matrix(days: &[usize], ages: usize, horizon: u32, seed: u64) -> AgeMatrix {
    let hash = |a: u64, b: u64, c: u64| {
        let mut x = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ c;
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^ (x >> 29)
    };
    let bins = |r: u64, age: u64, feature: u64| -> [u32; BINS] {
        std::array::from_fn(|bin| 1 + (hash(r, age * 16 + feature, bin as u64) % 9) as u32)
    };
    let runs = days
        .iter()
        .map(|r| {
            let r64 = *r as u64;
            ModelRun {
                window: 10,
                model: 0,
                seed: 0,
                retrain_day: *r,
                train_seconds: 1.0,
                ages: (0..ages)
                    .map(|a| {
                        let h = hash(r64, a as u64, 7);
                        (h % 17 != 0).then(|| metrics((h % 1000) as f64 / 1000.0 - 0.55))
                    })
                    .collect(),
                drift: Some(DriftPath {
                    training: (0..4).map(|f| bins(r64, 999, f)).collect(),
                    days: (0..ages).map(|a| (0..4).map(|f| bins(r64, a as u64, f)).collect()).collect(),
                }),
                rankings: Vec::new(),
                exposures: Default::default(),
                horizons: Vec::new(),
                importance: Default::default(),
            }
        })
        .collect();
    AgeMatrix { horizon, max_age: ages as u32, runs, basis: Default::default() }
}

/// Runs a deployment of `policy` over the matrix's line day by day, promoting the run of
/// each retrain day: its retrain days and, per day, the live (retrain day, age) with a row.
fn live(matrix: &AgeMatrix, policy: LivePolicy, decision_days: &[usize]) -> (Vec<usize>, Vec<Option<(usize, usize)>>) {
    let mut observer = RunsObserver::new(matrix.runs.clone());
    let first = &matrix.runs[0];
    let training = |run: &ModelRun| run.drift.as_ref().map(|d| d.training.clone());
    let mut state = LiveState::new(
        policy,
        matrix.horizon,
        matrix.max_age,
        decision_days.to_vec(),
        Version::new(first.retrain_day, "first".into(), training(first)),
    );
    let last = matrix.runs.iter().map(|r| r.retrain_day + r.ages.len() - 1).max().expect("runs");
    let mut series = Vec::new();
    for day in first.retrain_day..=last {
        let retrain = state.advance(day, &mut observer).expect("in order").is_some_and(|d| d.retrain);
        if retrain && let Some(run) = matrix.runs.iter().find(|r| r.retrain_day == day) {
            state.promote(Version::new(day, format!("job {day}"), training(run))).expect("promotable");
        }
        let version = state.live_version();
        let run = matrix.runs.iter().find(|r| r.retrain_day == version.retrain_day).expect("run");
        let age = day - version.retrain_day;
        series.push(run.at(age).map(|_| (version.retrain_day, age)));
    }
    (state.versions.iter().map(|v| v.retrain_day).collect(), series)
}

fn replayed(matrix: &AgeMatrix, replay: &crate::replay::Replay) -> Vec<Option<(usize, usize)>> {
    replay.live.iter().map(|cell| cell.map(|(run, age)| (matrix.runs[run].retrain_day, age))).collect()
}

fn policies() -> Vec<Policy> {
    expand_policies(&TriggerGrid {
        performance: Some(PerformanceGrid {
            metric: PerformanceMetric::DeltaPAtK,
            tau: vec![-0.1, 0.0, 0.05],
            lookback: vec![1, 5, 12],
        }),
        drift: Some(DriftGrid { theta: vec![0.05, 0.2], share: vec![0.25, 0.75], days: vec![2, 6] }),
        age: Some(AgeGrid { max_age: vec![7, 20] }),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Live equals replay: every policy of a grid (performance, drift, age and their
    /// combinations) and a fixed schedule, advanced day by day on what has matured,
    /// retrain on the replay's days and leave the replay's daily series.
    #[test]
    fn a_live_deployment_retrains_on_the_replays_days(
        step in 1usize..5,
        ages in 8usize..40,
        horizon in 0u32..6,
        seed in any::<u64>(),
        chosen in proptest::collection::vec(any::<bool>(), 25),
    ) {
        let days: Vec<usize> = (0..25).map(|i| 2 + i * step).collect();
        let m = matrix(&days, ages, horizon, seed);
        let replayer = LineReplayer::new(&m, LINE).expect("runs");
        let policies = policies();
        for policy in policies.iter().step_by(7) {
            let replay = replayer.adaptive(policy, &days);
            let (retrains, series) = live(&m, LivePolicy::Adaptive(policy.clone()), &days);
            prop_assert_eq!(&retrains, &replay.retrain_days, "{}", policy);
            prop_assert_eq!(&series, &replayed(&m, &replay), "{}", policy);
        }
        let schedule: Vec<usize> = days.iter().zip(&chosen).filter(|(_, c)| **c).map(|(d, _)| *d).collect();
        let replay = replayer.fixed(&schedule);
        let (retrains, series) = live(&m, LivePolicy::Fixed(Cadence::Weekly), &schedule);
        prop_assert_eq!(&retrains, &replay.retrain_days);
        prop_assert_eq!(&series, &replayed(&m, &replay));
        // The ΔP@K series read through the replay equals the one of the live cells.
        let values: Vec<f64> = series
            .iter()
            .map(|cell| cell.map_or(f64::NAN, |(r, age)| {
                Metric::DeltaPAtK.value(m.runs.iter().find(|run| run.retrain_day == r).and_then(|run| run.at(age)))
            }))
            .collect();
        let expected = replay.series(&m, Metric::DeltaPAtK);
        prop_assert!(values.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

/// The engine reads only matured labels: metrics of a day are asked for on the day
/// `h + 1` later, never before, and each day once.
#[test]
fn labels_are_learnt_only_once_matured() {
    struct Recorder {
        today: usize,
        asked: Vec<(usize, usize)>,
    }
    impl Observe for Recorder {
        fn metrics(&mut self, _: &Version, day: usize) -> Option<DayMetrics> {
            self.asked.push((self.today, day));
            Some(metrics(0.0))
        }
        fn drift(&mut self, _: &Version, day: usize) -> Option<Vec<[u32; BINS]>> {
            assert!(day < self.today, "drift of day {day} asked on day {}", self.today);
            None
        }
    }
    let horizon = 5;
    let policy = LivePolicy::Adaptive(Policy {
        triggers: vec![Trigger::Performance { metric: PerformanceMetric::DeltaPAtK, tau: -1.0, lookback: 3 }],
    });
    let mut state =
        LiveState::new(policy, horizon, 100, (10..60).step_by(5).collect(), Version::new(10, "k".into(), None));
    let mut recorder = Recorder { today: 0, asked: Vec::new() };
    for day in 10..60 {
        recorder.today = day;
        state.advance(day, &mut recorder).expect("in order");
    }
    for (today, day) in &recorder.asked {
        assert!(day + (horizon as usize) < *today, "day {day}'s label asked on {today}");
    }
    let days: Vec<usize> = recorder.asked.iter().map(|(_, d)| *d).collect();
    assert_eq!(days, (10..60 - horizon as usize - 1).collect::<Vec<_>>(), "each matured day once, in order");
    assert_eq!(state.decisions.len(), 9, "one decision per decision day after the first");
    assert!(state.decisions.iter().all(|d| !d.retrain && d.readings.len() == 1));
}

#[test]
fn days_out_of_order_and_wrong_promotions_are_refused() {
    let mut state =
        LiveState::new(LivePolicy::Fixed(Cadence::Weekly), 1, 20, vec![5, 10], Version::new(0, "first".into(), None));
    let mut observer = RunsObserver::default();
    assert_eq!(state.advance(1, &mut observer).err(), Some(LiveError::OutOfOrder { expected: 0, got: 1 }));
    for day in 0..=5 {
        state.advance(day, &mut observer).expect("in order");
    }
    assert!(state.advance(5, &mut observer).is_err(), "a day twice");
    assert!(state.promote(Version::new(4, "old".into(), None)).is_err(), "not the day just decided");
    assert_eq!(state.promote(Version::new(5, "new".into(), None)), Ok(2));
    assert_eq!(state.live_version().job_key, "new");
    assert_eq!(state.version_on(4).map(|v| v.number), Some(1));
}

/// A policy reads back from the name reports give it; cadences read as fixed policies;
/// what is not a policy is refused saying which part and what is expected.
#[test]
fn policies_read_back_from_their_names() {
    for policy in policies() {
        let parsed: LivePolicy = policy.to_string().parse().expect("its own name");
        assert_eq!(parsed, LivePolicy::Adaptive(policy.clone()), "{policy}");
    }
    assert_eq!("monthly".parse::<LivePolicy>(), Ok(LivePolicy::Fixed(Cadence::Monthly)));
    assert_eq!("21d".parse::<LivePolicy>(), Ok(LivePolicy::Fixed(Cadence::TradingDays(21))));
    let ascii: LivePolicy = "dP@K<-0.02 over 21d or age>=63d".parse().expect("ascii");
    assert_eq!(ascii.to_string(), "ΔP@K<-0.02 over 21d or age>=63d");
    for bad in ["fortnightly", "ΔP@K<x over 21d", "age>=0d", "PSI>0.1 on 120% over 5d", "ΔP@K<0 over 21"] {
        let error = bad.parse::<LivePolicy>().expect_err(bad).to_string();
        assert!(error.contains("cadence such as"), "{bad}: {error}");
    }
}

/// A rollback makes the earlier version live at once (from the last processed day), is
/// recorded, and the deployment goes on deciding with that version, whose matured days
/// are learnt again from its model: the same values it had before it was replaced.
#[test]
fn a_rollback_switches_at_once_and_decisions_go_on_with_the_earlier_version() {
    let days: Vec<usize> = (0..12).map(|i| i * 5).collect();
    let m = matrix(&days, 40, 2, 7);
    let mut observer = RunsObserver::new(m.runs.clone());
    let policy = LivePolicy::Fixed(Cadence::Weekly);
    let first = Version::new(0, "v1".into(), None);
    let mut state = LiveState::new(policy, 2, 40, vec![10, 20, 30, 40], first);
    assert!(state.rollback(None).is_err(), "nothing to roll back to");
    for day in 0..=25 {
        if state.advance(day, &mut observer).expect("in order").is_some_and(|d| d.retrain) {
            state.promote(Version::new(day, format!("v{day}"), None)).expect("promote");
        }
    }
    assert_eq!(state.live_version().number, 3, "retrained on 10 and 20");
    let before: Vec<Option<DayMetrics>> = state.versions[1].matured.clone();
    assert!(before.is_empty(), "a replaced version keeps no history");
    assert_eq!(state.rollback(None), Ok(2));
    assert_eq!(state.live_version().retrain_day, 10);
    assert_eq!(state.version_on(25).map(|v| v.number), Some(2), "live at once");
    assert_eq!(state.version_on(24).map(|v| v.number), Some(3), "the past keeps its version");
    assert_eq!(state.switches.last(), Some(&Switch { day: 25, version: 2, rollback: true }));
    for day in 26..=28 {
        state.advance(day, &mut observer).expect("in order");
    }
    let relearnt = &state.live_version().matured;
    let expected: Vec<Option<DayMetrics>> = (10..=25).map(|t| m.runs[2].at(t - 10).cloned()).collect();
    assert_eq!(relearnt, &expected, "version 2's matured days, learnt again");
    assert!(matches!(state.rollback(Some(9)), Err(LiveError::Promotion(_))));
    assert!(matches!(state.rollback(Some(2)), Err(LiveError::Promotion(_))), "already live");
    assert_eq!(state.rollback(Some(3)), Ok(3));
}

/// With a shadow period a retrained version serves nothing until the labels of its first
/// days have matured; it replaces the live version only if it scored at least as well on
/// those days, and no retrain starts while it is in shadow.
#[test]
fn a_version_in_shadow_is_promoted_only_if_it_does_not_score_worse() {
    let run = |retrain_day: usize, delta: f64| ModelRun {
        window: 10,
        model: 0,
        seed: 0,
        retrain_day,
        train_seconds: 1.0,
        ages: (0..60).map(|_| Some(metrics(delta))).collect(),
        drift: None,
        rankings: Vec::new(),
        exposures: Default::default(),
        horizons: Vec::new(),
        importance: Default::default(),
    };
    // Version 2 (day 10) is worse than version 1, version 3 (day 20) better.
    let mut observer = RunsObserver::new([run(0, 0.1), run(10, -0.2), run(20, 0.3)]);
    let mut state =
        LiveState::new(LivePolicy::Fixed(Cadence::Weekly), 1, 60, vec![10, 12, 20], Version::new(0, "v1".into(), None));
    state.shadow_days = 3;
    for day in 0..=30 {
        if state.advance(day, &mut observer).expect("in order").is_some_and(|d| d.retrain) {
            state.promote(Version::new(day, format!("v{day}"), None)).expect("candidate");
        }
        if day == 13 {
            assert_eq!(state.live_version().number, 1, "version 2 is still in shadow on day 13");
            assert_eq!(state.candidate, Some(1));
        }
    }
    let pending = &state.decisions[1];
    assert_eq!((pending.day, pending.retrain, pending.shadowing), (12, false, Some(2)), "no retrain in shadow");
    assert_eq!(state.shadows.len(), 2);
    let rejected = &state.shadows[0];
    assert_eq!((rejected.day, rejected.candidate, rejected.live, rejected.days), (14, 2, 1, 3));
    assert!(!rejected.promoted);
    assert!(rejected.candidate_mean < rejected.live_mean);
    let promoted = &state.shadows[1];
    assert_eq!((promoted.day, promoted.candidate, promoted.live, promoted.promoted), (24, 3, 1, true));
    assert_eq!(state.live_version().number, 3);
    assert_eq!(state.version_on(23).map(|v| v.number), Some(1), "predictions stay on version 1 in shadow");
    assert_eq!(state.version_on(24).map(|v| v.number), Some(3));
    assert_eq!(state.switches.iter().map(|s| (s.day, s.version)).collect::<Vec<_>>(), vec![(0, 1), (24, 3)]);
}

#[test]
fn failed_retrains_are_counted_the_last_kept_and_failing_until_their_day_is_processed() {
    let mut state =
        LiveState::new(LivePolicy::Fixed(Cadence::Weekly), 1, 20, vec![5, 10], Version::new(0, "first".into(), None));
    assert!(!state.retrain_failing());
    for at in 0..(RETRAIN_FAILURES_KEPT as i64 + 5) {
        state.retrain_failed(RetrainFailure { day: 5, job_key: "k".into(), error: "no memory".into(), at });
    }
    assert_eq!(state.retrain_failures_total, RETRAIN_FAILURES_KEPT as u64 + 5);
    assert_eq!(state.retrain_failures.len(), RETRAIN_FAILURES_KEPT);
    assert_eq!(state.retrain_failures[0].at, 5, "the oldest are dropped");
    assert!(state.retrain_failing(), "day 5 is not processed yet");
    state.next_day = 6;
    assert!(!state.retrain_failing(), "day 5 was processed since");
}

#[test]
fn a_state_saved_before_bases_existed_goes_on_deciding_on_the_zero_basis() {
    let state =
        LiveState::new(LivePolicy::Fixed(Cadence::Weekly), 1, 20, vec![5, 10], Version::new(0, "v1".into(), None))
            .on_basis(crate::metric::Basis::Median);
    let mut json = serde_json::to_value(&state).expect("json");
    assert_eq!(json["basis"], "median");
    json.as_object_mut().expect("object").remove("basis");
    let old: LiveState = serde_json::from_value(json).expect("an old state loads");
    assert_eq!(old.basis, crate::metric::Basis::Zero);
}
