//! The spec as written (serde, unknown fields refused) and its validation.
//!
//! Numbers are read as signed integers so that `-5` reaches validation and gets a
//! message naming the field, instead of a type error.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{
    AgeGrid, Among, DriftGrid, ModelConfig, ModelKind, PerformanceGrid, PerformanceMetric, SelectionConfig, SpecError,
    SpecErrors, SweepConfig, TopK, TriggerGrid,
};
use crate::backtest::{BacktestGrid, DEFAULT_DEPTH, Depth, MAX_SETTINGS, Rebalance};
use crate::cadence::Cadence;

impl SweepConfig {
    /// Parses and validates a TOML spec.
    pub fn from_toml(text: &str) -> Result<Self, SpecErrors> {
        SweepSpec::parse(text)?.validate()
    }
}

/// Default upper limit on the jobs of one sweep.
pub const DEFAULT_MAX_JOBS: i64 = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub name: String,
    pub dataset: DatasetSection,
    pub evaluation: EvaluationSection,
    pub plan: PlanSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    pub models: Vec<ModelSection>,
    #[serde(default)]
    pub triggers: TriggersSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// The portfolio backtest grid (issue 17); absent: no backtest.
    #[serde(default)]
    pub backtest: Option<BacktestSection>,
    /// Untrained baselines added to the models.
    #[serde(default)]
    pub baselines: Option<BaselinesSection>,
    /// Choosing a schedule out of sample.
    #[serde(default)]
    pub selection: SelectionSection,
    /// The identities of the external trainers the models name (`docs/TRAINERS.md`).
    #[serde(default)]
    pub trainers: BTreeMap<String, crate::spec::TrainerPin>,
}

/// `[selection]`: the selectors' lookbacks (matured days) and their pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionSection {
    #[serde(default)]
    pub lookback: Option<OneOrMany<i64>>,
    /// `"adaptive"` (default) or `"all"`.
    #[serde(default)]
    pub among: Option<String>,
}

/// `[baselines]`: one-line rules reported next to the models.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselinesSection {
    /// Each a `factor` model ranking by one feature, optionally negated (`"-vol_60"`),
    /// named as written.
    #[serde(default)]
    pub factors: Vec<String>,
}

/// One value or a list of them: an axis of a grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn values(&self) -> Vec<T> {
        match self {
            Self::One(value) => vec![value.clone()],
            Self::Many(values) => values.clone(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(values) => values.len(),
        }
    }
}

/// A number or a word (`"weekly"`, `"unlimited"`, `"all"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumberOrWord {
    Integer(i64),
    Float(f64),
    Word(String),
}

impl std::fmt::Display for NumberOrWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Integer(value) => write!(f, "{value}"),
            Self::Float(value) => write!(f, "{value}"),
            Self::Word(word) => write!(f, "{word:?}"),
        }
    }
}

/// A real number written as an integer or a float.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Real {
    Integer(i64),
    Float(f64),
}

impl Real {
    fn value(self) -> f64 {
        match self {
            Self::Integer(value) => value as f64,
            Self::Float(value) => value,
        }
    }
}

/// `[backtest]`: every field may be one value or a list (docs/ANALYTICS.md, "Backtest").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestSection {
    pub k: OneOrMany<i64>,
    pub rebalance: OneOrMany<NumberOrWord>,
    #[serde(default = "zero_integer")]
    pub buffer: OneOrMany<i64>,
    #[serde(default = "unlimited")]
    pub max_replace: OneOrMany<NumberOrWord>,
    #[serde(default = "zero_real")]
    pub min_trade: OneOrMany<Real>,
    #[serde(default = "ten_bps")]
    pub buy_bps: OneOrMany<Real>,
    #[serde(default = "ten_bps")]
    pub sell_bps: OneOrMany<Real>,
    #[serde(default = "zero_real")]
    pub impact: OneOrMany<Real>,
    #[serde(default = "default_capital")]
    pub capital: OneOrMany<Real>,
    /// Currency per training, for the frontier's total cost (one value, not a grid axis).
    pub retrain_cost: Option<Real>,
    pub depth: Option<NumberOrWord>,
}

fn zero_integer() -> OneOrMany<i64> {
    OneOrMany::One(0)
}

fn unlimited() -> OneOrMany<NumberOrWord> {
    OneOrMany::One(NumberOrWord::Word("unlimited".into()))
}

fn zero_real() -> OneOrMany<Real> {
    OneOrMany::One(Real::Integer(0))
}

fn ten_bps() -> OneOrMany<Real> {
    OneOrMany::One(Real::Integer(10))
}

fn default_capital() -> OneOrMany<Real> {
    OneOrMany::One(Real::Float(1e8))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    pub panel: String,
    pub content_hash: Option<String>,
    /// The feature columns the models read, in order. Required for a panel that does
    /// not declare its features (one not written by `wf data prepare`).
    pub features: Option<Vec<String>>,
}

/// A date written as a TOML date (`2020-01-06`) or a string (`"2020-01-06"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DateValue {
    Toml(toml::value::Datetime),
    Text(String),
}

impl DateValue {
    fn to_date(&self) -> Option<NaiveDate> {
        match self {
            Self::Toml(value) => {
                let date = value.date.filter(|_| value.time.is_none())?;
                NaiveDate::from_ymd_opt(i32::from(date.year), u32::from(date.month), u32::from(date.day))
            }
            Self::Text(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSection {
    pub start: DateValue,
    pub end: DateValue,
}

fn default_embargo() -> i64 {
    0
}

fn default_max_age() -> i64 {
    252
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSection {
    pub train_windows: Vec<i64>,
    pub cadences: Vec<String>,
    pub horizons: Vec<i64>,
    pub primary_horizon: Option<i64>,
    #[serde(default = "default_embargo")]
    pub embargo: i64,
    #[serde(default = "default_max_age")]
    pub max_age: i64,
}

/// K as a count (`50`), a fraction (`0.1`) or a percentage (`"10%"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KValue {
    Count(i64),
    Fraction(f64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub k: KValue,
    pub bootstrap_samples: i64,
    pub bootstrap_seed: u64,
    /// `"median"` (default) or `"zero"`.
    #[serde(default)]
    pub basis: Option<String>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { k: KValue::Count(50), bootstrap_samples: 1000, bootstrap_seed: 7, basis: None }
    }
}

/// The longest list a spec may hold (windows, cadences, horizons, models, trigger grids).
pub const MAX_LIST: usize = 64;
/// The most selection lookbacks (each is one more selector to replay and one more trial).
pub const MAX_SELECTORS: usize = 16;
/// The longest selection lookback, in trading days (ten years).
pub const MAX_LOOKBACK: i64 = 2_520;
/// The most seeds one model may list.
pub const MAX_SEEDS: usize = 1_000;
/// The longest spec text (real specs are a few kilobytes; the largest the list limits
/// allow, 64 models of 1,000 seeds each, is about 400 KB).
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// The longest version line an external trainer may report.
pub const MAX_TRAINER_VERSION: usize = 200;

fn default_seeds() -> Vec<i64> {
    vec![0]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: String,
    pub kind: String,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<i64>,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersSection {
    pub performance: Option<PerformanceSection>,
    pub drift: Option<DriftSection>,
    pub age: Option<AgeSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceSection {
    #[serde(default = "default_metric")]
    pub metric: String,
    pub tau: Vec<f64>,
    pub lookback: Vec<i64>,
}

fn default_metric() -> String {
    "delta_p_at_k".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSection {
    pub theta: Vec<f64>,
    pub share: Vec<f64>,
    pub days: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeSection {
    pub max_age: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_jobs: i64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self { max_jobs: DEFAULT_MAX_JOBS }
    }
}

/// Collects problems while converting fields.
#[derive(Default)]
struct Problems(Vec<SpecError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(SpecError::new(field, reason));
    }

    /// Positive integers in `min ..= max`, no duplicates.
    fn positive_list(&mut self, field: &str, values: &[i64], max: i64) -> Vec<u32> {
        if values.is_empty() {
            self.add(field, "must not be empty");
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (index, value) in values.iter().enumerate() {
            if *value <= 0 {
                self.add(format!("{field}[{index}]"), "must be > 0");
            } else if *value > max {
                self.add(format!("{field}[{index}]"), format!("must be <= {max}, got {value}"));
            } else if !seen.insert(*value) {
                self.add(format!("{field}[{index}]"), format!("{value} appears twice"));
            } else {
                out.push(*value as u32);
            }
        }
        out
    }

    fn fractions(&mut self, field: &str, values: &[f64], low_open: f64, high: f64, what: &str) -> Vec<f64> {
        if values.is_empty() {
            self.add(field, "must not be empty");
        }
        for (index, value) in values.iter().enumerate() {
            if !(value.is_finite() && *value > low_open && *value <= high) {
                self.add(format!("{field}[{index}]"), format!("{what}, got {value}"));
            }
        }
        values.to_vec()
    }
}

/// Longest window, horizon or age a spec may name: about 20 years of trading days.
const MAX_DAYS: i64 = 5_000;

impl SweepSpec {
    /// Parses TOML, naming the field of any type error or unknown field.
    pub fn parse(text: &str) -> Result<Self, SpecErrors> {
        // Before parsing: the parse is the one cost that grows with the text.
        if text.len() > MAX_SPEC_BYTES {
            return Err(SpecErrors::one(
                "spec",
                format!("{} bytes, more than the limit of {MAX_SPEC_BYTES} (1 MiB)", text.len()),
            ));
        }
        let deserializer =
            toml::Deserializer::parse(text).map_err(|error| SpecErrors::one("spec", one_line(&error.to_string())))?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let field = if path.is_empty() || path == "." { "spec".to_string() } else { path };
            SpecErrors::one(field, one_line(&error.into_inner().to_string()))
        })
    }

    /// The lists of the spec longer than their limit ([`MAX_LIST`], [`MAX_SEEDS`]),
    /// each named with its length: checked before anything else, in time linear in the
    /// number of lists, so that a hostile spec costs nothing beyond its parsing.
    fn oversized_lists(&self) -> Vec<SpecError> {
        let mut lists: Vec<(String, usize, usize)> = vec![
            ("plan.train_windows".into(), self.plan.train_windows.len(), MAX_LIST),
            ("plan.cadences".into(), self.plan.cadences.len(), MAX_LIST),
            ("plan.horizons".into(), self.plan.horizons.len(), MAX_LIST),
            ("models".into(), self.models.len(), MAX_LIST),
            ("baselines.factors".into(), self.baselines.as_ref().map_or(0, |b| b.factors.len()), MAX_LIST),
            ("selection.lookback".into(), self.selection.lookback.as_ref().map_or(0, |l| l.len()), MAX_SELECTORS),
            ("dataset.features".into(), self.dataset.features.as_ref().map_or(0, Vec::len), 4 * MAX_LIST),
            ("trainers".into(), self.trainers.len(), MAX_LIST),
        ];
        for (index, model) in self.models.iter().enumerate().take(MAX_LIST) {
            lists.push((format!("models[{index}].seeds"), model.seeds.len(), MAX_SEEDS));
        }
        if let Some(performance) = &self.triggers.performance {
            lists.push(("triggers.performance.tau".into(), performance.tau.len(), MAX_LIST));
            lists.push(("triggers.performance.lookback".into(), performance.lookback.len(), MAX_LIST));
        }
        if let Some(drift) = &self.triggers.drift {
            lists.push(("triggers.drift.theta".into(), drift.theta.len(), MAX_LIST));
            lists.push(("triggers.drift.share".into(), drift.share.len(), MAX_LIST));
            lists.push(("triggers.drift.days".into(), drift.days.len(), MAX_LIST));
        }
        if let Some(backtest) = &self.backtest {
            for (name, len) in [
                ("k", backtest.k.len()),
                ("rebalance", backtest.rebalance.len()),
                ("buffer", backtest.buffer.len()),
                ("max_replace", backtest.max_replace.len()),
                ("min_trade", backtest.min_trade.len()),
                ("buy_bps", backtest.buy_bps.len()),
                ("sell_bps", backtest.sell_bps.len()),
                ("impact", backtest.impact.len()),
                ("capital", backtest.capital.len()),
            ] {
                lists.push((format!("backtest.{name}"), len, MAX_LIST));
            }
        }
        if let Some(age) = &self.triggers.age {
            lists.push(("triggers.age.max_age".into(), age.max_age.len(), MAX_LIST));
        }
        lists
            .into_iter()
            .filter(|(_, length, limit)| length > limit)
            .map(|(field, length, limit)| {
                SpecError::new(field, format!("has {length} entries, more than the limit of {limit}"))
            })
            .collect()
    }

    /// Validates every field, collecting all problems.
    pub fn validate(&self) -> Result<SweepConfig, SpecErrors> {
        let oversized = self.oversized_lists();
        if !oversized.is_empty() {
            return Err(SpecErrors(oversized));
        }
        let mut problems = Problems::default();
        if self.name.trim().is_empty() {
            problems.add("name", "must not be empty");
        }
        if self.dataset.panel.trim().is_empty() {
            problems.add("dataset.panel", "must not be empty");
        }
        let content_hash = self.dataset.content_hash.as_ref().and_then(|hash| match hash.parse() {
            Ok(hash) => Some(hash),
            Err(error) => {
                problems.add("dataset.content_hash", format!("{error}"));
                None
            }
        });
        let features = self.dataset.features.as_ref().map(|names| {
            if names.is_empty() {
                problems.add("dataset.features", "must not be empty when given");
            }
            let mut seen = BTreeSet::new();
            for (index, name) in names.iter().enumerate() {
                let field = format!("dataset.features[{index}]");
                if name.trim().is_empty() || matches!(name.as_str(), "date" | "code") {
                    problems.add(field, format!("{name:?} is not a feature column"));
                } else if let Err(refusal) = crate::label_guard::check_feature_name(name) {
                    problems.add(field, refusal.to_string());
                } else if !seen.insert(name) {
                    problems.add(field, format!("{name:?} appears twice"));
                }
            }
            names.clone()
        });
        let start = self.evaluation.start.to_date();
        let end = self.evaluation.end.to_date();
        if start.is_none() {
            problems.add("evaluation.start", "must be a date (YYYY-MM-DD)");
        }
        if end.is_none() {
            problems.add("evaluation.end", "must be a date (YYYY-MM-DD)");
        }
        if let (Some(start), Some(end)) = (start, end)
            && end < start
        {
            problems.add("evaluation.end", format!("{end} is before evaluation.start {start}"));
        }

        let plan = &self.plan;
        let train_windows = problems.positive_list("plan.train_windows", &plan.train_windows, MAX_DAYS);
        let horizons = problems.positive_list("plan.horizons", &plan.horizons, MAX_DAYS);
        let mut cadences = Vec::new();
        if plan.cadences.is_empty() {
            problems.add("plan.cadences", "must not be empty");
        }
        for (index, text) in plan.cadences.iter().enumerate() {
            match text.parse::<Cadence>() {
                Ok(cadence) if cadences.contains(&cadence) => {
                    problems.add(format!("plan.cadences[{index}]"), format!("{cadence} appears twice"));
                }
                Ok(cadence) => cadences.push(cadence),
                Err(error) => problems.add(format!("plan.cadences[{index}]"), error.to_string()),
            }
        }
        let primary_horizon = match plan.primary_horizon {
            Some(h) if horizons.contains(&(h.max(0) as u32)) && h > 0 => h as u32,
            Some(h) => {
                problems.add("plan.primary_horizon", format!("{h} is not one of plan.horizons"));
                0
            }
            None if horizons.len() == 1 => horizons[0],
            None => {
                problems.add("plan.primary_horizon", "must be set when there are several horizons");
                0
            }
        };
        if !(0..=MAX_DAYS).contains(&plan.embargo) {
            problems.add("plan.embargo", format!("must be between 0 and {MAX_DAYS}, got {}", plan.embargo));
        }
        if !(1..=MAX_DAYS).contains(&plan.max_age) {
            problems.add("plan.max_age", format!("must be between 1 and {MAX_DAYS}, got {}", plan.max_age));
        }

        let k = match &self.metrics.k {
            KValue::Count(k) if *k > 0 && *k <= i64::from(u32::MAX) => Some(TopK::Count(*k as u32)),
            KValue::Count(k) => {
                problems.add("metrics.k", format!("must be > 0, got {k}"));
                None
            }
            KValue::Fraction(f) if *f > 0.0 && *f < 1.0 => Some(TopK::Fraction(*f)),
            KValue::Fraction(f) => {
                problems.add("metrics.k", format!("a fraction must be between 0 and 1 (exclusive), got {f}"));
                None
            }
            KValue::Text(text) => match text.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
                Some(p) if p > 0.0 && p < 100.0 => Some(TopK::Fraction(p / 100.0)),
                _ => {
                    problems.add(
                        "metrics.k",
                        format!("must be a count, a fraction or a percentage like \"10%\", got {text:?}"),
                    );
                    None
                }
            },
        };
        if !(1..=1_000_000).contains(&self.metrics.bootstrap_samples) {
            problems.add("metrics.bootstrap_samples", "must be between 1 and 1000000");
        }

        let models = self.validate_models(&mut problems);
        let triggers = self.validate_triggers(&mut problems, plan.max_age);
        let backtest = self.backtest.as_ref().and_then(|section| validate_backtest(section, &mut problems));
        if self.limits.max_jobs <= 0 {
            problems.add("limits.max_jobs", "must be > 0");
        }

        let selection = self.validate_selection(&mut problems);
        for (name, pin) in &self.trainers {
            if !crate::spec::is_trainer_name(name) {
                problems.add(format!("trainers.{name}"), "a trainer's name is 1 to 64 of letters, digits, _ and -");
            }
            if pin.program.len() != 64 || !pin.program.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                problems.add(format!("trainers.{name}.program"), "must be a BLAKE3 hash: 64 lowercase hex digits");
            }
            if pin.version.len() > MAX_TRAINER_VERSION || pin.version.chars().any(char::is_control) {
                problems.add(
                    format!("trainers.{name}.version"),
                    format!("must be one line of at most {MAX_TRAINER_VERSION} bytes"),
                );
            }
        }
        let basis = match self.metrics.basis.as_deref() {
            None | Some("median") => crate::metric::Basis::Median,
            Some("zero") => crate::metric::Basis::Zero,
            Some(other) => {
                problems.add("metrics.basis", format!("unknown basis {other:?} (expected median or zero)"));
                crate::metric::Basis::Median
            }
        };

        if !problems.0.is_empty() {
            return Err(SpecErrors(problems.0));
        }
        let (Some(start), Some(end), Some(k)) = (start, end, k) else {
            return Err(SpecErrors::one("spec", "incomplete"));
        };
        let config = SweepConfig {
            selection,
            name: self.name.clone(),
            panel: self.dataset.panel.clone(),
            content_hash,
            features,
            start,
            end,
            train_windows,
            cadences,
            horizons,
            primary_horizon,
            embargo: plan.embargo as u32,
            max_age: plan.max_age as u32,
            k,
            basis,
            bootstrap_samples: self.metrics.bootstrap_samples as u32,
            bootstrap_seed: self.metrics.bootstrap_seed,
            models,
            triggers,
            max_jobs: self.limits.max_jobs as u64,
            backtest,
            trainers: self.trainers.clone(),
        };
        Ok(config)
    }

    fn validate_models(&self, problems: &mut Problems) -> Vec<ModelConfig> {
        if self.models.is_empty() {
            problems.add("models", "must name at least one model");
        }
        let mut names = BTreeSet::new();
        let mut models = Vec::new();
        for (index, model) in self.models.iter().enumerate() {
            let field = |name: &str| format!("models[{index}].{name}");
            if model.name.trim().is_empty() {
                problems.add(field("name"), "must not be empty");
            } else if !names.insert(model.name.clone()) {
                problems.add(field("name"), format!("{:?} appears twice", model.name));
            }
            let kind = match model.kind.as_str() {
                "linear" => Some(ModelKind::Linear),
                "mlp" => Some(ModelKind::Mlp),
                "patchtst" => Some(ModelKind::Patchtst),
                "factor" => Some(ModelKind::Factor),
                "gbdt" => Some(ModelKind::Gbdt),
                "external" => Some(ModelKind::External),
                other => {
                    problems.add(
                        field("kind"),
                        format!(
                            "unknown model kind {other:?} (expected linear, mlp, patchtst, gbdt, factor or external)"
                        ),
                    );
                    None
                }
            };
            let mut seeds = Vec::new();
            let mut seen = std::collections::HashSet::with_capacity(model.seeds.len());
            if model.seeds.is_empty() {
                problems.add(field("seeds"), "must not be empty");
            }
            for (seed_index, seed) in model.seeds.iter().enumerate() {
                if *seed < 0 {
                    problems.add(format!("models[{index}].seeds[{seed_index}]"), "must be >= 0");
                } else if !seen.insert(*seed) {
                    problems.add(format!("models[{index}].seeds[{seed_index}]"), format!("{seed} appears twice"));
                } else {
                    seeds.push(*seed as u64);
                }
            }
            let params = model
                .params
                .iter()
                .filter_map(|(key, value)| match serde_json::to_value(value) {
                    Ok(json) => Some((key.clone(), json)),
                    Err(error) => {
                        problems.add(format!("models[{index}].params.{key}"), error.to_string());
                        None
                    }
                })
                .collect();
            let Some(kind) = kind else { continue };
            let twin = models.iter().position(|m: &ModelConfig| m.kind == kind && m.params == params);
            if let Some(twin) = twin
                && let Some(seed) = seeds.iter().find(|s| models[twin].seeds.contains(s))
            {
                problems.add(
                    field("seeds"),
                    format!(
                        "seed {seed} with the same kind and params as models[{twin}] would train the same model twice"
                    ),
                );
            }
            models.push(ModelConfig { name: model.name.clone(), kind, params, seeds });
        }
        let factors = self.baselines.as_ref().map_or(&[][..], |b| b.factors.as_slice());
        for (index, written) in factors.iter().enumerate() {
            let field = format!("baselines.factors[{index}]");
            let name = written.trim();
            if name.trim_start_matches(['-', '+']).trim().is_empty() {
                problems.add(field, "must name a feature, optionally negated, e.g. \"-ret_5\"");
            } else if !names.insert(name.to_string()) {
                problems.add(field, format!("{name:?} is already the name of a model or baseline"));
            } else {
                let params = [("feature".to_string(), serde_json::Value::String(name.to_string()))].into();
                models.push(ModelConfig { name: name.to_string(), kind: ModelKind::Factor, params, seeds: vec![0] });
            }
        }
        models
    }

    fn validate_selection(&self, problems: &mut Problems) -> SelectionConfig {
        let defaults = SelectionConfig::default();
        let lookbacks = match &self.selection.lookback {
            Some(lookback) => problems.positive_list("selection.lookback", &lookback.values(), MAX_LOOKBACK),
            None => defaults.lookbacks,
        };
        let among = match self.selection.among.as_deref() {
            None | Some("adaptive") => Among::Adaptive,
            Some("all") => Among::All,
            Some(other) => {
                problems.add("selection.among", format!("unknown pool {other:?} (expected adaptive or all)"));
                Among::Adaptive
            }
        };
        SelectionConfig { lookbacks, among }
    }

    fn validate_triggers(&self, problems: &mut Problems, max_age: i64) -> TriggerGrid {
        let mut grid = TriggerGrid::default();
        if let Some(section) = &self.triggers.performance {
            let metric = match section.metric.as_str() {
                "delta_p_at_k" => PerformanceMetric::DeltaPAtK,
                "p_at_k" => PerformanceMetric::PAtK,
                other => {
                    problems.add(
                        "triggers.performance.metric",
                        format!("unknown metric {other:?} (expected delta_p_at_k or p_at_k)"),
                    );
                    PerformanceMetric::DeltaPAtK
                }
            };
            // ΔP@K lies in [-1, 1] and P@K in [0, 1]: a threshold outside never or always fires.
            let (low, high) = if metric == PerformanceMetric::PAtK { (0.0, 1.0) } else { (-1.0, 1.0) };
            for (index, tau) in section.tau.iter().enumerate() {
                if !(tau.is_finite() && *tau > low && *tau <= high) {
                    problems.add(
                        format!("triggers.performance.tau[{index}]"),
                        format!("must be in ({low}, {high}] for {}, got {tau}", section.metric),
                    );
                }
            }
            if section.tau.is_empty() {
                problems.add("triggers.performance.tau", "must not be empty");
            }
            let lookback = problems.positive_list("triggers.performance.lookback", &section.lookback, max_age.max(1));
            grid.performance = Some(PerformanceGrid { metric, tau: section.tau.clone(), lookback });
        }
        if let Some(section) = &self.triggers.drift {
            let theta = problems.fractions(
                "triggers.drift.theta",
                &section.theta,
                0.0,
                10.0,
                "a PSI threshold must be in (0, 10]",
            );
            let share = problems.fractions(
                "triggers.drift.share",
                &section.share,
                0.0,
                1.0,
                "a share of features must be in (0, 1]",
            );
            let days = problems.positive_list("triggers.drift.days", &section.days, max_age.max(1));
            grid.drift = Some(DriftGrid { theta, share, days });
        }
        if let Some(section) = &self.triggers.age {
            // A model is scored up to max_age - 1: an older age limit could never fire.
            let max_age_limit = problems.positive_list("triggers.age.max_age", &section.max_age, (max_age - 1).max(1));
            grid.age = Some(AgeGrid { max_age: max_age_limit });
        }
        grid
    }
}

/// Reals of `field` in `low ..= high` (`low_open`: `low` itself excluded), no duplicates.
fn reals(problems: &mut Problems, field: &str, values: &[Real], low: f64, low_open: bool, high: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for (index, value) in values.iter().map(|v| v.value()).enumerate() {
        let above = if low_open { value > low } else { value >= low };
        if !(value.is_finite() && above && value <= high) {
            let bracket = if low_open { "(" } else { "[" };
            problems.add(format!("{field}[{index}]"), format!("must be in {bracket}{low}, {high}], got {value}"));
        } else if out.contains(&value) {
            problems.add(format!("{field}[{index}]"), format!("{value} appears twice"));
        } else {
            out.push(value);
        }
    }
    if values.is_empty() {
        problems.add(field, "must not be empty");
    }
    out
}

/// The `[backtest]` grid, or `None` with its problems added.
fn validate_backtest(section: &BacktestSection, problems: &mut Problems) -> Option<BacktestGrid> {
    let before = problems.0.len();
    let k = problems.positive_list("backtest.k", &section.k.values(), 100_000);
    let mut rebalance = Vec::new();
    for (index, value) in section.rebalance.values().iter().enumerate() {
        let field = format!("backtest.rebalance[{index}]");
        let parsed = match value {
            NumberOrWord::Integer(days) if (1..=MAX_DAYS).contains(days) => Ok(Rebalance::Days(*days as u32)),
            NumberOrWord::Word(word) => word.parse::<Rebalance>(),
            other => Err(format!("expected \"weekly\", \"monthly\" or a count of trading days, got {other}")),
        };
        match parsed {
            Ok(parsed) if rebalance.contains(&parsed) => problems.add(field, format!("{parsed} appears twice")),
            Ok(parsed) => rebalance.push(parsed),
            Err(reason) => problems.add(field, reason),
        }
    }
    if section.rebalance.len() == 0 {
        problems.add("backtest.rebalance", "must not be empty");
    }
    let mut buffer = Vec::new();
    for (index, value) in section.buffer.values().iter().enumerate() {
        let field = format!("backtest.buffer[{index}]");
        match u32::try_from(*value) {
            Ok(value) if value <= 100_000 && !buffer.contains(&value) => buffer.push(value),
            Ok(value) if value <= 100_000 => problems.add(field, format!("{value} appears twice")),
            _ => problems.add(field, format!("must be in 0 ..= 100000, got {value}")),
        }
    }
    let mut max_replace = Vec::new();
    for (index, value) in section.max_replace.values().iter().enumerate() {
        let field = format!("backtest.max_replace[{index}]");
        let parsed = match value {
            NumberOrWord::Integer(n) if (1..=100_000).contains(n) => Some(Some(*n as u32)),
            NumberOrWord::Word(word) if word == "unlimited" => Some(None),
            _ => None,
        };
        match parsed {
            Some(parsed) if max_replace.contains(&parsed) => problems.add(field, format!("{value} appears twice")),
            Some(parsed) => max_replace.push(parsed),
            None => {
                problems.add(field, format!("must be a count of names in 1 ..= 100000 or \"unlimited\", got {value}"))
            }
        }
    }
    let min_trade = reals(problems, "backtest.min_trade", &section.min_trade.values(), 0.0, false, 0.5);
    let buy_bps = reals(problems, "backtest.buy_bps", &section.buy_bps.values(), 0.0, false, 1_000.0);
    let sell_bps = reals(problems, "backtest.sell_bps", &section.sell_bps.values(), 0.0, false, 1_000.0);
    let impact = reals(problems, "backtest.impact", &section.impact.values(), 0.0, false, 100.0);
    let capital = reals(problems, "backtest.capital", &section.capital.values(), 0.0, true, 1e15);
    let retrain_cost = section.retrain_cost.map_or(0.0, Real::value);
    if !(retrain_cost.is_finite() && (0.0..=1e15).contains(&retrain_cost)) {
        problems
            .add("backtest.retrain_cost", format!("must be in [0, 1e15] (currency per training), got {retrain_cost}"));
    }
    let mut grid = BacktestGrid {
        k,
        rebalance,
        buffer,
        max_replace,
        min_trade,
        buy_bps,
        sell_bps,
        impact,
        capital,
        retrain_cost,
        depth: Depth::Top(DEFAULT_DEPTH),
    };
    let needed = grid.ranks_needed();
    grid.depth = match &section.depth {
        None if needed <= DEFAULT_DEPTH => Depth::Top(DEFAULT_DEPTH),
        None => {
            problems.add(
                "backtest.depth",
                format!(
                    "k + buffer reaches rank {needed}, deeper than the {DEFAULT_DEPTH} ranks kept by default: \
                     set depth = {needed} (or \"all\")"
                ),
            );
            Depth::Top(DEFAULT_DEPTH)
        }
        Some(NumberOrWord::Word(word)) if word == "all" => Depth::All,
        Some(NumberOrWord::Integer(depth)) if *depth >= i64::from(needed.max(1)) && *depth <= 100_000 => {
            Depth::Top(*depth as u32)
        }
        Some(other) => {
            problems.add(
                "backtest.depth",
                format!("must be \"all\" or a count in {} ..= 100000 (k + buffer at most), got {other}", needed.max(1)),
            );
            Depth::Top(DEFAULT_DEPTH)
        }
    };
    if grid.len() > MAX_SETTINGS {
        problems
            .add("backtest", format!("the grid has {} settings, more than the limit of {MAX_SETTINGS}", grid.len()));
    }
    (problems.0.len() == before).then_some(grid)
}

/// A parser message on one line, at most [`MAX_MESSAGE`] characters: the TOML parser
/// quotes the offending line, which a hostile spec can make megabytes long.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_MESSAGE {
        return line;
    }
    let kept: String = line.chars().take(MAX_MESSAGE).collect();
    format!("{kept}… (cut at {MAX_MESSAGE} characters)")
}

/// The longest parser message a refusal quotes.
const MAX_MESSAGE: usize = 1_000;
