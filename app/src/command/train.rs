//! `wf train SPEC --job N`: train and score one job locally and print its metrics.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use wf_data::dataset::DataRoots;
use wf_shared::age::Metric;
use wf_shared::bootstrap::{Bootstrap, Interval};
use wf_shared::metric::Summary;
use wf_worker::artifact::model_file;
use wf_worker::device::DeviceChoice;
use wf_worker::job::{JobData, run_job};
use wf_worker::train::TrainStats;

use super::plan::{plan_on, read_spec};
use crate::cli::TrainArgs;
use crate::outcome::Outcome;
use crate::progress::stage_spinner;

#[derive(Debug, Serialize)]
struct TrainReport {
    job: usize,
    key: String,
    model: String,
    seed: u64,
    window: u32,
    retrain_date: String,
    train_first: String,
    train_last: String,
    stats: TrainStats,
    days_scored: usize,
    delta_p_at_k: Summary,
    delta_p_at_k_interval: Option<Interval>,
    p_at_k: Summary,
    rank_ic: Summary,
    rank_ic_interval: Option<Interval>,
    icir: f64,
    time: JobTime,
}

/// Where the job's time went, in seconds (training's own parts are in `stats.time`).
#[derive(Debug, Serialize)]
struct JobTime {
    /// Opening the dataset (its metadata, or the whole of it) and planning.
    planning: f64,
    /// Reading the job's days (nothing more when the dataset was loaded whole).
    reading: f64,
    training: f64,
    /// Scoring the test days, their metrics, drift and permutation importance.
    scoring_and_diagnostics: f64,
}

pub fn run(args: TrainArgs) -> anyhow::Result<Outcome> {
    let device =
        args.device.parse::<DeviceChoice>().map_err(|reason| anyhow::anyhow!("--device: {reason}"))?.device()?;
    let config = read_spec(&args.spec)?;
    let spinner = stage_spinner();
    spinner.set_message("loading the dataset and planning");
    let started = Instant::now();
    // A prepared panel file is planned on its metadata and the job reads its own days only,
    // as on a worker; another dataset is loaded whole.
    let data = JobData::open(
        &config.panel,
        &config.horizons,
        config.features.as_deref(),
        &DataRoots::Any,
        wf_worker::job::DAYS_ABOVE_ROWS,
    );
    let planned = data.map_err(anyhow::Error::from).and_then(|data| {
        let mut universe = Vec::new();
        let plan = plan_on(&config, &data.plan_input(&mut universe))?;
        Ok((data, plan))
    });
    let (data, plan) = match planned {
        Ok(planned) => planned,
        Err(error) => {
            spinner.finish_and_clear();
            return Err(error);
        }
    };
    let Some(job) = plan.jobs.get(args.job) else {
        spinner.finish_and_clear();
        anyhow::bail!("--job: the plan has {} jobs (0..{}), not {}", plan.jobs.len(), plan.jobs.len(), args.job);
    };
    let model = &config.models[job.model];
    spinner.set_message(format!("training {} (window {}, seed {})", model.name, job.window, job.seed));
    let planned_at = started.elapsed();
    let mut read_at = planned_at;
    let output = data.panel(&config, job, &DataRoots::Any).and_then(|panel| {
        read_at = started.elapsed();
        let output = run_job(&panel, &config, job, &device)?;
        let file = args.save.as_ref().map(|_| model_file(&output, job, &panel, &data.content_hash(), &config));
        Ok((output, file))
    });
    let ran_at = started.elapsed();
    spinner.finish_and_clear();
    let (output, file) = output?;
    if let (Some(path), Some(file)) = (&args.save, file) {
        let bytes = file.map_err(|reason| anyhow::anyhow!("cannot save the model: {reason}"))?;
        std::fs::write(path, bytes).with_context(|| format!("cannot save the model to {}", path.display()))?;
    }

    let series = |metric: Metric| -> Vec<f64> { output.ages.iter().map(|d| metric.value(d.as_ref())).collect() };
    let bootstrap = Bootstrap {
        block: config.primary_horizon as usize,
        samples: config.bootstrap_samples,
        seed: config.bootstrap_seed,
    };
    let calendar = data.calendar();
    let date = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
    let rank_ic = Summary::of(&series(Metric::RankIc));
    let report = TrainReport {
        job: args.job,
        key: job.key.to_string(),
        model: model.name.clone(),
        seed: job.seed,
        window: job.window,
        retrain_date: date(job.retrain_day),
        train_first: date(job.train_days.start),
        train_last: date(job.train_days.end - 1),
        stats: output.stats.clone(),
        days_scored: output.ages.iter().flatten().count(),
        delta_p_at_k: Summary::of(&series(config.basis.delta())),
        delta_p_at_k_interval: bootstrap.mean_interval(&series(config.basis.delta())),
        p_at_k: Summary::of(&series(config.basis.precision())),
        rank_ic,
        rank_ic_interval: bootstrap.mean_interval(&series(Metric::RankIc)),
        icir: rank_ic.ratio(),
        time: JobTime {
            planning: planned_at.as_secs_f64(),
            reading: (read_at - planned_at).as_secs_f64(),
            training: output.stats.seconds,
            scoring_and_diagnostics: ((ran_at - read_at).as_secs_f64() - output.stats.seconds).max(0.0),
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("failed to serialise the result")?);
        return Ok(Outcome::Success);
    }
    let interval =
        |i: Option<Interval>| i.map_or("no interval".to_string(), |i| format!("[{:.4}, {:.4}]", i.low, i.high));
    let stats = &report.stats;
    println!(
        "job {} of {}: {} seed {}, window {}, retrain {} (key {})",
        args.job,
        plan.jobs.len(),
        report.model,
        report.seed,
        report.window,
        report.retrain_date,
        job.key.short()
    );
    println!(
        "trained on {} ..= {}: {} training + {} validation days, {} epochs (best {}), validation loss {:.4}, {:.2} s on {}",
        report.train_first,
        report.train_last,
        stats.training_days,
        stats.validation_days,
        stats.epochs,
        stats.best_epoch,
        stats.best_validation_loss,
        stats.seconds,
        stats.device
    );
    let (time, steps) = (&report.time, &stats.time);
    let per_step = if steps.step_count > 0 { steps.steps / steps.step_count as f64 * 1e3 } else { 0.0 };
    println!(
        "time: {:.2} s planning, {:.2} s reading its days, {:.2} s training ({:.2} s inputs, {} steps {:.2} s = {:.2} ms each, {:.2} s validation), {:.2} s scoring and diagnostics",
        time.planning,
        time.reading,
        time.training,
        steps.inputs,
        steps.step_count,
        steps.steps,
        per_step,
        steps.validation,
        time.scoring_and_diagnostics
    );
    println!(
        "scored {} days from {}, horizon {}, K {}:",
        report.days_scored, report.retrain_date, config.primary_horizon, config.k
    );
    println!(
        "  mean ΔP@K {:.4} {}  (P@K {:.4}, hit rate {:.2})",
        report.delta_p_at_k.mean,
        interval(report.delta_p_at_k_interval),
        report.p_at_k.mean,
        report.delta_p_at_k.hit_rate
    );
    println!(
        "  mean RankIC {:.4} {}  (ICIR {:.3})",
        report.rank_ic.mean,
        interval(report.rank_ic_interval),
        report.icir
    );
    if let Some(path) = &args.save {
        println!("model saved to {}", path.display());
    }
    Ok(Outcome::Success)
}
