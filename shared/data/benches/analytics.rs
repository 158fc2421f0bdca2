//! Benchmark of the analytics core (not a timed test; it prints figures):
//! - planning the full grid `configs/sweeps/jp-2020-2025.toml` on the jp_tse1000
//!   calendar (target < 50 ms);
//! - replaying 1,000 adaptive policies over an age matrix of 1,500 models × 252 ages
//!   (target < 1 s);
//! - block-bootstrap intervals for 12 schedules (target < 1 s).
//!
//! ```text
//! cargo bench -p wf-data --bench analytics
//! ```
//!
//! The age matrix is generated (random metrics with a planted decay), since replay cost
//! depends on its shape, not on how the models were trained. The jp calendar comes from
//! `../shared/data/jp_tse1000/jp_tse1000_daily.parquet` (or `WF_BENCH_OHLCV`); without it
//! a weekday calendar of the same length stands in, and the output says so.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wf_data::ohlcv::read_ohlcv;
use wf_shared::age::{AgeMatrix, Line, Metric, ModelRun};
use wf_shared::bootstrap::Bootstrap;
use wf_shared::calendar::TradingCalendar;
use wf_shared::metric::DayMetrics;
use wf_shared::plan::{PlanInput, plan as plan_sweep};
use wf_shared::replay::{LineReplayer, Policy, Trigger};
use wf_shared::spec::{PerformanceMetric, SweepConfig};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn calendar_and_universe(root: &Path) -> (TradingCalendar, Vec<usize>, String) {
    let input = std::env::var("WF_BENCH_OHLCV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data/jp_tse1000/jp_tse1000_daily.parquet"));
    match read_ohlcv(&input) {
        Ok(bars) => {
            let calendar = TradingCalendar::from_dates(bars.date.clone());
            let mut universe = vec![0usize; calendar.len()];
            bars.date.iter().for_each(|d| universe[calendar.index_of(*d).unwrap_or_default()] += 1);
            (calendar, universe, format!("{} ({} dates)", input.display(), calendar_len(&bars.date)))
        }
        Err(error) => {
            let start = chrono::NaiveDate::from_ymd_opt(2019, 1, 4).unwrap_or_default();
            let calendar = TradingCalendar::business_days(start, 1707);
            let universe = vec![991; calendar.len()];
            (calendar, universe, format!("a 1707-day weekday calendar ({error})"))
        }
    }
}

fn calendar_len(dates: &[chrono::NaiveDate]) -> usize {
    TradingCalendar::from_dates(dates.to_vec()).len()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (calendar, universe, source) = calendar_and_universe(&root);
    println!("analytics benchmark on {source}");
    let mut targets = wf_shared::targets::Targets::default();

    // 1. Planning the full grid.
    let spec_path = root.join("configs/sweeps/jp-2020-2025.toml");
    let text = std::fs::read_to_string(&spec_path).unwrap_or_default();
    let config = match SweepConfig::from_toml(&text) {
        Ok(config) => config,
        Err(error) => {
            println!("cannot read {}: {error}", spec_path.display());
            return;
        }
    };
    let features: Vec<String> = wf_shared::FEATURES.iter().map(|f| f.name.to_string()).collect();
    // Per-day digests as a real panel of this calendar has them (their values do not
    // change the planner's work).
    let digests = wf_shared::dataset::PanelDigests::placeholder(0, calendar.len(), &features, &config.horizons);
    let input = PlanInput {
        calendar: &calendar,
        digests: &digests,
        feature_names: &features,
        daily_universe: &universe,
        horizons: &config.horizons,
    };
    let mut timings = Vec::new();
    let mut planned = None;
    for _ in 0..20 {
        let started = Instant::now();
        let result = plan_sweep(&config, &input);
        timings.push(started.elapsed().as_secs_f64());
        planned = Some(result);
    }
    let plan = match planned {
        Some(Ok(plan)) => plan,
        Some(Err(error)) => {
            println!("planning failed: {error}");
            return;
        }
        None => return,
    };
    let plan_ms = median(timings) * 1e3;
    println!(
        "plan full grid           {plan_ms:>8.2} ms  {} jobs by window x cadence -> {} distinct trainings ({:.1}% saved)  (target < 50 ms: {})",
        plan.jobs_before_dedup,
        plan.jobs.len(),
        plan.saving() * 100.0,
        targets.at_most("plan the full grid (s)", plan_ms / 1e3, 0.05)
    );

    // 1b. A spec that would expand to about 10^9 jobs is refused before planning.
    let mut huge = config.clone();
    huge.train_windows = (1..=1000).collect();
    huge.cadences = vec![wf_shared::cadence::Cadence::TradingDays(1)];
    if let Some(model) = huge.models.first_mut() {
        model.seeds = (0..1000).collect();
    }
    let started = Instant::now();
    let refused = plan_sweep(&huge, &input);
    let refuse_ms = started.elapsed().as_secs_f64() * 1e3;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_else(|| "not refused".into());
    println!(
        "refuse a 10^9-job spec   {refuse_ms:>8.2} ms  {message}  (target well under 100 ms: {})",
        targets.at_most("refuse a huge spec (s)", refuse_ms / 1e3, 0.1)
    );

    // 2. Replaying 1,000 policies over 1,500 models x 252 ages.
    let (lines, runs_per_line, ages) = (3u32, 500usize, 252usize);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let runs: Vec<ModelRun> = (0..lines)
        .flat_map(|line| (0..runs_per_line).map(move |i| (line, i)))
        .map(|(line, i)| ModelRun {
            window: 126 * (line + 1),
            model: 0,
            seed: 0,
            retrain_day: 300 + i * 2,
            train_seconds: 1.0,
            ages: (0..ages)
                .map(|age| {
                    let delta = 0.05 * (-(age as f64) / 60.0).exp() + 0.1 * (rng.random::<f64>() - 0.5);
                    Some(DayMetrics {
                        p_at_k: 0.5 + delta,
                        base_rate: 0.5,
                        median_p_at_k: 0.5 + delta,
                        median_base_rate: 0.5,
                        rank_ic: Some(delta / 2.0),
                        spread: delta / 100.0,
                        top_k_mean: 0.0,
                        stocks: 991,
                        k: 50,
                    })
                })
                .collect(),
            drift: None,
            rankings: Vec::new(),
            exposures: Default::default(),
            horizons: Vec::new(),
            importance: Default::default(),
        })
        .collect();
    let matrix = AgeMatrix { horizon: 5, max_age: ages as u32, runs, basis: Default::default() };
    let policies: Vec<Policy> = (0..1000)
        .map(|i| {
            let performance = Trigger::Performance {
                metric: PerformanceMetric::DeltaPAtK,
                tau: -0.05 + (i % 25) as f64 * 0.004,
                lookback: 5 + (i / 25 % 8) as u32 * 5,
            };
            let age = Trigger::Age { max_age: 21 + (i / 200) as u32 * 21 };
            Policy { triggers: if i % 2 == 0 { vec![performance] } else { vec![performance, age] } }
        })
        .collect();
    let candidates: Vec<usize> = (0..runs_per_line).map(|i| 300 + i * 2).collect();
    let started = Instant::now();
    let mut retrains = 0usize;
    let mut checksum = 0.0;
    for window in [126, 252, 378] {
        let Some(replayer) = LineReplayer::new(&matrix, Line { window, model: 0, seed: 0 }) else { continue };
        for policy in &policies {
            let replay = replayer.adaptive(policy, &candidates);
            retrains += replay.retrain_days.len();
            let series = replay.series(&matrix, Metric::DeltaPAtK);
            checksum += series.iter().filter(|v| v.is_finite()).sum::<f64>();
        }
    }
    let replay_s = started.elapsed().as_secs_f64();
    println!(
        "replay 1000 policies     {:>8.2} ms  over {} models x {ages} ages, 3 lines, {retrains} retrains in all (checksum {checksum:.1})  (target < 1 s: {})",
        replay_s * 1e3,
        matrix.runs.len(),
        targets.at_most("replay 1000 policies (s)", replay_s, 1.0)
    );

    // 3. Bootstrap intervals for 12 schedules.
    let Some(replayer) = LineReplayer::new(&matrix, Line { window: 126, model: 0, seed: 0 }) else { return };
    let series: Vec<Vec<f64>> = policies
        .iter()
        .take(12)
        .map(|p| replayer.adaptive(p, &candidates).series(&matrix, Metric::DeltaPAtK))
        .collect();
    let bootstrap = Bootstrap { block: 5, samples: 1000, seed: 7 };
    let started = Instant::now();
    let intervals: Vec<_> = series.iter().map(|s| bootstrap.mean_interval(s)).collect();
    let differences: Vec<_> =
        series.iter().skip(1).map(|s| bootstrap.paired_difference_interval(s, &series[0])).collect();
    let bootstrap_s = started.elapsed().as_secs_f64();
    println!(
        "bootstrap 12 schedules   {:>8.2} ms  {} mean + {} paired intervals, {} days each, 1000 resamples, block 5  (target < 1 s: {})",
        bootstrap_s * 1e3,
        intervals.iter().flatten().count(),
        differences.iter().flatten().count(),
        series[0].len(),
        targets.at_most("bootstrap 12 schedules (s)", bootstrap_s, 1.0)
    );
    println!("{}", targets.summary());
    std::process::exit(targets.exit_code());
}
