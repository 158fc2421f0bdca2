//! Live retraining decisions: one deployment (a model, a train window, a seed and a
//! retraining policy) advanced one trading day at a time on what is known before that
//! day opens.
//!
//! On day `d`, in order ([`LiveState::advance`]):
//! 1. the live model's labels mature: the metrics of each day `t` with `t + h + 1 ≤ d`
//!    (`h` the primary horizon) are learnt, once, in day order;
//! 2. its feature drift of each day before `d` is learnt (both up to the sweep's
//!    `max_age`, the ages its jobs score);
//! 3. if `d` is a decision day (a day of the fixed cadence, or of the sweep's finest
//!    cadence for an adaptive policy), the policy is evaluated with exactly the replay's
//!    rules ([`crate::replay::Trigger::read`], on the same running sums), and every
//!    evaluation is recorded with its readings.
//!
//! A retrain decided on `d` is the planner's job for retrain day `d` (same job key); its
//! model is a new version, live from `d` once promoted ([`LiveState::promote`]), or first
//! a candidate in shadow for `shadow_days` (promoted only if it scores no worse than the
//! live version on those days, once their labels matured). The
//! offline replay of the same policy therefore retrains on the same days and has the same
//! daily series: `tests` and the `wf live simulate` tests check it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::age::ModelRun;
use crate::cadence::Cadence;
use crate::drift::{BINS, DriftPath};
use crate::metric::{Basis, DayMetrics};
use crate::replay::{MetricPrefix, Policy, Reading, RunView, Trigger};
use crate::spec::PerformanceMetric;

/// The matured days `wf live status` and the `wf_live_recent_*` metrics average over.
pub const RECENT_DAYS: usize = 21;

/// How a deployment decides to retrain: on every day of a fixed cadence, or when an
/// adaptive policy fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LivePolicy {
    Fixed(Cadence),
    Adaptive(Policy),
}

impl fmt::Display for LivePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(cadence) => write!(f, "{cadence}"),
            Self::Adaptive(policy) => write!(f, "{policy}"),
        }
    }
}

/// A policy that cannot be read, with the part that failed and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePolicyError(pub String);

impl fmt::Display for ParsePolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParsePolicyError {}

impl FromStr for LivePolicy {
    type Err = ParsePolicyError;

    /// A cadence (`weekly`, `21d`, …) or a policy as reports name it: triggers joined by
    /// ` or `, e.g. `ΔP@K<-0.02 over 21d or PSI>0.1 on 20% over 5d or age>=63d`
    /// (`dP@K` may stand for `ΔP@K`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(cadence) = text.parse::<Cadence>() {
            return Ok(Self::Fixed(cadence));
        }
        let triggers = text.split(" or ").map(parse_trigger).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Adaptive(Policy { triggers }))
    }
}

fn parse_trigger(text: &str) -> Result<Trigger, ParsePolicyError> {
    let text = text.trim();
    let error = |reason: &str| {
        ParsePolicyError(format!(
            "{text:?}: {reason} (a cadence such as `weekly` or `21d`, or triggers joined by ` or `: \
             `ΔP@K<τ over Ld`, `P@K<τ over Ld`, `PSI>θ on S% over Dd`, `age>=Ad`)"
        ))
    };
    let number = |part: &str| part.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let days = |part: &str| part.trim().strip_suffix('d').and_then(|d| d.trim().parse::<u32>().ok()).filter(|d| *d > 0);
    if let Some(age) = text.strip_prefix("age>=") {
        return days(age)
            .map(|max_age| Trigger::Age { max_age })
            .ok_or_else(|| error("the age is not a count of days"));
    }
    if let Some(rest) = text.strip_prefix("PSI>") {
        let (theta, rest) = rest.split_once(" on ").ok_or_else(|| error("expected `on S%`"))?;
        let (share, span) = rest.split_once("% over ").ok_or_else(|| error("expected `S% over Dd`"))?;
        let theta = number(theta).filter(|t| *t > 0.0).ok_or_else(|| error("θ must be a positive number"))?;
        let share = number(share)
            .filter(|s| (0.0..=100.0).contains(s) && *s > 0.0)
            .ok_or_else(|| error("the share must be a percentage in (0, 100]"))?;
        let days = days(span).ok_or_else(|| error("the span is not a count of days"))?;
        return Ok(Trigger::Drift { theta, share: share / 100.0, days });
    }
    let (metric, rest) = if let Some(rest) = text.strip_prefix("ΔP@K<").or_else(|| text.strip_prefix("dP@K<")) {
        (PerformanceMetric::DeltaPAtK, rest)
    } else if let Some(rest) = text.strip_prefix("P@K<") {
        (PerformanceMetric::PAtK, rest)
    } else {
        return Err(error("not a cadence or a trigger"));
    };
    let (tau, span) = rest.split_once(" over ").ok_or_else(|| error("expected `over Ld`"))?;
    let tau = number(tau).ok_or_else(|| error("τ is not a number"))?;
    let lookback = days(span).ok_or_else(|| error("the lookback is not a count of days"))?;
    Ok(Trigger::Performance { metric, tau, lookback })
}

/// One trained model of a deployment, with what is known so far of its out-of-sample
/// days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, … in the order trained.
    pub number: u32,
    pub retrain_day: usize,
    /// The job that trained it (the planner's key for its retrain day).
    pub job_key: String,
    /// Its matured metrics by age.
    pub matured: Vec<Option<DayMetrics>>,
    /// Running sums of `matured`, rebuilt from it after a restart (never stored, so a
    /// stored float cannot round differently).
    #[serde(skip)]
    prefix: MetricPrefix,
    /// Its training window's bins and each passed day's, by age.
    drift: Option<DriftPath>,
}

impl Version {
    /// A version trained for `retrain_day` by job `job_key`, whose training window's
    /// feature bins are `training_bins` (`None`: drift not measured).
    pub fn new(retrain_day: usize, job_key: String, training_bins: Option<Vec<[u32; BINS]>>) -> Self {
        Self {
            number: 0,
            retrain_day,
            job_key,
            matured: Vec::new(),
            prefix: MetricPrefix::default(),
            drift: training_bins.map(|training| DriftPath { training, days: Vec::new() }),
        }
    }

    /// Mean ΔP@K on `basis` and mean RankIC over its last `days` matured days that
    /// scored (`None` without a value), and how many such days there were.
    pub fn recent(&self, days: usize, basis: Basis) -> (Option<f64>, Option<f64>, usize) {
        let recent: Vec<&DayMetrics> = self.matured.iter().rev().flatten().take(days).collect();
        let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        let delta = mean(recent.iter().map(|m| m.delta_on(basis)).collect());
        let rank_ic = mean(recent.iter().filter_map(|m| m.rank_ic).collect());
        (delta, rank_ic, recent.len())
    }

    /// Share of measured features whose PSI over the last `days` drift days learnt
    /// exceeds `theta`; `None` before `days` are learnt or without drift.
    pub fn drift_share(&self, days: usize, theta: f64) -> Option<f64> {
        let path = self.drift.as_ref()?;
        let end = path.days.len();
        path.share_above(end.checked_sub(days)?..end, theta)
    }

    fn view(&self, horizon: usize) -> RunView<'_> {
        RunView { retrain_day: self.retrain_day, horizon, prefix: &self.prefix, drift: self.drift.as_ref() }
    }
}

/// What a deployment observes of its live model; the engine asks only for what is known
/// before the day it is advancing opens.
pub trait Observe {
    /// The metrics of `version`'s scores on `day` (asked once `day + h + 1` has come);
    /// `None` where nothing was scored.
    fn metrics(&mut self, version: &Version, day: usize) -> Option<DayMetrics>;

    /// The bin counts of each feature on `day` (a day before the one advancing) against
    /// `version`'s training bins; `None` where not measured, which ends its drift path.
    fn drift(&mut self, version: &Version, day: usize) -> Option<Vec<[u32; BINS]>>;
}

/// One evaluation of the policy on a decision day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub day: usize,
    /// The live version when the day opened.
    pub version: u32,
    pub age: usize,
    /// Each trigger's reading (empty for a fixed cadence).
    pub readings: Vec<Reading>,
    pub retrain: bool,
    /// The version in shadow that day (no retrain is started while one is).
    #[serde(default)]
    pub shadowing: Option<u32>,
}

impl Decision {
    /// Why it retrains (the fired triggers, or the cadence), or why not.
    pub fn reason(&self, policy: &LivePolicy) -> String {
        if let Some(candidate) = self.shadowing {
            return format!("version {candidate} is in shadow: no retrain until it is decided");
        }
        match policy {
            LivePolicy::Fixed(cadence) => format!("{cadence} retrain day"),
            LivePolicy::Adaptive(_) => {
                let fired: Vec<String> = self
                    .readings
                    .iter()
                    .filter(|r| r.fired)
                    .map(|r| format!("{} ({})", r.trigger, r.value.map_or_else(|| "–".into(), |v| format!("{v:.4}"))))
                    .collect();
                if fired.is_empty() { "no trigger fired".into() } else { fired.join(" and ") }
            }
        }
    }
}

/// Why a day cannot be advanced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveError {
    /// Days are processed once each, in order.
    OutOfOrder { expected: usize, got: usize },
    /// A version must be retrained on the day it is promoted at, after the live one.
    Promotion(String),
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfOrder { expected, got } => {
                write!(f, "day {got} is out of order: the deployment's next day is {expected}")
            }
            Self::Promotion(reason) => write!(f, "cannot promote: {reason}"),
        }
    }
}

impl std::error::Error for LiveError {}

/// A deployment's decision state: every version, which one is live, the next day to
/// process and every decision. It is what survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveState {
    pub policy: LivePolicy,
    /// The primary horizon: a day's label matures `horizon + 1` days later.
    pub horizon: usize,
    /// Ages a version is measured to (the sweep's `max_age`, as its jobs score): older
    /// days still get predictions, but no trigger reads them.
    pub max_age: usize,
    /// The decision days, sorted.
    pub decision_days: Vec<usize>,
    pub versions: Vec<Version>,
    /// Index of the live version in `versions`.
    pub live: usize,
    pub next_day: usize,
    pub decisions: Vec<Decision>,
    /// Every change of the live version, in order (the first version's on its retrain day).
    pub switches: Vec<Switch>,
    /// Days a retrained version runs in shadow before it may replace the live one; 0:
    /// promoted when trained.
    #[serde(default)]
    pub shadow_days: usize,
    /// The version in shadow (index into `versions`), if any.
    #[serde(default)]
    pub candidate: Option<usize>,
    /// Every shadow period's outcome.
    #[serde(default)]
    pub shadows: Vec<ShadowOutcome>,
    /// Bumped at every save of the state, so a writer can tell that another one saved
    /// in between (a rollback during an advance).
    #[serde(default)]
    pub revision: u64,
    /// Retrains that failed (the last [`RETRAIN_FAILURES_KEPT`]), oldest first. The day
    /// stays unprocessed, so the next advance tries it again.
    #[serde(default)]
    pub retrain_failures: Vec<RetrainFailure>,
    /// Every retrain that failed, also those no longer kept.
    #[serde(default)]
    pub retrain_failures_total: u64,
    /// Digest of the panel's history as processed: the row keys and features of the days
    /// before `next_day` and the targets of those whose labels had matured
    /// (`wf_shared::dataset::DayView::data_digest`). A panel whose processed days changed
    /// since (a day inserted, removed or corrected) is refused rather than decided on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<crate::dataset::DatasetHash>,
    /// The basis its performance triggers and shadow comparisons read ΔP@K on: its
    /// sweep's `metrics.basis`. A state saved before bases existed was deciding on the
    /// zero basis and goes on doing so.
    #[serde(default = "zero_basis")]
    pub basis: Basis,
}

fn zero_basis() -> Basis {
    Basis::Zero
}

/// How many failed retrains a state keeps.
pub const RETRAIN_FAILURES_KEPT: usize = 20;

/// A retrain that failed: the day it was decided on, its job and the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainFailure {
    pub day: usize,
    pub job_key: String,
    pub error: String,
    /// When it failed (Unix seconds).
    pub at: i64,
}

/// How a version in shadow compared with the live one over its first `shadow_days` days,
/// once their labels matured: promoted when its mean ΔP@K over the days both scored is at
/// least the live version's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowOutcome {
    /// The day it was decided (promoted from that day on).
    pub day: usize,
    pub candidate: u32,
    pub live: u32,
    /// Days both versions scored.
    pub days: usize,
    pub candidate_mean: Option<f64>,
    pub live_mean: Option<f64>,
    pub promoted: bool,
}

/// The live version changed on `day`: a promotion of a new version (live from that day)
/// or a rollback (live from the day it was asked on, the last day processed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub day: usize,
    pub version: u32,
    pub rollback: bool,
}

impl LiveState {
    /// A deployment whose first model is `first`, live from its retrain day.
    pub fn new(
        policy: LivePolicy,
        horizon: u32,
        max_age: u32,
        mut decision_days: Vec<usize>,
        mut first: Version,
    ) -> Self {
        decision_days.sort_unstable();
        decision_days.dedup();
        first.number = 1;
        let next_day = first.retrain_day;
        let switches = vec![Switch { day: first.retrain_day, version: 1, rollback: false }];
        Self {
            switches,
            policy,
            horizon: horizon as usize,
            max_age: max_age as usize,
            decision_days,
            versions: vec![first],
            live: 0,
            next_day,
            decisions: vec![],
            shadow_days: 0,
            candidate: None,
            shadows: Vec::new(),
            revision: 0,
            retrain_failures: Vec::new(),
            retrain_failures_total: 0,
            history: None,
            basis: Basis::default(),
        }
    }

    /// The state deciding on `basis` (the sweep's `metrics.basis`).
    pub fn on_basis(mut self, basis: Basis) -> Self {
        self.basis = basis;
        self
    }

    /// Records a failed retrain of `day`.
    pub fn retrain_failed(&mut self, failure: RetrainFailure) {
        self.retrain_failures.push(failure);
        let excess = self.retrain_failures.len().saturating_sub(RETRAIN_FAILURES_KEPT);
        self.retrain_failures.drain(..excess);
        self.retrain_failures_total += 1;
    }

    /// Whether the last failed retrain is still the day to process: the deployment is
    /// stuck until a retrain of that day succeeds.
    pub fn retrain_failing(&self) -> bool {
        self.retrain_failures.last().is_some_and(|failure| failure.day >= self.next_day)
    }

    pub fn live_version(&self) -> &Version {
        &self.versions[self.live]
    }

    /// Trading days from the live version's retrain day to the last processed day.
    pub fn live_age(&self) -> usize {
        self.next_day.saturating_sub(1).saturating_sub(self.live_version().retrain_day)
    }

    /// Processes `day` (module docs): learns what matured, evaluates the policy on a
    /// decision day; `Some` decision when the day is one. A retrain decision leaves the
    /// promotion to the caller (the new version needs its job).
    pub fn advance(&mut self, day: usize, observe: &mut dyn Observe) -> Result<Option<&Decision>, LiveError> {
        if day != self.next_day {
            return Err(LiveError::OutOfOrder { expected: self.next_day, got: day });
        }
        self.learn(day, observe);
        self.next_day = day + 1;
        self.judge_candidate(day, observe);
        let first_day = self.versions[0].retrain_day;
        if day <= first_day || self.decision_days.binary_search(&day).is_err() {
            return Ok(None);
        }
        let version = self.live_version();
        let (readings, retrain) = match &self.policy {
            LivePolicy::Fixed(_) => (Vec::new(), true),
            LivePolicy::Adaptive(policy) => {
                let view = version.view(self.horizon);
                let readings: Vec<Reading> = policy.triggers.iter().map(|t| t.read(&view, day)).collect();
                let fired = readings.iter().any(|r| r.fired);
                (readings, fired)
            }
        };
        let shadowing = self.candidate.map(|index| self.versions[index].number);
        let decision = Decision {
            day,
            version: version.number,
            age: day - version.retrain_day,
            readings,
            retrain: retrain && shadowing.is_none(),
            shadowing,
        };
        self.decisions.push(decision);
        Ok(self.decisions.last())
    }

    /// Ends the candidate's shadow once the labels of its first `shadow_days` days have
    /// matured by `day`: promotes it (from `day`) or keeps the live version.
    fn judge_candidate(&mut self, day: usize, observe: &mut dyn Observe) {
        let Some(index) = self.candidate else { return };
        let first = self.versions[index].retrain_day;
        let last = first + self.shadow_days.max(1) - 1;
        if last + self.horizon >= day {
            return;
        }
        let (mut candidate_sum, mut live_sum, mut days) = (0.0, 0.0, 0usize);
        for t in first..=last {
            let candidate = self.basis.delta().value(observe.metrics(&self.versions[index], t).as_ref());
            let live = self.basis.delta().value(observe.metrics(&self.versions[self.live], t).as_ref());
            if candidate.is_finite() && live.is_finite() {
                candidate_sum += candidate;
                live_sum += live;
                days += 1;
            }
        }
        let mean = |sum: f64| (days > 0).then(|| sum / days as f64);
        let (candidate_mean, live_mean) = (mean(candidate_sum), mean(live_sum));
        let promoted = matches!((candidate_mean, live_mean), (Some(c), Some(l)) if c >= l);
        let (candidate, live) = (self.versions[index].number, self.versions[self.live].number);
        self.shadows.push(ShadowOutcome { day, candidate, live, days, candidate_mean, live_mean, promoted });
        self.candidate = None;
        if promoted {
            self.retire_live();
            self.live = index;
            self.switches.push(Switch { day, version: candidate, rollback: false });
        }
    }

    /// Learns the live version's labels matured by `day` and its drift before `day`.
    fn learn(&mut self, day: usize, observe: &mut dyn Observe) {
        let (horizon, max_age) = (self.horizon, self.max_age);
        let version = &self.versions[self.live];
        let end = version.retrain_day + max_age;
        let mut matured = Vec::new();
        let mut next = version.retrain_day + version.matured.len();
        while next + horizon < day && next < end {
            matured.push(observe.metrics(version, next));
            next += 1;
        }
        let mut drifted = Vec::new();
        if let Some(path) = &version.drift {
            let mut next = version.retrain_day + path.days.len();
            while next < day && next < end {
                match observe.drift(version, next) {
                    Some(bins) => drifted.push(bins),
                    None => break,
                }
                next += 1;
            }
        }
        let version = &mut self.versions[self.live];
        if version.prefix.len() != version.matured.len() || version.prefix.basis() != self.basis {
            version.prefix = MetricPrefix::of(&version.matured, self.basis);
        }
        for day in matured {
            version.prefix.push(day.as_ref());
            version.matured.push(day);
        }
        if let Some(path) = &mut version.drift {
            path.days.extend(drifted);
        }
    }

    /// Makes `version` (retrained on the day just decided) the live one, or with
    /// `shadow_days` the candidate in shadow; returns its number.
    pub fn promote(&mut self, mut version: Version) -> Result<u32, LiveError> {
        let live = self.live_version();
        if version.retrain_day <= live.retrain_day || version.retrain_day + 1 != self.next_day {
            return Err(LiveError::Promotion(format!(
                "version for day {} (live: day {}, the day just processed: {})",
                version.retrain_day,
                live.retrain_day,
                self.next_day.saturating_sub(1)
            )));
        }
        version.number = self.versions.len() as u32 + 1;
        let number = version.number;
        if self.shadow_days > 0 {
            self.versions.push(version);
            self.candidate = Some(self.versions.len() - 1);
            return Ok(number);
        }
        self.retire_live();
        self.switches.push(Switch { day: version.retrain_day, version: number, rollback: false });
        self.versions.push(version);
        self.live = self.versions.len() - 1;
        Ok(number)
    }

    /// Switches back to version `to` (default: the one live before the current one), at
    /// once: it is live from the last day processed. Its metrics are learnt again from
    /// its retrain day as the days are advanced.
    pub fn rollback(&mut self, to: Option<u32>) -> Result<u32, LiveError> {
        let current = self.live_version().number;
        let target = match to {
            Some(number) => number,
            None => self
                .switches
                .iter()
                .rev()
                .map(|s| s.version)
                .find(|v| *v != current)
                .ok_or_else(|| LiveError::Promotion("there is no earlier version to roll back to".into()))?,
        };
        let index = self.versions.iter().position(|v| v.number == target).ok_or_else(|| {
            LiveError::Promotion(format!("there is no version {target} (1..={})", self.versions.len()))
        })?;
        if index == self.live {
            return Err(LiveError::Promotion(format!("version {target} is already live")));
        }
        self.retire_live();
        self.live = index;
        self.switches.push(Switch { day: self.next_day.saturating_sub(1), version: target, rollback: true });
        Ok(target)
    }

    /// Drops what the outgoing live version learnt (a rollback to it learns it again,
    /// the same, from its model): the state stays the size of one version's history.
    fn retire_live(&mut self) {
        let version = &mut self.versions[self.live];
        version.matured.clear();
        version.prefix = MetricPrefix::new(self.basis);
        if let Some(path) = &mut version.drift {
            path.days.clear();
        }
    }

    /// The live version on `day`: the last switch on or before it.
    pub fn version_on(&self, day: usize) -> Option<&Version> {
        let number = self.switches.iter().rev().find(|s| s.day <= day)?.version;
        self.versions.iter().find(|v| v.number == number)
    }
}

/// Observes model runs by retrain day: what a deployment would have seen of models whose
/// jobs scored these days (`wf live simulate`, and the tests against the replay).
#[derive(Debug, Default)]
pub struct RunsObserver {
    runs: std::collections::HashMap<usize, ModelRun>,
}

impl RunsObserver {
    pub fn new(runs: impl IntoIterator<Item = ModelRun>) -> Self {
        Self { runs: runs.into_iter().map(|run| (run.retrain_day, run)).collect() }
    }

    /// Adds (or replaces) the run retrained on its day.
    pub fn add(&mut self, run: ModelRun) {
        self.runs.insert(run.retrain_day, run);
    }

    /// The run retrained on `day`.
    pub fn run_at(&self, day: usize) -> Option<&ModelRun> {
        self.runs.get(&day)
    }
}

impl Observe for RunsObserver {
    fn metrics(&mut self, version: &Version, day: usize) -> Option<DayMetrics> {
        self.run_at(version.retrain_day)?.at(day.checked_sub(version.retrain_day)?).cloned()
    }

    fn drift(&mut self, version: &Version, day: usize) -> Option<Vec<[u32; BINS]>> {
        self.run_at(version.retrain_day)?.drift.as_ref()?.days.get(day.checked_sub(version.retrain_day)?).cloned()
    }
}

#[cfg(test)]
mod tests;
