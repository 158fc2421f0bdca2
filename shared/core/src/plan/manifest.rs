//! The split manifest: for every job, its training dates, the last label date, the
//! retrain date and the scoring range, as dates; and the audit that proves the purge.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{JobKey, Plan};
use crate::cadence::Cadence;
use crate::calendar::TradingCalendar;
use crate::dataset::DatasetHash;
use crate::spec::SweepConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestJob {
    pub key: JobKey,
    pub model: String,
    pub seed: u64,
    pub window: u32,
    pub retrain_date: NaiveDate,
    pub train_first: NaiveDate,
    pub train_last: NaiveDate,
    /// Date whose close gives the label of the last training day.
    pub last_label_date: NaiveDate,
    pub score_first: NaiveDate,
    pub score_last: NaiveDate,
    pub cadences: Vec<Cadence>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub sweep: String,
    pub dataset: DatasetHash,
    pub longest_horizon: u32,
    pub embargo: u32,
    pub jobs_before_dedup: u64,
    pub jobs: Vec<ManifestJob>,
}

impl Manifest {
    pub fn new(config: &SweepConfig, dataset: DatasetHash, calendar: &TradingCalendar, plan: &Plan) -> Self {
        let date = |day: usize| calendar.date(day).unwrap_or_default();
        let h = plan.longest_horizon as usize;
        let jobs = plan
            .jobs
            .iter()
            .map(|job| ManifestJob {
                key: job.key,
                model: config.models[job.model].name.clone(),
                seed: job.seed,
                window: job.window,
                retrain_date: date(job.retrain_day),
                train_first: date(job.train_days.start),
                train_last: date(job.train_days.end - 1),
                last_label_date: date(job.train_days.end - 1 + h),
                score_first: date(job.score_days.start),
                score_last: date(job.score_days.end - 1),
                cadences: job.cadences.clone(),
            })
            .collect();
        Self {
            sweep: config.name.clone(),
            dataset,
            longest_horizon: plan.longest_horizon,
            embargo: plan.embargo,
            jobs_before_dedup: plan.jobs_before_dedup,
            jobs,
        }
    }
}

/// A job whose split breaks a rule, and which rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditFinding {
    pub key: JobKey,
    pub problem: String,
}

/// Re-derives every job's split from its dates on `calendar` and from the spec alone
/// (its longest horizon `h` and embargo `e`), independently of the planner and of the
/// horizon, embargo and label dates the manifest records: the label of the last
/// training day (the close `h` trading days later) must come at least `e + 1` trading
/// days before the retrain date, the window must hold exactly `window` trading days,
/// and scoring must start at the retrain date. Returns the jobs that break a rule
/// (empty: no leakage).
pub fn audit(manifest: &Manifest, calendar: &TradingCalendar, config: &SweepConfig) -> Vec<AuditFinding> {
    let mut findings = Vec::new();
    let h = config.longest_horizon() as usize;
    let e = config.embargo as usize;
    for job in &manifest.jobs {
        let mut problem = |text: String| findings.push(AuditFinding { key: job.key, problem: text });
        let (Some(first), Some(last), Some(retrain)) = (
            calendar.index_of(job.train_first),
            calendar.index_of(job.train_last),
            calendar.index_of(job.retrain_date),
        ) else {
            problem("a date is not on the calendar".into());
            continue;
        };
        let label = calendar.date(last + h);
        if label.is_none_or(|_| last + h + e >= retrain) {
            let embargo = if e == 0 { String::new() } else { format!(" plus an embargo of {e} trading days") };
            problem(format!(
                "the label of {} at horizon {h} (dated {}) is not known before {}{embargo}",
                job.train_last,
                label.map_or_else(|| "past the calendar".to_string(), |d| d.to_string()),
                job.retrain_date
            ));
        }
        if label != Some(job.last_label_date) {
            problem(format!("the manifest dates the last label {}, the calendar {label:?}", job.last_label_date));
        }
        if last < first || last + 1 - first != job.window as usize {
            problem(format!("the window holds {} trading days, not {}", (last + 1).saturating_sub(first), job.window));
        }
        if job.score_first != job.retrain_date || retrain <= last {
            problem(format!("scoring starts {} for a model live from {}", job.score_first, job.retrain_date));
        }
    }
    findings
}
