//! `wf live simulate`: see [`crate::live`].

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use wf_data::dataset::load_dataset;
use wf_proto::stored::{Stored, seal};
use wf_proto::v1;
use wf_shared::age::JobResult;
use wf_shared::live::LivePolicy;
use wf_shared::plan::{Job, identity_differences};
use wf_worker::device::DeviceChoice;
use wf_worker::job::run_job;

use super::Outcome;
use super::plan::{plan_sweep, read_spec};
use super::serve::runtime;
use crate::artifact::ArtifactStore;
use crate::cli::SimulateArgs;
use crate::live::{Deployment, Source, daily_csv, decisions_csv, simulate as run_simulation, versions_csv};

#[derive(Debug, Serialize)]
struct Summary<'a> {
    spec: &'a str,
    model: &'a str,
    window: u32,
    seed: u64,
    policy: String,
    first_date: String,
    last_date: String,
    days: usize,
    decisions: usize,
    retrain_dates: Vec<String>,
    /// The same, as indices on the panel's calendar (as reports give schedules' days).
    retrain_days: Vec<usize>,
    trained: usize,
    reused: usize,
    mean_delta_p_at_k: f64,
    mean_rank_ic: f64,
    unplanned_fires: Vec<String>,
    out: String,
}

pub fn simulate(args: SimulateArgs) -> anyhow::Result<Outcome> {
    let policy: LivePolicy = args.policy.parse().map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
    let device =
        args.device.parse::<DeviceChoice>().map_err(|reason| anyhow::anyhow!("--device: {reason}"))?.device()?;
    let config = read_spec(&args.spec)?;
    let model = config.models.iter().position(|m| m.name == args.model).ok_or_else(|| {
        let names: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
        anyhow::anyhow!("--model: the spec has no model {:?} (it has {})", args.model, names.join(", "))
    })?;
    if !config.train_windows.contains(&args.window) {
        anyhow::bail!("--window: {} is not a train window of the spec ({:?})", args.window, config.train_windows);
    }
    let seeds = &config.models[model].seeds;
    let seed = args.seed.or_else(|| seeds.first().copied()).unwrap_or(0);
    if !seeds.contains(&seed) {
        anyhow::bail!("--seed: {seed} is not a seed of model {} ({seeds:?})", args.model);
    }
    let dataset = load_dataset(&config.panel, &config.horizons, config.features.as_deref())?;
    let plan = plan_sweep(&config, &dataset)?;
    let calendar = dataset.panel.calendar();
    let from = calendar.index_on_or_after(args.from.unwrap_or(config.start));
    let to = match args.to {
        Some(date) => calendar.index_on_or_after(date + chrono::Duration::days(1)).saturating_sub(1),
        None => usize::MAX,
    };
    let deployment = Deployment { model, window: args.window, seed, policy: policy.clone(), from, to };

    let runtime = runtime()?;
    let artifacts = args.artifacts.as_ref().map(|dir| ArtifactStore::open(&dir.display().to_string())).transpose()?;
    let stored = |job: &Job| -> Option<JobResult> {
        let store = artifacts.as_ref()?;
        let bytes = runtime.block_on(store.result(&job.key)).ok()??;
        let checked = Stored::read(&bytes)
            .and_then(|s| s.result_for(&job.identity, |a, b| identity_differences(a, b, 4).join("; ")))
            .map_err(|refusal| refusal.to_string())
            .and_then(|result| JobResult::try_from(result).map_err(|e| e.to_string()));
        match checked {
            Ok(result) => Some(result),
            Err(reason) => {
                eprintln!("stored result of job {} not reused ({reason}); training it", job.key.short());
                None
            }
        }
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:32} {msg}  [{elapsed}]").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut result = |job: &Job| -> Result<(JobResult, Source), String> {
        if let Some(result) = stored(job) {
            return Ok((result, Source::Reused));
        }
        let date = calendar.date(job.retrain_day).map(|d| d.to_string()).unwrap_or_default();
        bar.set_message(format!("training the retrain of {date}"));
        let output = run_job(&dataset.panel, &config, job, &device).map_err(|e| e.to_string())?;
        let result = output.result();
        if let Some(store) = &artifacts {
            let bytes = Bytes::from(seal(&job.identity, &v1::JobResult::from(result.clone())));
            let write = async {
                if !store.has_result(&job.key).await? {
                    store.put_result(&job.key, bytes).await?;
                }
                Ok::<_, crate::artifact::ArtifactError>(())
            };
            runtime.block_on(write).map_err(|e| format!("cannot store the result: {e}"))?;
        }
        Ok((result, Source::Trained))
    };
    let last = plan.last_matured_day.min(to);
    bar.set_length(last.saturating_sub(from) as u64 + 1);
    let mut progress = |day: usize| {
        bar.set_position(day.saturating_sub(from) as u64 + 1);
        if let Some(date) = calendar.date(day) {
            bar.set_message(date.to_string());
        }
    };
    let simulation = run_simulation(&config, &plan, &deployment, &mut result, &mut progress);
    bar.finish_and_clear();
    let simulation = simulation?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let write = |name: &str, text: String| {
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("daily.csv", daily_csv(&simulation, calendar))?;
    write("decisions.csv", decisions_csv(&simulation, calendar))?;
    write("versions.csv", versions_csv(&simulation, calendar))?;
    write("live.json", serde_json::to_string_pretty(&simulation)?)?;

    let date = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
    let (delta, rank_ic) = simulation.means();
    let summary = Summary {
        spec: &config.name,
        model: &args.model,
        window: args.window,
        seed,
        policy: policy.to_string(),
        first_date: simulation.daily.first().map(|d| date(d.day)).unwrap_or_default(),
        last_date: simulation.daily.last().map(|d| date(d.day)).unwrap_or_default(),
        days: simulation.daily.len(),
        decisions: simulation.state.decisions.len(),
        retrain_dates: simulation.retrain_days().into_iter().map(date).collect(),
        retrain_days: simulation.retrain_days(),
        trained: simulation.sources.iter().filter(|s| **s == Source::Trained).count(),
        reused: simulation.sources.iter().filter(|s| **s == Source::Reused).count(),
        mean_delta_p_at_k: delta,
        mean_rank_ic: rank_ic,
        unplanned_fires: simulation.unplanned.iter().map(|d| date(*d)).collect(),
        out: args.out.display().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} · {} window {} seed {} · policy {}\n{} .. {}: {} days, {} decisions, {} models ({} trained, {} reused)",
            summary.spec,
            summary.model,
            summary.window,
            summary.seed,
            summary.policy,
            summary.first_date,
            summary.last_date,
            summary.days,
            summary.decisions,
            summary.retrain_dates.len(),
            summary.trained,
            summary.reused
        );
        println!("mean ΔP@K {delta:+.4}, mean RankIC {rank_ic:+.4}");
        println!("retrain dates: {}", summary.retrain_dates.join(" "));
        if !summary.unplanned_fires.is_empty() {
            println!("fired without a planned job (no retrain): {}", summary.unplanned_fires.join(" "));
        }
        println!("decisions, versions and the daily series: {}", summary.out);
    }
    Ok(Outcome::Success)
}
