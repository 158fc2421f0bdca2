//! `wf live simulate | deploy | ingest | advance | status | list | rollback` and `wf
//! predict`: see [`wf_live`]. Its calls are awaited on a runtime of this command's own.

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use wf_data::dataset::load_dataset;
use wf_proto::stored::{Stored, seal};
use wf_proto::v1;
use wf_shared::age::JobResult;
use wf_shared::decision::{LivePolicy, RECENT_DAYS};
use wf_shared::plan::Job;
use wf_shared::spec::SweepConfig;
use wf_worker::device::DeviceChoice;
use wf_worker::job::run_job;

use super::plan::{plan_sweep, read_spec};
use super::serve::runtime;
use crate::cli::{
    AdvanceArgs, DeployArgs, LineArgs, LiveCommand, LiveIdArgs, LiveIngestArgs, PredictArgs, RollbackArgs, SimulateArgs,
};
use crate::outcome::Outcome;
use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::scheduler::result_for_planned;
use wf_live::simulate::{Deployment, Source, daily_csv, decisions_csv, simulate as run_simulation, versions_csv};
use wf_live::{DeploymentRecord, Deployments, Opened, Prediction, Predictor, Ranked, deployment_id};
use wf_worker::faults::Faults;

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

/// A deployment's line and policy, checked against its spec.
struct Line {
    config: SweepConfig,
    model: usize,
    seed: u64,
    policy: LivePolicy,
}

impl Line {
    /// Reads the spec and checks the model, window, seed and policy, naming the option.
    fn of(args: &LineArgs) -> anyhow::Result<Self> {
        let policy: LivePolicy = args.policy.parse().map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
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
        Ok(Self { config, model, seed, policy })
    }
}

fn device_of(choice: &str) -> anyhow::Result<candle_core::Device> {
    Ok(choice.parse::<DeviceChoice>().map_err(|reason| anyhow::anyhow!("--device: {reason}"))?.device()?)
}

pub fn simulate(args: SimulateArgs) -> anyhow::Result<Outcome> {
    let device = device_of(&args.device)?;
    let Line { config, model, seed, policy } = Line::of(&args.line)?;
    let dataset = load_dataset(&config.panel, &config.horizons, config.features.as_deref())?;
    let plan = plan_sweep(&config, &dataset)?;
    let calendar = dataset.panel.calendar();
    let from = calendar.index_on_or_after(args.line.from.unwrap_or(config.start));
    let to = match args.to {
        Some(date) => calendar.index_on_or_before(date).unwrap_or(0),
        None => usize::MAX,
    };
    let deployment = Deployment { model, window: args.line.window, seed, policy: policy.clone(), from, to };

    let runtime = runtime()?;
    let artifacts = args.artifacts.as_ref().map(|dir| ArtifactStore::open(&dir.display().to_string())).transpose()?;
    let stored = |job: &Job| -> Option<JobResult> {
        let store = artifacts.as_ref()?;
        let bytes = runtime.block_on(store.result(&job.key)).ok()??;
        let checked = Stored::read(&bytes)
            .and_then(|stored| result_for_planned(stored, &job.identity))
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
                Ok::<_, wf_coordinator::artifact::ArtifactError>(())
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
    let simulation = run_simulation(&config, &dataset.panel, &plan, &deployment, &mut result, &mut progress);
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
        model: &args.line.model,
        window: args.line.window,
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

pub fn run(command: LiveCommand) -> anyhow::Result<Outcome> {
    match command {
        LiveCommand::Simulate(args) => simulate(args),
        command => runtime()?.block_on(async move {
            match command {
                LiveCommand::Simulate(_) => unreachable!("simulate runs above"),
                LiveCommand::Deploy(args) => deploy(args).await,
                LiveCommand::Ingest(args) => ingest(args).await,
                LiveCommand::Advance(args) => advance(args).await,
                LiveCommand::Status(args) => status(args).await,
                LiveCommand::List(args) => list(args).await,
                LiveCommand::Rollback(args) => rollback(args).await,
            }
        }),
    }
}

fn deployments(artifacts: &str) -> anyhow::Result<Deployments> {
    Ok(Deployments::new(std::sync::Arc::new(ArtifactStore::open(artifacts)?)).with_faults(Faults::from_env()))
}

async fn deploy(args: DeployArgs) -> anyhow::Result<Outcome> {
    let device = device_of(&args.device)?;
    let Line { config, seed, policy, .. } = Line::of(&args.line)?;
    let spec = std::fs::read_to_string(&args.line.spec)
        .with_context(|| format!("cannot read {}", args.line.spec.display()))?;
    if let Some(id) = &args.id
        && (id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        anyhow::bail!("--id: 1 to 64 of a-z, A-Z, 0-9, - and _");
    }
    wf_coordinator::auth::check_tenant(&args.tenant).map_err(|reason| anyhow::anyhow!("--tenant: {reason}"))?;
    let mut record = DeploymentRecord {
        id: String::new(),
        spec,
        model: args.line.model.clone(),
        window: args.line.window,
        seed,
        policy: policy.to_string(),
        from: args.line.from.unwrap_or(config.start),
        shadow_days: args.shadow,
        tenant: args.tenant.clone(),
    };
    record.id = args.id.clone().unwrap_or_else(|| deployment_id(&record));
    let spinner = crate::progress::stage_spinner();
    spinner.set_message(format!("deploying {}: training its first version", record.id));
    let deployments = deployments(&args.store.artifacts)?;
    let deployed = deployments.deploy(record.clone(), &device).await;
    spinner.finish_and_clear();
    let opened = deployed?;
    let first = opened.state.as_ref().map_or(0, |state| state.live_version().retrain_day);
    println!("{}", record.id);
    eprintln!(
        "deployed {} ({} window {} seed {}, policy {}): version 1 retrained {}; `wf live advance {}` processes its days",
        record.id,
        record.model,
        record.window,
        record.seed,
        record.policy,
        opened.date(first),
        record.id
    );
    Ok(Outcome::Success)
}

/// Adds days to the panel file the deployment's spec names.
async fn ingest(args: LiveIngestArgs) -> anyhow::Result<Outcome> {
    let record = deployments(&args.store.artifacts)?.record(&args.id).await?;
    let config =
        SweepConfig::from_toml(&record.spec).with_context(|| format!("{}: its spec no longer reads", args.id))?;
    if wf_data::dataset::synth_spec(&config.panel).is_some() {
        anyhow::bail!(
            "{}: its dataset {} is synthetic; ingest adds days to a prepared panel file",
            args.id,
            config.panel
        );
    }
    let panel = std::path::PathBuf::from(&config.panel);
    let ingested = super::data::run_ingest(&panel, &args.days, None)?;
    eprintln!(
        "`wf live advance {}` processes the new days (through {})",
        args.id,
        ingested.days.last().map_or_else(String::new, ToString::to_string)
    );
    Ok(Outcome::Success)
}

async fn advance(args: AdvanceArgs) -> anyhow::Result<Outcome> {
    let device = device_of(&args.device)?;
    let deployments = deployments(&args.store.artifacts)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:32} {pos}/{len} days  {msg}  [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut first: Option<usize> = None;
    let mut progress = |opened: &Opened, day: usize, last: usize| {
        let start = *first.get_or_insert(day);
        bar.set_length((last + 1).saturating_sub(start) as u64);
        bar.set_position((day + 1 - start) as u64);
        bar.set_message(opened.date(day));
    };
    let trainer = deployments.local_trainer(device.clone());
    let advanced = deployments.advance(&args.id, args.to, &device, &trainer, &mut progress).await;
    bar.finish_and_clear();
    let wf_live::Advanced { opened, days: processed, .. } = advanced?;
    let state = opened.state.as_ref().ok_or_else(|| anyhow::anyhow!("{} has no state", args.id))?;
    let live = state.live_version();
    let retrains = state.decisions.iter().filter(|d| d.retrain).count();
    println!(
        "{}: {processed} days processed, up to {}; {} decisions, {retrains} retrains; live: version {} (retrained {})",
        args.id,
        opened.date(state.next_day.saturating_sub(1)),
        state.decisions.len(),
        live.number,
        opened.date(live.retrain_day)
    );
    Ok(Outcome::Success)
}

#[derive(Debug, Serialize)]
struct VersionView {
    number: u32,
    retrain_date: String,
    job_key: String,
}

/// What `wf live status` shows of one deployment.
#[derive(Debug, Serialize)]
struct StatusView {
    id: String,
    tenant: String,
    model: String,
    window: u32,
    seed: u64,
    policy: String,
    last_processed: String,
    live_version: u32,
    live_retrained: String,
    live_job: String,
    /// Trading days from the live version's retrain date to the last processed day.
    age_days: usize,
    /// Mean ΔP@K and RankIC of the live version's last (up to) 21 matured days.
    recent_delta_p_at_k: Option<f64>,
    recent_rank_ic: Option<f64>,
    recent_days: usize,
    versions: usize,
    decisions: usize,
    retrains: usize,
    rollbacks: usize,
    /// The next day the policy is decided on; `None` when the plan has none left.
    next_decision: Option<String>,
    /// The version in shadow, if any, and the last shadow period's outcome.
    in_shadow: Option<u32>,
    last_shadow: Option<String>,
    /// Retrains that failed (all time), and the last one: `DATE (job KEY): ERROR`, with
    /// whether the deployment is still stuck on it.
    retrain_failures: u64,
    last_retrain_failure: Option<String>,
    retrain_failing: bool,
    /// Every version: number, retrain date, job key.
    version_list: Vec<VersionView>,
    last_decisions: Vec<String>,
}

async fn status_view(deployments: &Deployments, id: &str) -> anyhow::Result<StatusView> {
    let record = deployments.record(id).await?;
    let state = deployments.state(id).await?.ok_or_else(|| anyhow::anyhow!("{id} has no state"))?;
    let config = SweepConfig::from_toml(&record.spec).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
    let dataset = load_dataset(&config.panel, &config.horizons, config.features.as_deref())?;
    let calendar = dataset.panel.calendar();
    let date = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
    let live = state.live_version();
    let (recent_delta_p_at_k, recent_rank_ic, recent_days) = live.recent(RECENT_DAYS, state.basis);
    let last_processed = state.next_day.saturating_sub(1);
    Ok(StatusView {
        id: id.to_string(),
        tenant: record.tenant.clone(),
        model: record.model.clone(),
        window: record.window,
        seed: record.seed,
        policy: record.policy.clone(),
        last_processed: date(last_processed),
        live_version: live.number,
        live_retrained: date(live.retrain_day),
        live_job: live.job_key.chars().take(16).collect(),
        age_days: state.live_age(),
        recent_delta_p_at_k,
        recent_rank_ic,
        recent_days,
        versions: state.versions.len(),
        decisions: state.decisions.len(),
        retrains: state.decisions.iter().filter(|d| d.retrain).count(),
        rollbacks: state.switches.iter().filter(|s| s.rollback).count(),
        next_decision: state.decision_days.iter().find(|d| **d >= state.next_day).map(|d| date(*d)),
        in_shadow: state.candidate.map(|index| state.versions[index].number),
        retrain_failures: state.retrain_failures_total,
        last_retrain_failure: state
            .retrain_failures
            .last()
            .map(|f| format!("{} (job {}): {}", date(f.day), f.job_key.chars().take(16).collect::<String>(), f.error)),
        retrain_failing: state.retrain_failing(),
        version_list: state
            .versions
            .iter()
            .map(|v| VersionView { number: v.number, retrain_date: date(v.retrain_day), job_key: v.job_key.clone() })
            .collect(),
        last_shadow: state.shadows.last().map(|s| {
            let figure = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:+.4}"));
            format!(
                "{}: version {} {} (ΔP@K {} vs {} of version {} over {} days)",
                date(s.day),
                s.candidate,
                if s.promoted { "promoted" } else { "kept out" },
                figure(s.candidate_mean),
                figure(s.live_mean),
                s.live,
                s.days
            )
        }),
        last_decisions: state
            .decisions
            .iter()
            .rev()
            .take(5)
            .map(|d| {
                let verb = if d.retrain { "retrain" } else { "keep" };
                format!("{} {verb}: {}", date(d.day), d.reason(&state.policy))
            })
            .collect(),
    })
}

async fn status(args: LiveIdArgs) -> anyhow::Result<Outcome> {
    let deployments = deployments(&args.store.artifacts)?;
    let ids = match &args.id {
        Some(id) => vec![id.clone()],
        None => deployments.ids().await?,
    };
    let mut views = Vec::with_capacity(ids.len());
    for id in &ids {
        views.push(status_view(&deployments, id).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(Outcome::Success);
    }
    let figure = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:+.4}"));
    for view in &views {
        println!(
            "{} · tenant {} · {} window {} seed {} · policy {}",
            view.id, view.tenant, view.model, view.window, view.seed, view.policy
        );
        println!(
            "  processed up to {}; live: version {} of {} (retrained {}, job {}), age {} trading days",
            view.last_processed, view.live_version, view.versions, view.live_retrained, view.live_job, view.age_days
        );
        println!(
            "  last {} matured days: ΔP@K {}, RankIC {}; {} decisions, {} retrains, {} rollbacks",
            view.recent_days,
            figure(view.recent_delta_p_at_k),
            figure(view.recent_rank_ic),
            view.decisions,
            view.retrains,
            view.rollbacks
        );
        if let Some(candidate) = view.in_shadow {
            println!("  version {candidate} is in shadow");
        }
        if let Some(shadow) = &view.last_shadow {
            println!("  last shadow: {shadow}");
        }
        if let Some(failure) = &view.last_retrain_failure {
            let state = if view.retrain_failing { "FAILING, the next advance tries again" } else { "since retrained" };
            println!("  retrain failures: {} ({state}); last: {failure}", view.retrain_failures);
        }
        match &view.next_decision {
            Some(next) => println!("  next decision: {next}"),
            None => println!(
                "  no decision day after the last processed day on the panel yet (decisions resume as days are appended to it)"
            ),
        }
        for decision in &view.last_decisions {
            println!("  {decision}");
        }
    }
    Ok(Outcome::Success)
}

async fn list(args: LiveIdArgs) -> anyhow::Result<Outcome> {
    let deployments = deployments(&args.store.artifacts)?;
    let mut rows = Vec::new();
    for id in deployments.ids().await? {
        let record = deployments.record(&id).await?;
        let state = deployments.state(&id).await?;
        rows.push(serde_json::json!({
            "id": id,
            "model": record.model,
            "window": record.window,
            "policy": record.policy,
            "live_version": state.as_ref().map(|s| s.live_version().number),
            "versions": state.as_ref().map(|s| s.versions.len()),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in &rows {
            println!(
                "{}\t{} w{}\t{}\tlive v{} of {}",
                row["id"].as_str().unwrap_or_default(),
                row["model"].as_str().unwrap_or_default(),
                row["window"],
                row["policy"].as_str().unwrap_or_default(),
                row["live_version"],
                row["versions"]
            );
        }
    }
    Ok(Outcome::Success)
}

async fn rollback(args: RollbackArgs) -> anyhow::Result<Outcome> {
    let deployments = deployments(&args.store.artifacts)?;
    let (state, version) = deployments.rollback(&args.id, args.to).await?;
    let opened = deployments.open(&args.id).await?;
    let switch = state.switches.last().map(|s| opened.date(s.day)).unwrap_or_default();
    println!("{}: version {version} is live, rolled back from {switch} on", args.id);
    Ok(Outcome::Success)
}

/// `Predict` on the coordinator at `url`.
fn predict_remote(args: &PredictArgs, url: &str) -> anyhow::Result<Prediction> {
    let token =
        wf_proto::auth::BearerToken::from_env_or_file(args.token_file.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    let request = v1::PredictRequest {
        deployment: args.id.clone(),
        date: args.date.map(|d| d.to_string()).unwrap_or_default(),
        k: args.k.map_or(Ok(0), u32::try_from).map_err(|_| anyhow::anyhow!("--k: too large"))?,
    };
    let tls = args.tls.options();
    runtime()?.block_on(async move {
        let channel = crate::client::channel(url, &tls).await?;
        let mut client = v1::live_service_client::LiveServiceClient::with_interceptor(channel, token);
        let started = std::time::Instant::now();
        let response =
            client.predict(request).await.map_err(|status| anyhow::anyhow!("{}", status.message()))?.into_inner();
        Ok(Prediction {
            deployment: response.deployment,
            date: response.date,
            version: response.version,
            job_key: response.job_key,
            stocks: response.stocks as usize,
            milliseconds: started.elapsed().as_secs_f64() * 1e3,
            top: response
                .top
                .into_iter()
                .map(|r| Ranked { rank: r.rank as usize, code: r.code, score: r.score })
                .collect(),
        })
    })
}

pub fn predict(args: PredictArgs) -> anyhow::Result<Outcome> {
    let prediction = match &args.coordinator {
        Some(url) => predict_remote(&args, url)?,
        None => {
            let predictor = Predictor::new(deployments(&args.store.artifacts)?, device_of(&args.device)?);
            runtime()?.block_on(predictor.predict(&args.id, args.date, args.k))?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&prediction)?);
    } else {
        println!(
            "{} on {}: version {} (job {}), top {} of {} stocks, scored in {:.1} ms",
            prediction.deployment,
            prediction.date,
            prediction.version,
            &prediction.job_key[..prediction.job_key.len().min(16)],
            prediction.top.len(),
            prediction.stocks,
            prediction.milliseconds
        );
        for ranked in &prediction.top {
            println!("{:>4}  {:<10} {:+.6}", ranked.rank, ranked.code, ranked.score);
        }
    }
    Ok(Outcome::Success)
}
