//! External trainers (`docs/TRAINERS.md`): a program registered on the worker trains and
//! scores a job from the files the worker writes into a fresh directory, never holding a
//! label it must not see; the worker reads its scores back with every check, and all
//! that follows (metrics, exposures, rankings, drift, the result) is the worker's own.

mod process;
mod registry;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;
use tracing::info;
use wf_data::trainer_files::{VALIDATION_COLUMN, column_names, read_scores, write_score, write_train};
use wf_shared::Panel;
use wf_shared::model::ModelSpec;
use wf_shared::panel::target_name;
use wf_shared::plan::Job;
use wf_shared::spec::SweepConfig;

pub use process::{EXIT_RETRY, Failure, Limits, Server};
pub use registry::{Registration, Trainers, content_hash, identity};

use crate::WorkerError;
use crate::train::split_window;

/// The format of `job.json`, which a trainer may check.
pub const JOB_FORMAT: &str = "walkforward-trainer/1";
pub const TRAIN_FILE: &str = "train.parquet";
pub const SCORE_FILE: &str = "score.parquet";
pub const SCORES_FILE: &str = "scores.parquet";
pub const MODEL_DIR: &str = "model";

/// A span of trading days as its first and last date.
#[derive(Debug, Clone, Serialize)]
pub struct Dates {
    pub first: chrono::NaiveDate,
    pub last: chrono::NaiveDate,
    pub days: usize,
}

/// `job.json`: everything a trainer is told about its job.
#[derive(Debug, Clone, Serialize)]
pub struct JobFile {
    pub format: &'static str,
    /// The job's key (64 hex digits).
    pub job: String,
    /// The spec's name for the model, and the registered trainer's.
    pub model: String,
    pub trainer: String,
    /// The model's `options`, as the spec gives them.
    pub options: serde_json::Value,
    pub seed: u64,
    /// Every trained horizon (trading days); each has a target column `fwd_ret_{h}` in
    /// the training file.
    pub horizons: Vec<u32>,
    pub primary_horizon: u32,
    /// K of P@K: a count, or a fraction of each day's universe.
    pub k: wf_shared::metric::TopK,
    pub features: Vec<String>,
    pub targets: Vec<String>,
    pub retrain_date: chrono::NaiveDate,
    pub embargo: u32,
    /// The training rows' days: those fitted, then those marked for validation (the
    /// purge gap between them is left out).
    pub fit: Option<Dates>,
    pub validation: Option<Dates>,
    pub score: Option<Dates>,
    pub train_file: String,
    pub train_rows: usize,
    pub score_file: String,
    pub score_rows: usize,
    /// Where the trainer writes its scores, and may write its model.
    pub scores_file: String,
    pub model_dir: String,
    /// `cpu`, or `cuda:N` when the worker trains on a GPU.
    pub device: String,
    /// Seconds the trainer may run before it is killed; `None`: no limit.
    pub time_limit_seconds: Option<f64>,
}

/// What an external job produced.
#[derive(Debug)]
pub struct Ran {
    /// `[day][horizon column][row of the day]`, as a built-in model's scores.
    pub by_column: Vec<Vec<Vec<f64>>>,
    pub seconds: f64,
    pub fit_days: usize,
    pub validation_days: usize,
    /// Where the trainer's `model/` directory was kept, when it wrote one.
    pub model: Option<PathBuf>,
}

/// Refuses training rows on `days` unless the label of each (at the longest of
/// `horizons`, with `embargo` more days) matures before `retrain_day`: the rule of the
/// split audit, checked on the days actually written.
pub fn check_train_days(days: &[Range<usize>], longest: u32, embargo: u32, retrain_day: usize) -> Result<(), String> {
    let last = days.iter().filter(|d| !d.is_empty()).map(|d| d.end - 1).max();
    match last {
        Some(last) if last + longest as usize + embargo as usize >= retrain_day => Err(format!(
            "the training file would hold day {last}, whose label at horizon {longest} (embargo {embargo}) matures on \
             day {}, not before the retrain day {retrain_day}",
            last + longest as usize
        )),
        _ => Ok(()),
    }
}

/// Refuses a score file whose columns include a target (or anything but the date, the
/// code and the features).
pub fn check_score_columns(names: &[String], panel: &Panel) -> Result<(), String> {
    let allowed = |name: &str| name == "date" || name == "code" || panel.feature_names().iter().any(|f| f == name);
    match names.iter().find(|name| !allowed(name)) {
        Some(name) => Err(format!("the score file would hold column {name:?}, which is not a feature")),
        None => Ok(()),
    }
}

/// Refuses a training file with a column other than the date, the code, the features,
/// the targets of `horizons` and the validation mark.
pub fn check_train_columns(names: &[String], panel: &Panel, horizons: &[u32]) -> Result<(), String> {
    let targets: Vec<String> = horizons.iter().map(|h| target_name(*h)).collect();
    let allowed = |name: &str| {
        name == "date"
            || name == "code"
            || name == VALIDATION_COLUMN
            || targets.iter().any(|t| t == name)
            || panel.feature_names().iter().any(|f| f == name)
    };
    match names.iter().find(|name| !allowed(name)) {
        Some(name) => Err(format!("the training file would hold column {name:?}")),
        None => Ok(()),
    }
}

fn dates(panel: &Panel, days: &Range<usize>) -> Option<Dates> {
    let calendar = panel.calendar();
    (!days.is_empty()).then(|| Dates {
        first: calendar.date(days.start).unwrap_or_default(),
        last: calendar.date(days.end - 1).unwrap_or_default(),
        days: days.len(),
    })
}

/// The job's directory: made fresh under the work folder, removed when dropped.
fn job_dir(trainers: &Trainers, job: &Job) -> Result<tempfile::TempDir, WorkerError> {
    let root = trainers.work_folder();
    std::fs::create_dir_all(&root).map_err(|e| artifact(&root, e))?;
    tempfile::Builder::new().prefix(&format!("{}-", job.key.short())).tempdir_in(&root).map_err(|e| artifact(&root, e))
}

fn artifact(path: &Path, error: impl std::fmt::Display) -> WorkerError {
    WorkerError::Artifact { path: path.display().to_string(), reason: error.to_string() }
}

/// Runs external `job` of `config` on `panel`: writes its directory, runs the trainer,
/// reads its scores back. `deadline` is the job's hard deadline.
#[allow(clippy::too_many_arguments)]
pub fn run(
    panel: &Panel,
    config: &SweepConfig,
    job: &Job,
    spec: &ModelSpec,
    device: &str,
    trainers: &Trainers,
    stop: Option<&AtomicBool>,
    deadline: Option<Instant>,
) -> Result<Ran, WorkerError> {
    let ModelSpec::External { trainer, options, validation_days, pin } = spec else {
        return Err(WorkerError::NoData("not an external model".into()));
    };
    let fail = |reason: String, retryable: bool| WorkerError::Trainer { trainer: trainer.clone(), reason, retryable };
    let registration = trainers
        .get(trainer)
        .ok_or_else(|| fail(format!("trainer {trainer:?} is not registered on this worker"), false))?;
    if pin.as_ref() != Some(&registration.pin) {
        return Err(fail(
            format!(
                "this worker's program hashes {} (version {:?}), but the job was planned with {}",
                registration.pin.program,
                registration.pin.version,
                pin.as_ref().map_or_else(|| "no pin".to_string(), ToString::to_string)
            ),
            false,
        ));
    }
    registration.unchanged().map_err(|reason| fail(reason, false))?;
    let longest = config.longest_horizon();
    let (fit, validation) = split_window(job.train_days.clone(), *validation_days as usize, longest as usize);
    check_train_days(&[fit.clone(), validation.clone()], longest, config.embargo, job.retrain_day)
        .map_err(|reason| WorkerError::Leakage { job: job.key.short(), reason })?;

    let dir = job_dir(trainers, job)?;
    let path = |name: &str| dir.path().join(name);
    let written = |e: wf_data::DataError| WorkerError::Data { retryable: e.retryable(), reason: e.to_string() };
    let train_rows =
        write_train(&path(TRAIN_FILE), panel, fit.clone(), validation.clone(), &config.horizons).map_err(written)?;
    let score_rows = write_score(&path(SCORE_FILE), panel, job.score_days.clone()).map_err(written)?;
    // Checked as written, from the files themselves.
    let leak = |reason: String| WorkerError::Leakage { job: job.key.short(), reason };
    check_train_columns(&column_names(&path(TRAIN_FILE)).map_err(written)?, panel, &config.horizons).map_err(leak)?;
    check_score_columns(&column_names(&path(SCORE_FILE)).map_err(written)?, panel).map_err(leak)?;

    let model_name = config.models.get(job.model).map(|m| m.name.clone()).unwrap_or_default();
    let file = JobFile {
        format: JOB_FORMAT,
        job: job.key.to_string(),
        model: model_name,
        trainer: trainer.clone(),
        options: options.clone(),
        seed: job.seed,
        horizons: config.horizons.clone(),
        primary_horizon: config.primary_horizon,
        k: config.k,
        features: panel.feature_names().to_vec(),
        targets: config.horizons.iter().map(|h| target_name(*h)).collect(),
        retrain_date: panel.calendar().date(job.retrain_day).unwrap_or_default(),
        embargo: config.embargo,
        fit: dates(panel, &fit),
        validation: dates(panel, &validation),
        score: dates(panel, &job.score_days),
        train_file: TRAIN_FILE.into(),
        train_rows,
        score_file: SCORE_FILE.into(),
        score_rows,
        scores_file: SCORES_FILE.into(),
        model_dir: MODEL_DIR.into(),
        device: device.to_string(),
        time_limit_seconds: deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64()),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| artifact(&path("job.json"), e))?;
    std::fs::write(path("job.json"), json).map_err(|e| artifact(&path("job.json"), e))?;

    let started = Instant::now();
    let limits = Limits { stop, deadline, memory: trainers.memory };
    let short = job.key.short();
    let ran = if registration.persistent {
        match trainers.server(registration) {
            Ok(mut server) => {
                let ran = server.job(&job.key.to_string(), dir.path(), (trainer, &short), limits);
                trainers.idle(trainer, server);
                ran
            }
            Err(failure) => Err(failure),
        }
    } else {
        process::run(&registration.program, &[dir.path()], dir.path(), (trainer, &short), limits)
    };
    ran.map_err(|failure| match failure {
        Failure::Stopped => WorkerError::Stopped,
        Failure::TimedOut(ran) => {
            fail(format!("killed at the job's time limit, after {:.1} s", ran.as_secs_f64()), false)
        }
        Failure::Retry(reason) => fail(reason, true),
        Failure::Failed(reason) => fail(reason, false),
    })?;
    let seconds = started.elapsed().as_secs_f64();
    info!(trainer = %trainer, job = %short, seconds, "trainer done");

    let scores_path = path(SCORES_FILE);
    if !scores_path.is_file() {
        return Err(fail(format!("exited with 0 but wrote no {SCORES_FILE}"), false));
    }
    let columns = read_scores(&scores_path, panel, job.score_days.clone(), &config.horizons)
        .map_err(|e| fail(format!("refused its scores: {e}"), false))?;
    let mut by_column = Vec::with_capacity(job.score_days.len());
    let first = if job.score_days.is_empty() { 0 } else { panel.rows_of_day(job.score_days.start).start };
    for day in job.score_days.clone() {
        let rows = panel.rows_of_day(day);
        let range = rows.start - first..rows.end - first;
        by_column.push(columns.iter().map(|column| column[range.clone()].to_vec()).collect());
    }
    let model = keep_model(trainers, dir.path(), job)?;
    Ok(Ran { by_column, seconds, fit_days: fit.len(), validation_days: validation.len(), model })
}

/// Moves the trainer's `model/` directory, if it wrote one, to `models/<job key>/` of the
/// work folder (replacing an older one).
fn keep_model(trainers: &Trainers, dir: &Path, job: &Job) -> Result<Option<PathBuf>, WorkerError> {
    let written = dir.join(MODEL_DIR);
    if !written.is_dir() {
        return Ok(None);
    }
    let root = trainers.work_folder();
    let kept = root.join("models").join(job.key.to_string());
    std::fs::create_dir_all(root.join("models")).map_err(|e| artifact(&kept, e))?;
    if kept.exists() {
        std::fs::remove_dir_all(&kept).map_err(|e| artifact(&kept, e))?;
    }
    std::fs::rename(&written, &kept).map_err(|e| artifact(&kept, e))?;
    Ok(Some(kept))
}
