//! A job's identity: everything its result depends on, as canonical JSON. The job key
//! is the BLAKE3 hash of that text, and every committed result carries the text itself,
//! so a reused result can be checked field by field against the job it stands for.
//!
//! The JSON is written from [`JobIdentity`] by `serde_json`: fields in declaration
//! order, numbers in their shortest round-trip form, so the same job always gives the
//! same bytes. Adding, removing or reordering a field changes every key: bump
//! [`JOB_FORMAT`] when doing so.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::dataset::DatasetHash;
use crate::model::ModelSpec;
use crate::spec::TopK;

/// The identity format, part of every identity; bumped when [`JobIdentity`] changes.
pub const JOB_FORMAT: &str = "walkforward-job-v3";

/// Everything a job's result depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobIdentity {
    pub format: String,
    /// [`crate::model::TRAINER_VERSION`] of the code that trains and scores.
    pub trainer: u32,
    /// The data the job reads, by its days: not the whole panel's hash, so the same job
    /// on a panel that has grown since (new days appended) keeps its key.
    pub data: DataRead,
    /// The feature columns the model reads, in order.
    pub features: Vec<String>,
    /// Kind and hyperparameters with every default applied (loss weights included).
    pub model: ModelSpec,
    pub seed: u64,
    /// First and last training dates.
    pub train: [NaiveDate; 2],
    /// Horizons trained jointly, in the spec's order.
    pub horizons: Vec<u32>,
    /// The horizon scored into P@K, RankIC and the other metrics of a day.
    pub primary_horizon: u32,
    /// K of P@K, a count or a fraction.
    pub k: TopK,
    /// Trading days between the last training label and the retrain date.
    pub embargo: u32,
    /// First and last scored dates; absent for a training-only job (a live retrain
    /// decided past the last day whose labels have matured: [`super::training_job`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<[NaiveDate; 2]>,
    /// How many ranks of each scored day the result keeps, when not the default
    /// ([`crate::backtest::DEFAULT_DEPTH`]); absent from the text otherwise, so jobs of
    /// specs without a deeper backtest keep their keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<crate::backtest::Depth>,
}

/// The days a job reads and the digest of their values
/// ([`crate::dataset::DayView::data_digest`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRead {
    /// First and last days whose features it reads (its model's look-back before the
    /// first training day included, through its last scored day).
    pub days: [NaiveDate; 2],
    /// Digest of those days' row keys and features, and of its training and scored
    /// days' targets.
    pub digest: DatasetHash,
}

impl JobIdentity {
    /// The canonical JSON text.
    pub fn to_canonical(&self) -> String {
        // A struct of strings, numbers and dates: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an identity back from its text.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The fields in which two identity texts differ, as `path: stored → planned` (at most
/// `limit` of them); for logs and refusal messages. Texts that are not JSON objects
/// differ as a whole.
pub fn identity_differences(stored: &str, planned: &str, limit: usize) -> Vec<String> {
    fn walk(path: &str, stored: &serde_json::Value, planned: &serde_json::Value, out: &mut Vec<String>) {
        match (stored, planned) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for name in names {
                    let null = serde_json::Value::Null;
                    let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                    walk(&child, a.get(name).unwrap_or(&null), b.get(name).unwrap_or(&null), out);
                }
            }
            (a, b) if a != b => {
                let short = |v: &serde_json::Value| {
                    let text = v.to_string();
                    if text.len() > 80 { format!("{}…", text.chars().take(80).collect::<String>()) } else { text }
                };
                out.push(format!("{path}: {} → {}", short(a), short(b)));
            }
            _ => {}
        }
    }
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap_or(serde_json::Value::Null);
    let mut out = Vec::new();
    walk("", &parse(stored), &parse(planned), &mut out);
    if out.is_empty() && stored != planned {
        out.push("the texts differ in form, not in value".into());
    }
    out.truncate(limit);
    out
}

/// A job's key: the BLAKE3 hash of its [`JobIdentity`]'s canonical JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobKey(DatasetHash);

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for JobKey {
    type Error = crate::dataset::ParseDatasetHashError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Ok(Self(text.parse()?))
    }
}

impl From<JobKey> for String {
    fn from(key: JobKey) -> Self {
        key.to_string()
    }
}

impl JobKey {
    pub fn short(&self) -> String {
        self.0.short()
    }

    /// 64 bits of the key, to spread per-job choices such as retry jitter.
    pub fn salt(&self) -> u64 {
        self.0.prefix_u64()
    }
}

impl JobKey {
    /// The key of a job whose canonical identity is `text`.
    pub fn of_identity(text: &str) -> Self {
        Self(DatasetHash::from_bytes(*blake3::hash(text.as_bytes()).as_bytes()))
    }
}
