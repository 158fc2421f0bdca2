//! The sweep planner: trading calendar + validated spec → jobs, with the purge rule,
//! job keys and dedup.
//!
//! For retrain day `r` (an index on the calendar), window `W`, longest horizon `h` and
//! embargo `e`, a job trains on days `r − e − h − W ..= r − e − h − 1` (exactly W days):
//! the label of its last training day is the close of `r − e − 1`, known before the
//! model goes live at `r`. It scores days `r .. r + max_age`, cut at the last day whose
//! longest-horizon target has matured. A job is one (model, seed, window, retrain day);
//! every cadence that retrains on that day shares it, and its key (the hash of its
//! [`JobIdentity`]: everything that determines its result) lets later sweeps reuse it too.

mod identity;
mod manifest;

use std::collections::BTreeSet;
use std::ops::Range;

use serde::{Deserialize, Serialize};

pub use identity::{DataRead, JOB_FORMAT, JobIdentity, JobKey, identity_differences};
pub use manifest::{AuditFinding, Manifest, ManifestJob, audit};

use crate::cadence::Cadence;
use crate::calendar::TradingCalendar;
use crate::dataset::PanelDigests;
use crate::model::{ModelSpec, TRAINER_VERSION, resolve_models};
use crate::spec::{SpecError, SpecErrors, SweepConfig, TopK};

/// What the planner needs to know about the dataset.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub calendar: &'a TradingCalendar,
    /// The panel's digests (its content hash, and each day's, which job identities are
    /// combined from), of the features below.
    pub digests: &'a PanelDigests,
    pub feature_names: &'a [String],
    /// Stocks with a row on each trading day.
    pub daily_universe: &'a [usize],
    /// Horizons the panel has targets for.
    pub horizons: &'a [u32],
}

impl<'a> PlanInput<'a> {
    /// The input of a loaded `panel` whose digests ([`PanelDigests::of`]) are `digests`
    /// and whose daily universe ([`crate::panel::Panel::daily_universe`]) is `universe`.
    pub fn of_panel(panel: &'a crate::panel::Panel, digests: &'a PanelDigests, universe: &'a [usize]) -> Self {
        Self {
            calendar: panel.calendar(),
            digests,
            feature_names: panel.feature_names(),
            daily_universe: universe,
            horizons: panel.horizons(),
        }
    }
}

/// One distinct training.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub key: JobKey,
    /// Index into the sweep's models.
    pub model: usize,
    pub seed: u64,
    pub window: u32,
    pub retrain_day: usize,
    pub train_days: Range<usize>,
    pub score_days: Range<usize>,
    /// The cadences that retrain with this job.
    pub cadences: Vec<Cadence>,
    /// The canonical JSON of the job's [`JobIdentity`]; `key` is its hash.
    pub identity: String,
}

/// Jobs of one (window, cadence) cell, before dedup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanCell {
    pub window: u32,
    pub cadence: Cadence,
    pub retrains: usize,
    pub jobs: u64,
}

/// A planned sweep.
#[derive(Debug, Clone)]
pub struct Plan {
    pub jobs: Vec<Job>,
    pub cells: Vec<PlanCell>,
    pub jobs_before_dedup: u64,
    /// Retrain days of each cadence, in spec order.
    pub retrain_days: Vec<(Cadence, Vec<usize>)>,
    /// Last day whose longest-horizon target is known: scoring stops there.
    pub last_matured_day: usize,
    pub longest_horizon: u32,
    pub embargo: u32,
}

impl Plan {
    /// The retrain days of the finest cadence (the most of them): where adaptive policies
    /// are evaluated.
    pub fn finest_retrain_days(&self) -> &[usize] {
        self.retrain_days.iter().max_by_key(|(_, days)| days.len()).map_or(&[], |(_, days)| days.as_slice())
    }

    /// The jobs of one (model, window, seed) line, by retrain day.
    pub fn line_jobs(&self, model: usize, window: u32, seed: u64) -> std::collections::BTreeMap<usize, &Job> {
        self.jobs
            .iter()
            .filter(|j| j.model == model && j.window == window && j.seed == seed)
            .map(|j| (j.retrain_day, j))
            .collect()
    }

    /// Share of trainings saved by dedup.
    pub fn saving(&self) -> f64 {
        if self.jobs_before_dedup == 0 { 0.0 } else { 1.0 - self.jobs.len() as f64 / self.jobs_before_dedup as f64 }
    }
}

fn error(field: &str, reason: String) -> SpecErrors {
    SpecErrors(vec![SpecError::new(field, reason)])
}

/// Plans `config` on the dataset described by `input`.
pub fn plan(config: &SweepConfig, input: &PlanInput<'_>) -> Result<Plan, SpecErrors> {
    let calendar = input.calendar;
    let (Some(first_date), Some(last_date)) = (calendar.first(), calendar.last()) else {
        return Err(error("dataset.panel", "the panel has no dates".into()));
    };
    let dataset_hash = input.digests.hash();
    if let Some(pinned) = config.content_hash
        && pinned != dataset_hash
    {
        return Err(error("dataset.content_hash", format!("the panel's content hash is {dataset_hash}, not {pinned}")));
    }
    let missing: Vec<SpecError> = config
        .horizons
        .iter()
        .enumerate()
        .filter(|(_, h)| !input.horizons.contains(h))
        .map(|(index, h)| {
            SpecError::new(
                format!("plan.horizons[{index}]"),
                format!("the panel has no target for horizon {h} (it has {:?})", input.horizons),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(SpecErrors(missing));
    }
    let h = config.longest_horizon() as usize;
    let e = config.embargo as usize;
    let Some(last_matured_day) = calendar.len().checked_sub(h + 1) else {
        return Err(error(
            "plan.horizons",
            format!("the panel has {} dates, too few for a {h}-day horizon", calendar.len()),
        ));
    };
    let start = calendar.index_on_or_after(config.start);
    let end = calendar.index_on_or_before(config.end).unwrap_or(0).min(last_matured_day);
    if start > end {
        return Err(error(
            "evaluation",
            format!(
                "no trading day in {} ..= {} has a matured {h}-day target (the panel covers {first_date} ..= {last_date})",
                config.start, config.end
            ),
        ));
    }

    let retrain_days: Vec<(Cadence, Vec<usize>)> =
        config.cadences.iter().map(|c| (*c, c.retrain_days(calendar, start, end))).collect();
    let union: BTreeSet<usize> = retrain_days.iter().flat_map(|(_, days)| days.iter().copied()).collect();
    let model_seeds = config.model_seeds().count() as u64;
    let windows = config.train_windows.len() as u64;
    let distinct = (union.len() as u64).saturating_mul(windows).saturating_mul(model_seeds);
    // The limit comes before anything that grows with the number of jobs.
    if distinct > config.max_jobs {
        return Err(error(
            "limits.max_jobs",
            format!("the sweep would plan {distinct} jobs, more than the limit of {}", config.max_jobs),
        ));
    }

    let Some(&first_retrain) = union.iter().next() else {
        return Err(error("plan.cadences", format!("no retrain date falls in {} ..= {}", config.start, config.end)));
    };
    let mut problems = Vec::new();
    for (index, window) in config.train_windows.iter().enumerate() {
        let needed = *window as usize + h + e;
        if needed > first_retrain {
            problems.push(SpecError::new(
                format!("plan.train_windows[{index}]"),
                format!(
                    "{window} trading days plus horizon {h} and embargo {e} need {needed} trading days before the first retrain date {}, the panel has {first_retrain} (from {first_date})",
                    calendar.date(first_retrain).unwrap_or_default()
                ),
            ));
        }
    }
    if let TopK::Count(k) = config.k
        && let Some((day, universe)) =
            (start..=end).map(|d| (d, input.daily_universe.get(d).copied().unwrap_or(0))).min_by_key(|(_, u)| *u)
        && k as usize > universe
    {
        problems.push(SpecError::new(
            "metrics.k",
            format!(
                "{k} exceeds the universe: {universe} stocks on {}, the smallest day of the evaluation period",
                calendar.date(day).unwrap_or_default()
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(SpecErrors(problems));
    }

    let specs = resolve_models(config)?;
    let missing: Vec<SpecError> = specs
        .iter()
        .enumerate()
        .filter_map(|(index, spec)| match spec {
            ModelSpec::Factor { feature, .. } if !input.feature_names.contains(feature) => Some(SpecError::new(
                format!("models[{index}].params.feature"),
                format!(
                    "{:?} ranks by {feature:?}, which the panel does not have (it has {})",
                    config.models[index].name,
                    input.feature_names.join(", ")
                ),
            )),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        return Err(SpecErrors(missing));
    }
    let days = day_view(config, input)?;
    let mut jobs = Vec::with_capacity(distinct as usize);
    for (model_index, (model, spec)) in config.models.iter().zip(&specs).enumerate() {
        for (seed, window) in model.seeds.iter().flat_map(|s| config.train_windows.iter().map(move |w| (*s, w))) {
            for &retrain_day in &union {
                let train_end = retrain_day - e - h;
                let train_days = train_end - *window as usize..train_end;
                let score_days = retrain_day..(retrain_day + config.max_age as usize).min(last_matured_day + 1);
                let cadences = retrain_days
                    .iter()
                    .filter(|(_, days)| days.binary_search(&retrain_day).is_ok())
                    .map(|(c, _)| *c)
                    .collect();
                let identity = job_identity(config, input, &days, spec, seed, &train_days, &score_days).to_canonical();
                jobs.push(Job {
                    key: JobKey::of_identity(&identity),
                    model: model_index,
                    seed,
                    window: *window,
                    retrain_day,
                    train_days,
                    score_days,
                    cadences,
                    identity,
                });
            }
        }
    }
    let cells = config
        .train_windows
        .iter()
        .flat_map(|w| retrain_days.iter().map(move |(c, days)| (*w, *c, days.len())))
        .map(|(window, cadence, retrains)| PlanCell { window, cadence, retrains, jobs: retrains as u64 * model_seeds })
        .collect::<Vec<_>>();
    let jobs_before_dedup = cells.iter().map(|c| c.jobs).sum();
    Ok(Plan {
        jobs,
        cells,
        jobs_before_dedup,
        retrain_days,
        last_matured_day,
        longest_horizon: h as u32,
        embargo: config.embargo,
    })
}

/// Plans `config` on a loaded panel whose digests ([`PanelDigests::of`]) are `digests`.
pub fn plan_panel(
    config: &SweepConfig,
    panel: &crate::panel::Panel,
    digests: &PanelDigests,
) -> Result<Plan, SpecErrors> {
    let universe = panel.daily_universe();
    plan(config, &PlanInput::of_panel(panel, digests, &universe))
}

/// The per-day digests of `input` that the identities of `config`'s jobs are combined
/// from; refused when they do not cover the panel's calendar.
pub fn day_view(config: &SweepConfig, input: &PlanInput<'_>) -> Result<crate::dataset::DayView, SpecErrors> {
    let Some(days) = input.digests.day_view(&config.horizons) else {
        return Err(error(
            "dataset.panel",
            "the panel's digests hold no per-day digests (a summary written before they existed): prepare it again"
                .into(),
        ));
    };
    if days.days() != input.calendar.len() {
        return Err(error(
            "dataset.panel",
            format!("the panel's digests cover {} days, its calendar {}", days.days(), input.calendar.len()),
        ));
    }
    Ok(days)
}

/// The training-only job of model `model` (an index into the spec's models), `seed` and
/// train window `window` retrained on `retrain_day`: the planner's training days, no
/// scored day. A live deployment's retrain: its key does not change as the panel grows,
/// and it needs no matured label after its last training day, so it can be decided on
/// any day of the panel, past the spec's `[evaluation] end` included. `days` is
/// [`day_view`] of `config` and `input`.
pub fn training_job(
    config: &SweepConfig,
    input: &PlanInput<'_>,
    days: &crate::dataset::DayView,
    model: usize,
    seed: u64,
    window: u32,
    retrain_day: usize,
) -> Result<Job, SpecErrors> {
    let h = config.longest_horizon() as usize;
    let e = config.embargo as usize;
    let date = |day: usize| input.calendar.date(day).map_or_else(|| format!("day {day}"), |d| d.to_string());
    if retrain_day >= input.calendar.len() {
        return Err(error("live", format!("{} is past the panel's last day", date(retrain_day))));
    }
    let Some(train_end) = retrain_day.checked_sub(e + h).filter(|end| *end >= window as usize) else {
        return Err(error(
            "plan.train_windows",
            format!("{window} trading days plus horizon {h} and embargo {e} do not fit before {}", date(retrain_day)),
        ));
    };
    let spec = ModelSpec::resolve(model, config).map_err(|e| SpecErrors(vec![e]))?;
    let train_days = train_end - window as usize..train_end;
    let score_days = retrain_day..retrain_day;
    let identity = job_identity(config, input, days, &spec, seed, &train_days, &score_days).to_canonical();
    Ok(Job {
        key: JobKey::of_identity(&identity),
        model,
        seed,
        window,
        retrain_day,
        train_days,
        score_days,
        cadences: Vec::new(),
        identity,
    })
}

/// What names a training-only job (a live deployment's retrain) on any panel: the line
/// (model, seed, window) and its retrain date. A coordinator queues one with its job key;
/// a worker builds the job from it ([`TrainingLine::job`]) and trains it only when the
/// key is the same, i.e. its dataset reads the same days as the coordinator's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingLine {
    /// Index into the spec's models.
    pub model: u32,
    pub seed: u64,
    pub window: u32,
    pub retrain: chrono::NaiveDate,
}

impl TrainingLine {
    /// Its job on `input` ([`training_job`]); refused when the retrain date is no
    /// trading day of the panel.
    pub fn job(&self, config: &SweepConfig, input: &PlanInput<'_>) -> Result<Job, SpecErrors> {
        let day = input
            .calendar
            .index_of(self.retrain)
            .ok_or_else(|| error("live", format!("{} is no trading day of the panel", self.retrain)))?;
        if self.model as usize >= config.models.len() {
            return Err(error(
                "live",
                format!("model {} is not in the spec ({} models)", self.model, config.models.len()),
            ));
        }
        let days = day_view(config, input)?;
        training_job(config, input, &days, self.model as usize, self.seed, self.window, day)
    }
}

/// The days a job reads, which its identity digests: its model's `lookback` before the
/// first training day through the last scored day (the last training day when it scores
/// none). A job's computation reads nothing else, so it gives the same numbers on a panel
/// of these days only (`Panel::days`).
pub fn read_days(train_days: &Range<usize>, score_days: &Range<usize>, lookback: usize) -> Range<usize> {
    let last_read = if score_days.is_empty() { train_days.end } else { score_days.end.max(train_days.end) };
    train_days.start.saturating_sub(lookback.max(1) - 1)..last_read
}

/// Everything that determines a job's result.
fn job_identity(
    config: &SweepConfig,
    input: &PlanInput<'_>,
    days: &crate::dataset::DayView,
    spec: &ModelSpec,
    seed: u64,
    train_days: &Range<usize>,
    score_days: &Range<usize>,
) -> JobIdentity {
    let date = |day: usize| input.calendar.date(day).unwrap_or_default();
    let read = read_days(train_days, score_days, spec.lookback());
    JobIdentity {
        format: JOB_FORMAT.to_string(),
        trainer: TRAINER_VERSION,
        data: DataRead {
            days: [date(read.start), date(read.end - 1)],
            digest: days.data_digest(read, train_days.clone(), score_days.clone()),
        },
        features: input.feature_names.to_vec(),
        model: spec.clone(),
        seed,
        train: [date(train_days.start), date(train_days.end - 1)],
        horizons: config.horizons.clone(),
        primary_horizon: config.primary_horizon,
        k: config.k,
        embargo: config.embargo,
        score: (!score_days.is_empty()).then(|| [date(score_days.start), date(score_days.end - 1)]),
        ranks: match config.backtest.as_ref().map(|grid| grid.depth) {
            None | Some(crate::backtest::Depth::Top(crate::backtest::DEFAULT_DEPTH)) => None,
            Some(depth) => Some(depth),
        },
    }
}

#[cfg(test)]
mod tests;
