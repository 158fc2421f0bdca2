//! `wf plan SPEC`: validate a sweep, plan it on its dataset, show the jobs and the saving.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use wf_data::dataset::{DataRoots, DatasetSummary};
pub use wf_data::planning::{plan_on, plan_summary, plan_sweep};
use wf_shared::plan::{Manifest, Plan, PlanCell, audit};
use wf_shared::spec::SweepConfig;

use crate::cli::PlanArgs;
use crate::outcome::Outcome;

/// The machine-readable plan.
#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    sweep: &'a str,
    dataset: String,
    cells: &'a [PlanCell],
    jobs_before_dedup: u64,
    distinct_trainings: usize,
    saving: f64,
    leaking_jobs: usize,
    /// Features whose mean same-day RankIC with a target is implausibly high; `None`
    /// where the panel's metadata predates the check.
    lookahead_suspects: Option<&'a [wf_shared::label_guard::LookaheadSuspect]>,
    planning_ms: f64,
    manifest: &'a Manifest,
}

/// Reads and validates a spec file; every problem in one line.
pub fn read_spec(path: &std::path::Path) -> anyhow::Result<SweepConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SweepConfig::from_toml(&text).map_err(|errors| anyhow::anyhow!("invalid sweep spec {}: {errors}", path.display()))
}

/// [`read_spec`] with the external trainers its models name pinned as `trainers` registers
/// them (the identities a coordinator would pin at submission).
pub fn read_pinned_spec(path: &std::path::Path, trainers: &crate::cli::TrainerArgs) -> anyhow::Result<SweepConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = SweepConfig::from_toml(&text)
        .map_err(|errors| anyhow::anyhow!("invalid sweep spec {}: {errors}", path.display()))?;
    if wf_shared::model::named_trainers(&config).is_empty() {
        return Ok(config);
    }
    let registry = trainers.registry()?;
    wf_shared::model::pin_trainers(&text, &config, |name| registry.pin(name))
        .map(|(_, pinned)| pinned)
        .map_err(|errors| anyhow::anyhow!("invalid sweep spec {}: {errors}", path.display()))
}

pub fn run(args: PlanArgs) -> anyhow::Result<Outcome> {
    let config = read_pinned_spec(&args.spec, &args.trainers)?;
    let summary = wf_data::dataset::open(&config.panel, &config.horizons, config.features.as_deref(), &DataRoots::Any)?
        .summary()?;
    let started = Instant::now();
    let plan = plan_summary(&config, &summary)?;
    let planning_ms = started.elapsed().as_secs_f64() * 1e3;
    let calendar = &summary.calendar;
    let manifest = Manifest::new(&config, summary.content_hash, calendar, &plan);
    let leaking = audit(&manifest, calendar, &config);
    if let Some(path) = &args.manifest {
        let text = serde_json::to_string_pretty(&manifest).context("failed to serialise the manifest")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        let report = PlanReport {
            sweep: &config.name,
            dataset: summary.content_hash.to_string(),
            cells: &plan.cells,
            jobs_before_dedup: plan.jobs_before_dedup,
            distinct_trainings: plan.jobs.len(),
            saving: plan.saving(),
            leaking_jobs: leaking.len(),
            lookahead_suspects: summary.lookahead.as_deref(),
            planning_ms,
            manifest: &manifest,
        };
        println!("{}", serde_json::to_string_pretty(&report).context("failed to serialise the plan")?);
    } else {
        print!("{}", render(&config, &summary, &plan, leaking.len(), planning_ms));
    }
    Ok(if leaking.is_empty() { Outcome::Success } else { Outcome::GateFailed })
}

fn render(config: &SweepConfig, summary: &DatasetSummary, plan: &Plan, leaking: usize, planning_ms: f64) -> String {
    let calendar = &summary.calendar;
    let date = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sweep {} on {} (content {}, {} dates, {} stocks)",
        config.name,
        config.panel,
        summary.content_hash.short(),
        calendar.len(),
        summary.stocks
    );
    let models: Vec<String> =
        config.models.iter().map(|m| format!("{} ({:?}, {} seeds)", m.name, m.kind, m.seeds.len())).collect();
    let _ = writeln!(out, "models {}", models.join(", "));
    let _ = writeln!(
        out,
        "retrain dates in {} ..= {}; scoring up to {} days, cut at {} (last matured {}-day target)",
        config.start,
        config.end,
        config.max_age,
        date(plan.last_matured_day),
        plan.longest_horizon
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "{:>7}  {:<10} {:>9} {:>9}", "window", "cadence", "retrains", "jobs");
    for cell in &plan.cells {
        let _ =
            writeln!(out, "{:>7}  {:<10} {:>9} {:>9}", cell.window, cell.cadence.to_string(), cell.retrains, cell.jobs);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "jobs by window x cadence {}; distinct trainings {}; dedup saves {:.1}%",
        plan.jobs_before_dedup,
        plan.jobs.len(),
        plan.saving() * 100.0
    );
    let _ = writeln!(out, "split audit: {leaking} leaking jobs (planned in {planning_ms:.1} ms)");
    out.push_str(&lookahead_lines(summary.lookahead.as_deref()));
    out
}

/// The look-ahead check's lines: each suspect named with its figure, or none.
pub fn lookahead_lines(suspects: Option<&[wf_shared::label_guard::LookaheadSuspect]>) -> String {
    use wf_shared::label_guard::{LOOKAHEAD_RANK_IC, LOOKAHEAD_SAMPLE_DAYS};
    match suspects {
        None => {
            "look-ahead check: not recorded in this panel's metadata (written before the check; prepare it again)\n"
                .to_string()
        }
        Some([]) => format!(
            "look-ahead check: no feature has a mean same-day RankIC of {LOOKAHEAD_RANK_IC} or more with a target \
             (on up to {LOOKAHEAD_SAMPLE_DAYS} days)\n"
        ),
        Some(suspects) => suspects.iter().map(|s| format!("look-ahead suspect: {s}\n")).collect(),
    }
}
