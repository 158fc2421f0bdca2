//! One job's computation: refuse a leaking window, train, score every test day into
//! age-matrix rows at every trained horizon, measure style exposures and drift, report
//! statistics.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use wf_data::dataset::{DataRoots, Dataset, DatasetSummary, open};
use wf_shared::DatasetHash;
use wf_shared::Panel;
use wf_shared::age::{HorizonAges, JobResult, TrainingSummary};
use wf_shared::drift::DriftPath;
use wf_shared::exposure::Exposures;
use wf_shared::importance::Importance;
use wf_shared::metric::{DayMetrics, day_metrics};
use wf_shared::plan::{Job, PlanInput};
use wf_shared::spec::SweepConfig;

use crate::WorkerError;
use crate::external::Trainers;
use crate::importance::permutation_importance;
use crate::model::gbdt::train_gbdt;
use crate::model::{Gbdt, ModelSpec, Ranker, build};
use crate::train::{TrainRequest, TrainStats, score_range_columns, train};

/// What a job produced.
pub struct JobOutput {
    pub spec: ModelSpec,
    /// The trained model; `None` for an external trainer's job (the trainer's `model/`
    /// directory, when it wrote one, is kept on the worker: `docs/TRAINERS.md`).
    pub model: Option<Box<dyn Ranker>>,
    /// Metrics by age (index = age).
    pub ages: Vec<Option<DayMetrics>>,
    pub drift: DriftPath,
    /// By age, the universe indices of the top-ranked stocks, best first.
    pub rankings: Vec<Vec<u32>>,
    /// Style exposures of the primary horizon's scores, by age.
    pub exposures: Exposures,
    /// Metrics by age at every other trained horizon.
    pub horizons: Vec<HorizonAges>,
    /// Permutation importance of each feature on the training window's validation days.
    pub importance: Importance,
    pub stats: TrainStats,
}

impl std::fmt::Debug for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobOutput")
            .field("spec", &self.spec)
            .field("ages", &self.ages.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl JobOutput {
    /// The trained model, or an error for an external trainer's job (which has none here).
    pub fn ranker(&self) -> Result<&dyn Ranker, WorkerError> {
        self.model.as_deref().ok_or_else(|| WorkerError::NoData("an external trainer's job has no model here".into()))
    }

    /// What the worker reports: the job's age-matrix row, drift and training summary.
    pub fn result(&self) -> JobResult {
        let stats = &self.stats;
        JobResult {
            training: TrainingSummary {
                epochs: stats.epochs,
                best_epoch: stats.best_epoch,
                best_validation_loss: stats.best_validation_loss,
                seconds: stats.seconds,
                device: stats.device.clone(),
                training_days: stats.training_days,
                validation_days: stats.validation_days,
            },
            ages: self.ages.clone(),
            drift: self.drift.clone(),
            rankings: self.rankings.clone(),
            exposures: self.exposures.clone(),
            horizons: self.horizons.clone(),
            importance: self.importance.clone(),
        }
    }
}

/// Refuses a job whose training labels reach its retrain date (defence in depth on
/// top of the planner): the label of day `t` at horizon `h` is the close of `t + h`, and
/// with an embargo of `e` days it must be dated at least `e + 1` trading days before
/// the retrain date. Recomputed from the calendar and the spec, not from the planner's
/// fields beyond the job's own days.
pub fn check_no_leakage(panel: &Panel, config: &SweepConfig, job: &Job) -> Result<(), WorkerError> {
    let longest = config.longest_horizon() as usize;
    let embargo = config.embargo as usize;
    let date = |day: usize| panel.calendar().date(day).map_or_else(|| format!("day {day}"), |d| d.to_string());
    let Some(last_train) = job.train_days.end.checked_sub(1) else {
        return Err(WorkerError::Leakage { job: job.key.short(), reason: "its training window is empty".into() });
    };
    let label_day = last_train + longest;
    if label_day + embargo >= job.retrain_day {
        let embargo_text = if embargo == 0 { String::new() } else { format!(" less an embargo of {embargo} days") };
        return Err(WorkerError::Leakage {
            job: job.key.short(),
            reason: format!(
                "the label of {} at horizon {longest} is dated {}, not before the retrain date {}{embargo_text}",
                date(last_train),
                date(label_day),
                date(job.retrain_day)
            ),
        });
    }
    Ok(())
}

/// Above this many rows a prepared panel is read a job's days at a time rather than whole
/// (4 M rows: about 0.7 GB of values). Below it, loading it once per sweep and sharing it
/// costs less than a filtered scan per job: on jp_tse1000 (1.65 M rows) a job's days read
/// in 0.6–1.2 s against 2.3 s for the whole panel once, and its untrained baseline jobs
/// take a fraction of a second each.
pub const DAYS_ABOVE_ROWS: u64 = 4_000_000;

/// Where jobs read their data.
#[derive(Debug)]
pub enum JobData {
    /// The dataset, loaded whole (a synthetic one, or a file whose metadata records no
    /// summary of its stock codes), shared by the jobs that read it.
    Whole(Arc<Dataset>),
    /// A prepared panel file, planned on its metadata summary: each job loads the days it
    /// reads only (`wf_data::dataset::DatasetSource::days`, checked against the summary's
    /// per-day digests), so a worker never holds a whole-market panel.
    Days { uri: String, summary: Arc<DatasetSummary> },
}

impl JobData {
    /// Dataset `uri` opened for jobs (blocking): by days when it is a prepared panel
    /// file of more than `days_above_rows` rows whose metadata records its summary with
    /// the stock codes, else loaded whole.
    pub fn open(
        uri: &str,
        horizons: &[u32],
        features: Option<&[String]>,
        roots: &DataRoots,
        days_above_rows: u64,
    ) -> Result<Self, wf_data::DataError> {
        let source = open(uri, horizons, features, roots)?;
        match source.days_summary()?.filter(|summary| summary.digests.rows > days_above_rows) {
            Some(summary) => Ok(Self::Days { uri: uri.to_string(), summary: Arc::new(summary) }),
            None => source.whole().map(|d| Self::Whole(Arc::new(d))),
        }
    }

    pub fn content_hash(&self) -> DatasetHash {
        match self {
            Self::Whole(dataset) => dataset.content_hash,
            Self::Days { summary, .. } => summary.content_hash,
        }
    }

    /// Its trading calendar.
    pub fn calendar(&self) -> &wf_shared::TradingCalendar {
        match self {
            Self::Whole(dataset) => dataset.panel.calendar(),
            Self::Days { summary, .. } => &summary.calendar,
        }
    }

    /// What planning reads of it.
    pub fn plan_input<'a>(&'a self, universe: &'a mut Vec<usize>) -> PlanInput<'a> {
        match self {
            Self::Whole(dataset) => {
                *universe = dataset.panel.daily_universe();
                PlanInput::of_panel(&dataset.panel, &dataset.digests, universe)
            }
            Self::Days { summary, .. } => summary.plan_input(),
        }
    }

    /// The panel `job` trains and scores on: the whole one, or its read days loaded now.
    pub fn panel(
        &self,
        config: &SweepConfig,
        job: &Job,
        roots: &DataRoots,
    ) -> Result<std::borrow::Cow<'_, wf_shared::Panel>, WorkerError> {
        match self {
            Self::Whole(dataset) => Ok(std::borrow::Cow::Borrowed(&dataset.panel)),
            Self::Days { uri, summary } => {
                let days = read_days(config, job)?;
                open(uri, &[], config.features.as_deref(), roots)
                    .and_then(|source| source.days(days, summary))
                    .map(std::borrow::Cow::Owned)
                    .map_err(|error| WorkerError::Data { retryable: error.retryable(), reason: error.to_string() })
            }
        }
    }
}

/// The days `job` reads ([`wf_shared::plan::read_days`] with its model's look-back): a
/// panel of these days only ([`Panel::days`]) gives it the same numbers as the whole one.
pub fn read_days(config: &SweepConfig, job: &Job) -> Result<std::ops::Range<usize>, WorkerError> {
    let spec = ModelSpec::resolve(job.model, config).map_err(WorkerError::Spec)?;
    Ok(wf_shared::plan::read_days(&job.train_days, &job.score_days, spec.lookback()))
}

/// Trains and scores `job` of `config` on `panel`.
pub fn run_job(panel: &Panel, config: &SweepConfig, job: &Job, device: &Device) -> Result<JobOutput, WorkerError> {
    run_job_until(panel, config, job, device, None)
}

/// [`run_job`] that stops with [`WorkerError::Stopped`] once `stop` is set.
pub fn run_job_until(
    panel: &Panel,
    config: &SweepConfig,
    job: &Job,
    device: &Device,
    stop: Option<&AtomicBool>,
) -> Result<JobOutput, WorkerError> {
    run_job_in(panel, config, job, device, &JobContext { stop, ..JobContext::default() })
}

/// What a job runs with beyond its data: a stop flag, the registered trainers and the
/// job's hard deadline (for an external trainer).
#[derive(Debug, Clone, Copy, Default)]
pub struct JobContext<'a> {
    pub stop: Option<&'a AtomicBool>,
    pub trainers: Option<&'a Trainers>,
    pub deadline: Option<std::time::Instant>,
}

/// [`run_job`] in `context`.
pub fn run_job_in(
    panel: &Panel,
    config: &SweepConfig,
    job: &Job,
    device: &Device,
    context: &JobContext<'_>,
) -> Result<JobOutput, WorkerError> {
    let stop = context.stop;
    let spec = ModelSpec::resolve(job.model, config).map_err(WorkerError::Spec)?;
    check_no_leakage(panel, config, job)?;
    let stopped = || stop.is_some_and(|stop| stop.load(std::sync::atomic::Ordering::Relaxed));
    let (model, stats, importance, mut by_column) = if let ModelSpec::External { .. } = &spec {
        let empty = Trainers::default();
        let trainers = context.trainers.unwrap_or(&empty);
        let name = match crate::device::device_name(device).as_str() {
            "cuda" => "cuda:0".to_string(),
            other => other.to_string(),
        };
        let ran = crate::external::run(panel, config, job, &spec, &name, trainers, stop, context.deadline)?;
        let stats = TrainStats::untrained(device, ran.seconds, ran.fit_days, ran.validation_days);
        // Permutation importance needs the model in hand: not measured for an external one.
        (None, stats, Importance::default(), ran.by_column)
    } else {
        let (model, stats, importance) = train_builtin(panel, config, job, &spec, device, stop)?;
        if stopped() {
            return Err(WorkerError::Stopped);
        }
        // [day][horizon column][row]: every trained horizon is scored.
        let by_column = score_range_columns(model.as_ref(), panel, job.score_days.clone(), device)?;
        (Some(model), stats, importance, by_column)
    };
    if stopped() {
        return Err(WorkerError::Stopped);
    }

    let column = config.horizons.iter().position(|h| *h == config.primary_horizon).unwrap_or(0);
    let target_of = |horizon: u32| {
        panel
            .target(horizon)
            .ok_or_else(|| WorkerError::NoData(format!("the panel has no target for horizon {horizon}")))
    };
    let target = target_of(config.primary_horizon)?;
    let metrics_at = |column: usize, target: &[f64], by_column: &[Vec<Vec<f64>>]| -> Vec<Option<DayMetrics>> {
        job.score_days
            .clone()
            .zip(by_column)
            .map(|(day, columns)| {
                columns.get(column).and_then(|scores| day_metrics(scores, &target[panel.rows_of_day(day)], config.k))
            })
            .collect()
    };
    let mut horizons = Vec::new();
    for (other, horizon) in config.horizons.iter().enumerate().filter(|(c, _)| *c != column) {
        horizons.push(HorizonAges { horizon: *horizon, ages: metrics_at(other, target_of(*horizon)?, &by_column) });
    }
    let ages = metrics_at(column, target, &by_column);
    let scores: Vec<Vec<f64>> = by_column
        .iter_mut()
        .map(|columns| if column < columns.len() { columns.swap_remove(column) } else { Vec::new() })
        .collect();
    let exposures = Exposures::measure(panel, job.score_days.clone(), &scores);
    let depth = wf_shared::backtest::ranks_kept(config.backtest.as_ref());
    let rankings = job
        .score_days
        .clone()
        .zip(&scores)
        .map(|(day, scores)| {
            // Positions in the day's rows (code order), not universe indices: the same on
            // a panel whose universe grew later.
            let positions: Vec<u32> = (0..panel.rows_of_day(day).len() as u32).collect();
            wf_shared::backtest::top_ranked(scores, &positions, depth)
        })
        .collect();
    let drift = DriftPath::measure(panel, job.train_days.clone(), job.score_days.clone());
    Ok(JobOutput { spec, model, ages, drift, rankings, exposures, horizons, importance, stats })
}

/// Builds and trains a built-in model (a factor is built, not trained), with its
/// permutation importance.
fn train_builtin(
    panel: &Panel,
    config: &SweepConfig,
    job: &Job,
    spec: &ModelSpec,
    device: &Device,
    stop: Option<&AtomicBool>,
) -> Result<(Box<dyn Ranker>, TrainStats, Importance), WorkerError> {
    let mut model = build(spec, panel.feature_names(), config.horizons.len(), job.seed, device)?;
    let mut importance = Importance::default();
    let stats = match spec.train_params() {
        Some(params) => {
            let weights = params.horizon_weights_for(config);
            let request = TrainRequest { stop, ..TrainRequest::of_job(panel, config, job, params, &weights) };
            let stats = match spec {
                ModelSpec::Gbdt { .. } => {
                    let gbdt = Gbdt::of_spec(spec, config.horizons.len(), job.seed)
                        .ok_or_else(|| WorkerError::NoData("not a gbdt spec".into()))?;
                    let stats = train_gbdt(&gbdt, &request, config.primary_horizon, device)?;
                    model = Box::new(gbdt);
                    stats
                }
                _ => train(model.as_ref(), &request, device)?,
            };
            importance = permutation_importance(model.as_ref(), &request, config.primary_horizon, device)?;
            stats
        }
        // A factor is not trained: its scores read the scored day's features only.
        None => TrainStats::untrained(device, 0.0, 0, 0),
    };
    Ok((model, stats, importance))
}
