//! What a job's diagnostics cost on the jp grid (`configs/sweeps/jp-2020-2025.toml`): the
//! style exposures, the permutation importance and the metrics of the non-primary
//! horizons, against the whole job. Target (issue 18): under 10% of a job's time.
//!
//! `cargo bench -p wf-coordinator --bench diagnostics` (one thread per job, as the grid
//! runs with a worker per CPU; `RAYON_NUM_THREADS` overrides)
//!
//! The panel is prepared here from `../shared/data/jp_tse1000/jp_tse1000_daily.parquet`
//! (or `WF_BENCH_OHLCV`); without the data the bench says so and stops. It runs
//! `WF_BENCH_JOBS` (default 2) jobs per window of the grid's `mlp` and of its `-vol_60`
//! baseline, one at a time, each in full as a worker does (`run_job`: train, score every
//! horizon, exposures, drift, importance). Then, on each job's trained model, it times
//! each diagnostic again on its own. Printed per job and in total: the job's time, the
//! diagnostics' time, the job without them (the difference) and the share; and the share
//! over the whole grid, weighting each kind by its count of jobs.

use std::time::Instant;

use candle_core::Device;
use wf_data::dataset::load_dataset;
use wf_shared::exposure::Exposures;
use wf_shared::metric::{day_metrics, spearman};
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelKind, SweepConfig};
use wf_worker::importance::{self, permutation_importance};
use wf_worker::job::run_job;
use wf_worker::train::{TrainRequest, score_range_columns};

#[global_allocator]
static GLOBAL: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

type Outcome<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Seconds of one job and of each diagnostic re-run on its own.
#[derive(Debug, Default, Clone, Copy)]
struct Timing {
    job: f64,
    exposures: f64,
    importance: f64,
    horizons: f64,
    /// Importance measured on every validation day with whole passes (not in the job).
    reference: f64,
    /// Spearman of the kept loss rises with the reference's.
    agreement: Option<f64>,
    /// Features of the reference's top 5 in the kept top 5.
    top_shared: usize,
}

impl Timing {
    fn diagnostics(&self) -> f64 {
        self.exposures + self.importance + self.horizons
    }

    fn exposures_and_importance(&self) -> f64 {
        self.exposures + self.importance
    }
}

#[allow(unsafe_code)]
fn main() -> Outcome<()> {
    // As the grid runs (`wf run --workers` one per CPU): one thread per job, and none of
    // candle's per-product reading of /proc/cpuinfo (`wf_worker::threads::env_for`).
    wf_worker::allocator::keep_freed_memory();
    for (name, value) in
        wf_worker::threads::env_for(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    {
        // SAFETY: the first statement of `main`: no other thread exists yet.
        unsafe { std::env::set_var(name, value) };
    }
    let dir = tempfile::tempdir()?;
    let Some(text) = wf_coordinator::testing::jp_bench_spec(dir.path(), "configs/sweeps/jp-2020-2025.toml")? else {
        return Ok(());
    };
    let config = SweepConfig::from_toml(&text)?;
    let dataset = load_dataset(&config.panel, &config.horizons, config.features.as_deref())?;
    let panel = &dataset.panel;
    let plan = plan_panel(&config, panel, &dataset.digests).map_err(|e| e.to_string())?;
    let per_window: usize = std::env::var("WF_BENCH_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let device = Device::Cpu;
    let column = config.horizons.iter().position(|h| *h == config.primary_horizon).unwrap_or(0);
    println!(
        "jp grid: {} jobs; {} features, {} horizons, max_age {}; {per_window} job(s) per window and kind, one at a time",
        plan.jobs.len(),
        panel.features().len(),
        config.horizons.len(),
        config.max_age
    );
    let kinds = [ModelKind::Mlp, ModelKind::Factor];
    let mut totals = Vec::new();
    // The largest share of exposures and importance in one job.
    let mut worst: f64 = 0.0;
    for kind in kinds {
        let Some(model) =
            config.models.iter().position(|m| m.kind == kind && (kind != ModelKind::Factor || m.name == "-vol_60"))
        else {
            continue;
        };
        let name = &config.models[model].name;
        let count = plan.jobs.iter().filter(|j| config.models[j.model].kind == kind).count();
        let mut total = Timing::default();
        for window in &config.train_windows {
            let jobs: Vec<_> = plan.jobs.iter().filter(|j| j.model == model && j.window == *window).collect();
            // Spread over the period: evenly spaced jobs of the window.
            for index in 0..per_window.min(jobs.len()) {
                let job = jobs[index * jobs.len() / per_window.min(jobs.len())];
                let started = Instant::now();
                let output = run_job(panel, &config, job, &device)?;
                let mut timing = Timing { job: started.elapsed().as_secs_f64(), ..Timing::default() };
                let scores = score_range_columns(output.ranker()?, panel, job.score_days.clone(), &device)?;
                let primary: Vec<Vec<f64>> =
                    scores.iter().map(|d| d.get(column).cloned().unwrap_or_default()).collect();

                let started = Instant::now();
                let exposures = Exposures::measure(panel, job.score_days.clone(), &primary);
                timing.exposures = started.elapsed().as_secs_f64();
                assert_eq!(exposures, output.exposures, "the re-run measures what the job kept");

                let started = Instant::now();
                let mut kept = 0;
                for (other, horizon) in config.horizons.iter().enumerate().filter(|(c, _)| *c != column) {
                    let target = panel.target(*horizon).ok_or("target")?;
                    for (day, day_scores) in job.score_days.clone().zip(&scores) {
                        if let Some(s) = day_scores.get(other) {
                            kept += usize::from(day_metrics(s, &target[panel.rows_of_day(day)], config.k).is_some());
                        }
                    }
                }
                timing.horizons = started.elapsed().as_secs_f64();
                assert!(kept > 0);

                if let Some(params) = output.spec.train_params() {
                    let weights = params.horizon_weights_for(&config);
                    let request = TrainRequest::of_job(panel, &config, job, params, &weights);
                    let started = Instant::now();
                    let importance =
                        permutation_importance(output.ranker()?, &request, config.primary_horizon, &device)?;
                    timing.importance = started.elapsed().as_secs_f64();
                    assert_eq!(importance, output.importance, "the re-run measures what the job kept");

                    // The reference: every validation day, the whole model per pass (the
                    // method before the stride and the input product), timed, and how
                    // well the kept ranking of features agrees with it.
                    let started = Instant::now();
                    let every = importance::measure(
                        output.ranker()?,
                        &request,
                        config.primary_horizon,
                        &device,
                        importance::Method { stride: 1, product: false },
                    )?;
                    timing.reference = started.elapsed().as_secs_f64();
                    let as_f64 = |v: &[f32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>();
                    timing.agreement = spearman(&as_f64(&importance.loss), &as_f64(&every.loss));
                    let top = |v: &[f32]| {
                        let mut order: Vec<usize> = (0..v.len()).collect();
                        order.sort_by(|a, b| v[*b].total_cmp(&v[*a]));
                        order.truncate(5);
                        order
                    };
                    let (kept, reference) = (top(&importance.loss), top(&every.loss));
                    timing.top_shared = kept.iter().filter(|f| reference.contains(f)).count();
                }
                worst = worst.max(timing.exposures_and_importance() / timing.job);
                println!(
                    "{name:>8} window {window:>3} retrain {}: job {:6.3} s; exposures {:6.1} ms, importance {:6.1} ms \
                     ({} days x {} features), other horizons {:5.1} ms; without them {:6.3} s; exposures and \
                     importance {:4.1}%, with other horizons {:4.1}%",
                    panel.calendar().date(job.retrain_day).map(|d| d.to_string()).unwrap_or_default(),
                    timing.job,
                    timing.exposures * 1e3,
                    timing.importance * 1e3,
                    output.importance.days,
                    output.importance.loss.len(),
                    timing.horizons * 1e3,
                    timing.job - timing.diagnostics(),
                    100.0 * timing.exposures_and_importance() / timing.job,
                    100.0 * timing.diagnostics() / timing.job
                );
                if timing.reference > 0.0 {
                    println!(
                        "         importance every day, whole passes (reference): {:6.1} ms; loss-rise ranking \
                         against it: Spearman {:.2}, {} of its top 5",
                        timing.reference * 1e3,
                        timing.agreement.unwrap_or(f64::NAN),
                        timing.top_shared
                    );
                }
                total.job += timing.job;
                total.exposures += timing.exposures;
                total.importance += timing.importance;
                total.horizons += timing.horizons;
            }
        }
        let runs = per_window * config.train_windows.len();
        println!(
            "{name}: {runs} jobs: job {:.3} s each, without diagnostics {:.3} s; exposures {:.1} ms, importance {:.1} \
             ms, other horizons {:.1} ms; diagnostics {:.1}% of the job",
            total.job / runs as f64,
            (total.job - total.diagnostics()) / runs as f64,
            total.exposures * 1e3 / runs as f64,
            total.importance * 1e3 / runs as f64,
            total.horizons * 1e3 / runs as f64,
            100.0 * total.diagnostics() / total.job
        );
        totals.push((
            count,
            total.job / runs as f64,
            total.diagnostics() / runs as f64,
            total.exposures_and_importance() / runs as f64,
        ));
    }
    let job: f64 = totals.iter().map(|(n, job, _, _)| *n as f64 * job).sum();
    let diagnostics: f64 = totals.iter().map(|(n, _, d, _)| *n as f64 * d).sum();
    let measured: f64 = totals.iter().map(|(n, _, _, m)| *n as f64 * m).sum();
    println!(
        "whole grid ({} jobs by kind: {}): exposures and importance {:.1}% of the job time (target < 10%), with the \
         other horizons' metrics {:.1}%: {:.0} s of {:.0} s on one core; the most in one job: {:.1}%",
        totals.iter().map(|t| t.0).sum::<usize>(),
        totals.iter().map(|t| t.0.to_string()).collect::<Vec<_>>().join(" + "),
        100.0 * measured / job,
        100.0 * diagnostics / job,
        diagnostics,
        job,
        100.0 * worst
    );
    let mut targets = wf_shared::targets::Targets::default();
    println!(
        "exposures and importance, share of the job time, target < 10%: {}",
        targets.at_most("exposures and importance's share of the job time", measured / job, 0.10)
    );
    if targets.exit_code() != 0 {
        return Err(targets.summary().into());
    }
    Ok(())
}
