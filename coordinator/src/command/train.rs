//! `wf train SPEC --job N`: train and score one job locally and print its metrics.

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

use super::Outcome;
use super::plan::{plan_on, read_spec};
use crate::cli::TrainArgs;
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
}

pub fn run(args: TrainArgs) -> anyhow::Result<Outcome> {
    let device =
        args.device.parse::<DeviceChoice>().map_err(|reason| anyhow::anyhow!("--device: {reason}"))?.device()?;
    let config = read_spec(&args.spec)?;
    let spinner = stage_spinner();
    spinner.set_message("loading the dataset and planning");
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
    let output = data.panel(&config, job, &DataRoots::Any).and_then(|panel| {
        let output = run_job(&panel, &config, job, &device)?;
        let file = args.save.as_ref().map(|_| model_file(&output, job, &panel, &data.content_hash(), &config));
        Ok((output, file))
    });
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
        delta_p_at_k: Summary::of(&series(Metric::DeltaPAtK)),
        delta_p_at_k_interval: bootstrap.mean_interval(&series(Metric::DeltaPAtK)),
        p_at_k: Summary::of(&series(Metric::PAtK)),
        rank_ic,
        rank_ic_interval: bootstrap.mean_interval(&series(Metric::RankIc)),
        icir: rank_ic.ratio(),
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
