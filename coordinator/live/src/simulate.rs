//! `wf live simulate`: one deployment (model, window, seed, policy) fed historical days one
//! by one through the live decision code ([`wf_shared::decision::LiveState`]), training only
//! the jobs its decisions ask for (each the planner's job for its retrain day, so a
//! sweep's committed results stand for them and the simulation's stand for the sweep's).
//!
//! It writes what a live deployment would have decided and earned: every decision with
//! its trigger readings, every version, and the daily out-of-sample series. These equal
//! the offline replay of the same policy (`tests/live_simulate.rs`).

use std::fmt::Write as _;

use serde::Serialize;
use wf_shared::age::{JobResult, ModelRun};
use wf_shared::calendar::TradingCalendar;
use wf_shared::decision::{LivePolicy, LiveState, RunsObserver, Version};
use wf_shared::metric::DayMetrics;
use wf_shared::plan::{Job, Plan};
use wf_shared::spec::SweepConfig;

/// Which deployment to simulate, and over which days (indices on the panel's calendar).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub model: usize,
    pub window: u32,
    pub seed: u64,
    pub policy: LivePolicy,
    /// The first model is the line's first job retrained on or after this day.
    pub from: usize,
    /// The last day processed (cut at the last day a job scores).
    pub to: usize,
}

/// Where a version's job result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Trained,
    Reused,
}

/// One day of the deployment: the live version and its metrics that day (known once the
/// label matured; `None` where it scored nothing).
#[derive(Debug, Clone, Serialize)]
pub struct DailyRow {
    pub day: usize,
    pub version: u32,
    pub retrain_day: usize,
    pub age: usize,
    pub metrics: Option<DayMetrics>,
}

/// What a simulation decided and earned.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub state: LiveState,
    pub daily: Vec<DailyRow>,
    /// Per version (in order): where its result came from.
    pub sources: Vec<Source>,
    /// Decision days whose policy fired but whose retrain day has no planned job.
    pub unplanned: Vec<usize>,
}

impl Simulation {
    pub fn retrain_days(&self) -> Vec<usize> {
        self.state.versions.iter().map(|v| v.retrain_day).collect()
    }

    /// Mean of the days' ΔP@K (on the deployment's basis) and RankIC (over days with a
    /// value).
    pub fn means(&self) -> (f64, f64) {
        let mean = |values: Vec<f64>| {
            let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
            if finite.is_empty() { f64::NAN } else { finite.iter().sum::<f64>() / finite.len() as f64 }
        };
        let basis = self.state.basis;
        let delta = mean(self.daily.iter().filter_map(|d| d.metrics.as_ref()).map(|m| m.delta_on(basis)).collect());
        let rank_ic = mean(self.daily.iter().filter_map(|d| d.metrics.as_ref()?.rank_ic).collect());
        (delta, rank_ic)
    }
}

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Live(#[from] wf_shared::decision::LiveError),
    #[error("job {key} (retrain day {day}): {reason}")]
    Job { key: String, day: usize, reason: String },
}

/// A deployment's decision days: [`decision_days`]'s cadence (the policy's own, or the
/// spec's finest for an adaptive policy, as the plan chose it) from the spec's start
/// through the panel's last day, past the spec's `[evaluation] end` and the last matured
/// day: a deployment lives on as days are appended. On the plan's days it equals
/// [`decision_days`] (a cadence's retrain days are fixed by each day and the one before).
pub fn live_decision_days(
    plan: &Plan,
    policy: &LivePolicy,
    calendar: &wf_shared::TradingCalendar,
    start: chrono::NaiveDate,
) -> Result<Vec<usize>, SimulateError> {
    let planned = decision_days(plan, policy)?;
    let cadence = match policy {
        LivePolicy::Fixed(cadence) => *cadence,
        LivePolicy::Adaptive(_) => plan
            .retrain_days
            .iter()
            .max_by_key(|(_, days)| days.len())
            .map(|(cadence, _)| *cadence)
            .ok_or_else(|| SimulateError::Setup("the spec plans no cadence".into()))?,
    };
    let days = cadence.retrain_days(calendar, calendar.index_on_or_after(start), calendar.len().saturating_sub(1));
    debug_assert!(days.starts_with(&planned), "live decision days extend the plan's");
    Ok(days)
}

/// The days a policy is decided on: its cadence's retrain days for a fixed one (a cadence
/// of the spec), the spec's finest cadence's for an adaptive one (as the replay).
pub fn decision_days(plan: &Plan, policy: &LivePolicy) -> Result<Vec<usize>, SimulateError> {
    match policy {
        LivePolicy::Fixed(cadence) => {
            plan.retrain_days.iter().find(|(c, _)| c == cadence).map(|(_, days)| days.clone()).ok_or_else(|| {
                let known: Vec<String> = plan.retrain_days.iter().map(|(c, _)| c.to_string()).collect();
                SimulateError::Setup(format!(
                    "--policy: {cadence} is not a cadence of the spec (it plans {}), so it has no planned jobs",
                    known.join(", ")
                ))
            })
        }
        LivePolicy::Adaptive(_) => Ok(plan.finest_retrain_days().to_vec()),
    }
}

/// Gives the result of a job, reused or trained, or why it cannot.
pub type ResultOf<'a> = dyn FnMut(&Job) -> Result<(JobResult, Source), String> + 'a;

/// Runs `deployment` of `config` on `plan`; `result` gives the result of a job (reused or
/// trained) and whether it was trained; `progress` hears each processed day.
pub fn simulate(
    config: &SweepConfig,
    panel: &wf_shared::Panel,
    plan: &Plan,
    deployment: &Deployment,
    result: &mut ResultOf<'_>,
    progress: &mut dyn FnMut(usize),
) -> Result<Simulation, SimulateError> {
    let jobs = plan.line_jobs(deployment.model, deployment.window, deployment.seed);
    let (_, first) = jobs.range(deployment.from..).next().ok_or_else(|| {
        SimulateError::Setup(format!(
            "no job of model {} (window {}, seed {}) is retrained on or after the start day",
            config.models.get(deployment.model).map_or("?", |m| m.name.as_str()),
            deployment.window,
            deployment.seed
        ))
    })?;
    let decision_days = decision_days(plan, &deployment.policy)?;
    let mut observer = RunsObserver::default();
    let mut sources = Vec::new();
    let mut load = |job: &Job, observer: &mut RunsObserver, sources: &mut Vec<Source>| {
        let (outcome, source) =
            result(job).map_err(|reason| SimulateError::Job { key: job.key.short(), day: job.retrain_day, reason })?;
        let version = Version::new(job.retrain_day, job.key.to_string(), Some(outcome.drift.training.clone()));
        let run = ModelRun::of_job(job, outcome, panel);
        observer.add(run);
        sources.push(source);
        Ok::<_, SimulateError>(version)
    };
    let first_version = load(first, &mut observer, &mut sources)?;
    let mut state =
        LiveState::new(deployment.policy.clone(), config.primary_horizon, config.max_age, decision_days, first_version)
            .on_basis(config.basis);
    // The last day any job of the line scores.
    let last_scored = jobs.values().map(|j| j.score_days.end.saturating_sub(1)).max().unwrap_or(first.retrain_day);
    let mut daily = Vec::new();
    let mut unplanned = Vec::new();
    for day in first.retrain_day..=deployment.to.min(last_scored) {
        let retrain = state.advance(day, &mut observer)?.is_some_and(|d| d.retrain);
        if retrain {
            match jobs.get(&day) {
                Some(job) => {
                    let version = load(job, &mut observer, &mut sources)?;
                    state.promote(version)?;
                }
                None => unplanned.push(day),
            }
        }
        let version = state.live_version();
        let age = day - version.retrain_day;
        let metrics = observer.run_at(version.retrain_day).and_then(|run| run.at(age)).cloned();
        daily.push(DailyRow { day, version: version.number, retrain_day: version.retrain_day, age, metrics });
        progress(day);
    }
    Ok(Simulation { state, daily, sources, unplanned })
}

fn number(value: f64) -> String {
    if value.is_finite() { format!("{value}") } else { String::new() }
}

/// `daily.csv`: date, version, retrain_date, age, delta_p_at_k, p_at_k, rank_ic (empty:
/// nothing scored).
pub fn daily_csv(simulation: &Simulation, calendar: &TradingCalendar) -> String {
    let date = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
    let mut out = String::from("date,version,retrain_date,age,delta_p_at_k,p_at_k,rank_ic\n");
    for row in &simulation.daily {
        let (delta, p_at_k, rank_ic) = row.metrics.as_ref().map_or((f64::NAN, f64::NAN, f64::NAN), |m| {
            let basis = simulation.state.basis;
            (m.delta_on(basis), m.p_at_k_on(basis), m.rank_ic.unwrap_or(f64::NAN))
        });
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            date(row.day),
            row.version,
            date(row.retrain_day),
            row.age,
            number(delta),
            number(p_at_k),
            number(rank_ic)
        );
    }
    out
}

/// `decisions.csv`: date, version, age, retrain (0/1), reason, readings (each trigger
/// `name=value`, `;`-separated; empty for a fixed cadence).
pub fn decisions_csv(simulation: &Simulation, calendar: &TradingCalendar) -> String {
    let date = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
    let quote = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let mut out = String::from("date,version,age,retrain,reason,readings\n");
    for decision in &simulation.state.decisions {
        let readings: Vec<String> = decision
            .readings
            .iter()
            .map(|r| format!("{}={}", r.trigger, r.value.map_or_else(String::new, |v| format!("{v}"))))
            .collect();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            date(decision.day),
            decision.version,
            decision.age,
            u8::from(decision.retrain),
            quote(&decision.reason(&simulation.state.policy)),
            quote(&readings.join("; "))
        );
    }
    out
}

/// `versions.csv`: version, retrain_date, job_key, source (trained or reused).
pub fn versions_csv(simulation: &Simulation, calendar: &TradingCalendar) -> String {
    let date = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
    let mut out = String::from("version,retrain_date,job_key,source\n");
    for (version, source) in simulation.state.versions.iter().zip(&simulation.sources) {
        let source = if *source == Source::Trained { "trained" } else { "reused" };
        let _ = writeln!(out, "{},{},{},{source}", version.number, date(version.retrain_day), version.job_key);
    }
    out
}
