//! Sweep specs: what a user submits (TOML), and its validation into a [`SweepConfig`].
//!
//! Parsing refuses unknown fields; validation collects every problem, each naming the
//! field's path and the reason (`plan.train_windows[1]: must be > 0`). Checks that need
//! the dataset's calendar (history before the start, K against the universe) are done by
//! the planner, with the same error shape.

mod raw;

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::cadence::Cadence;
pub use crate::metric::TopK;
pub use raw::{MAX_SPEC_BYTES, MAX_TRAINER_VERSION, SweepSpec};

/// One problem with a spec: the field's path and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every problem found with a spec (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

impl SpecErrors {
    pub fn one(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self(vec![SpecError::new(field, reason)])
    }

    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }
}

/// A model to train: a name unique in the sweep, its kind, hyperparameters and seeds.
/// Each seed is a separate model for planning and dedup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub kind: ModelKind,
    /// Hyperparameters as given (validated by the models library); sorted by name, so
    /// their canonical JSON is stable for job keys.
    pub params: BTreeMap<String, serde_json::Value>,
    pub seeds: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Linear,
    Mlp,
    Patchtst,
    /// Ranks by one feature (with a sign), untrained: a baseline.
    Factor,
    /// Gradient-boosted regression trees on the primary horizon's transformed target.
    Gbdt,
    /// A program registered on the workers trains and scores (`docs/TRAINERS.md`).
    External,
}

/// Which quality the performance trigger watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceMetric {
    DeltaPAtK,
    PAtK,
}

/// The grid of adaptive-retrain policies to replay. Each list is a grid axis; an absent
/// section is a trigger not used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerGrid {
    pub performance: Option<PerformanceGrid>,
    pub drift: Option<DriftGrid>,
    pub age: Option<AgeGrid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceGrid {
    pub metric: PerformanceMetric,
    /// Retrain when the mean over the last `lookback` matured days is below `tau`.
    pub tau: Vec<f64>,
    pub lookback: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftGrid {
    /// PSI above which a feature has drifted.
    pub theta: Vec<f64>,
    /// Share of features that must drift.
    pub share: Vec<f64>,
    /// Over the last `days` trading days.
    pub days: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeGrid {
    /// Retrain when the live model is at least this many trading days old.
    pub max_age: Vec<u32>,
}

/// A validated sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    pub name: String,
    /// Path or URL of the panel.
    pub panel: String,
    /// The dataset the sweep must run on, when pinned (the hash of the panel as the
    /// sweep reads it: with only the `features` below, when given).
    pub content_hash: Option<crate::dataset::DatasetHash>,
    /// The feature columns to read, in order; `None`: the panel's declared features.
    pub features: Option<Vec<String>>,
    /// Retrain dates fall in `start ..= end`.
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub train_windows: Vec<u32>,
    pub cadences: Vec<Cadence>,
    /// Horizons trained jointly; the purge uses the longest.
    pub horizons: Vec<u32>,
    pub primary_horizon: u32,
    pub embargo: u32,
    pub max_age: u32,
    pub k: TopK,
    /// What a pick must beat to count in P@K: the triggers, replays and verdict read
    /// ΔP@K on this basis (`[metrics] basis`, default median).
    #[serde(default)]
    pub basis: crate::metric::Basis,
    pub bootstrap_samples: u32,
    pub bootstrap_seed: u64,
    pub models: Vec<ModelConfig>,
    pub triggers: TriggerGrid,
    pub max_jobs: u64,
    /// The portfolio backtest grid; `None`: no backtest.
    pub backtest: Option<crate::backtest::BacktestGrid>,
    /// How a schedule is chosen out of sample (`[selection]`); report-only, not part of
    /// any job's identity.
    #[serde(default)]
    pub selection: SelectionConfig,
    /// `[trainers.NAME]`: the identity of each external trainer the models name, pinned
    /// by the coordinator at submission from its registrations (or written by the user,
    /// then checked against them). Part of the identity of every job of those models.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trainers: BTreeMap<String, TrainerPin>,
}

/// What identifies an external trainer (`docs/TRAINERS.md`, "Identity"): the BLAKE3 hash
/// of its program file and of the files its registration lists, in order, and the line
/// its program prints for `--version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerPin {
    /// 64 lowercase hex digits.
    pub program: String,
    pub version: String,
}

impl TrainerPin {
    /// The program hash's first 12 digits, for messages.
    pub fn short(&self) -> &str {
        self.program.get(..12).unwrap_or(&self.program)
    }
}

impl fmt::Display for TrainerPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program {} version {:?}", self.program, self.version)
    }
}

/// Whether `name` may name a trainer: 1 to 64 of ASCII letters, digits, `_` and `-`
/// (a bare TOML key, a file name, a metric label).
pub fn is_trainer_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[selection]`: walk-forward choice of a schedule at each decision day, by its trailing
/// mean over `lookback` matured days (`wf_shared::replay::select`). Each lookback is one
/// more selector, and counts as one more trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionConfig {
    pub lookbacks: Vec<u32>,
    pub among: Among,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self { lookbacks: vec![63, 126], among: Among::Adaptive }
    }
}

/// Which schedules a selector chooses among (those covering the whole period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Among {
    /// The adaptive policies.
    Adaptive,
    /// The fixed cadences and the adaptive policies.
    All,
}

impl SweepConfig {
    pub fn longest_horizon(&self) -> u32 {
        self.horizons.iter().copied().max().unwrap_or(1)
    }

    /// Model instances (model, seed) in spec order.
    pub fn model_seeds(&self) -> impl Iterator<Item = (&ModelConfig, u64)> {
        self.models.iter().flat_map(|m| m.seeds.iter().map(move |s| (m, *s)))
    }
}

#[cfg(test)]
pub(crate) mod tests;
