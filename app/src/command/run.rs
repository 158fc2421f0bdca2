//! `wf run SPEC`: the whole sweep on this machine (see `crate::local`), with a
//! progress bar and a summary table at the end.

use crate::local::{self, LocalOptions};
use anyhow::Context;
use wf_shared::job::RetryPolicy;
use wf_worker::device::{DeviceChoice, device_name};

use super::serve::{runtime, shutdown_on_signals};
use crate::cli::RunArgs;
use crate::outcome::Outcome;
use crate::progress;

pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let spec = std::fs::read_to_string(&args.spec).with_context(|| format!("cannot read {}", args.spec.display()))?;
    let choice: DeviceChoice = args.device.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let device = choice.device()?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let artifacts = args.artifacts.clone().unwrap_or_else(|| args.out.join("artifacts").display().to_string());
    let options = LocalOptions {
        workers,
        redis: args.redis.clone(),
        artifacts: artifacts.clone(),
        lease_ms: 60_000,
        retry: RetryPolicy::default(),
        trainers: std::sync::Arc::new(args.trainers.registry()?),
    };
    eprintln!(
        "running {} with {workers} worker(s) on {}, store: {}",
        args.spec.display(),
        device_name(&device),
        args.redis.as_deref().unwrap_or("in memory")
    );
    let started = std::time::Instant::now();
    let mut interrupted = None;
    let finished = runtime()?.block_on(async {
        let interrupt = shutdown_on_signals();
        interrupted = Some(interrupt.clone());
        let bar = progress::sweep_bar(0);
        let finished = local::run(&spec, &options, device, interrupt, |p| progress::show(&bar, p)).await;
        bar.finish_and_clear();
        finished
    })?;
    let progress = &finished.progress;
    eprintln!(
        "sweep {} ({}): {} distinct trainings from {} by window x cadence, {} reused; {} in {:.1} s",
        finished.sweep_id,
        finished.report.name,
        finished.submitted.jobs,
        finished.submitted.jobs_before_dedup,
        finished.submitted.reused,
        progress::describe(progress),
        started.elapsed().as_secs_f64()
    );
    if args.json {
        println!("{}", finished.report.to_json()?);
    } else {
        print!("{}", finished.report.verdict_text());
        println!(
            "out-of-sample quality at horizon {} (ΔP@K = P@K − base rate, a hit being a return above {}; 95% \
             moving-block bootstrap intervals):",
            finished.report.horizon,
            match finished.report.basis {
                wf_shared::metric::Basis::Zero => "zero",
                wf_shared::metric::Basis::Median => "the day's median",
            }
        );
        if finished.report.basis == wf_shared::metric::Basis::Zero {
            println!("zero basis: {}", wf_shared::verdict::ZERO_BASIS_CALIBRATION);
        }
        print!("{}", finished.report.summary_table());
    }
    eprintln!("report: {}", finished.report_location);
    eprintln!("results: {artifacts}");
    if interrupted.is_some_and(|token| token.is_cancelled()) {
        // The sweep was cancelled; the report covers the jobs that had finished, and a
        // later run of the same spec on the same --out reuses them.
        eprintln!("interrupted: the sweep was cancelled; the report covers the jobs done so far");
        return Ok(Outcome::Interrupted);
    }
    Ok(if progress.dead_lettered > 0 { Outcome::GateFailed } else { Outcome::Success })
}
