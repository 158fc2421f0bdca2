//! Schedule replay: fixed cadences and adaptive retrain policies, replayed exactly from
//! the age matrix, with their cost and quality.
//!
//! A schedule is a set of retrain days; on test day `t` the live model is the one with
//! the latest retrain day ≤ t, and the schedule's out-of-sample series is that model's
//! row at age `t − r`. Every schedule of a line (window, model, seed) starts with the
//! line's first model, so all series cover the same days.
//!
//! Adaptive policies are evaluated at each candidate day `d` (the finest cadence), on
//! information available before `d` opens, for the live model retrained at `r`:
//! - performance: mean ΔP@K (or P@K) over its last `L` matured days `< τ`, where the label
//!   of day `t` matures at `t + h + 1`, so the days are `d − h − L ..= d − h − 1` (all ≥ r);
//! - drift: PSI above θ on at least a share `m` of features, pooled over `d − D ..= d − 1`;
//! - age: `d − r ≥ A`.
//!
//! Any true trigger retrains at `d`.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::age::{AgeMatrix, Line, Metric};
use crate::drift::DriftPath;
use crate::metric::{Basis, DayMetrics};
use crate::spec::{PerformanceMetric, TriggerGrid};

mod compare;
pub mod select;

pub use compare::{Difference, LineComparison, ScheduleOutcome, compare_line, frontier};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    Performance { metric: PerformanceMetric, tau: f64, lookback: u32 },
    Drift { theta: f64, share: f64, days: u32 },
    Age { max_age: u32 },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Performance { metric, tau, lookback } => {
                let name = if *metric == PerformanceMetric::PAtK { "P@K" } else { "ΔP@K" };
                write!(f, "{name}<{tau} over {lookback}d")
            }
            Self::Drift { theta, share, days } => write!(f, "PSI>{theta} on {:.0}% over {days}d", share * 100.0),
            Self::Age { max_age } => write!(f, "age>={max_age}d"),
        }
    }
}

/// An adaptive policy: retrain when any of its triggers fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub triggers: Vec<Trigger>,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.triggers.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(" or "))
    }
}

/// Every policy of the grid: each non-empty combination of trigger kinds, with every
/// setting of each kind's grid.
pub fn expand_policies(grid: &TriggerGrid) -> Vec<Policy> {
    let mut kinds: Vec<Vec<Trigger>> = Vec::new();
    if let Some(p) = &grid.performance {
        kinds.push(
            p.tau
                .iter()
                .flat_map(|tau| {
                    p.lookback.iter().map(move |l| Trigger::Performance { metric: p.metric, tau: *tau, lookback: *l })
                })
                .collect(),
        );
    }
    if let Some(d) = &grid.drift {
        kinds.push(
            d.theta
                .iter()
                .flat_map(|theta| {
                    d.share.iter().flat_map(move |share| {
                        d.days.iter().map(move |days| Trigger::Drift { theta: *theta, share: *share, days: *days })
                    })
                })
                .collect(),
        );
    }
    if let Some(a) = &grid.age {
        kinds.push(a.max_age.iter().map(|max_age| Trigger::Age { max_age: *max_age }).collect());
    }
    let mut policies = Vec::new();
    for mask in 1u32..(1 << kinds.len()) {
        let mut combos: Vec<Vec<Trigger>> = vec![Vec::new()];
        for (index, options) in kinds.iter().enumerate() {
            if mask & (1 << index) == 0 {
                continue;
            }
            combos = combos
                .iter()
                .flat_map(|combo| options.iter().map(move |t| [combo.clone(), vec![*t]].concat()))
                .collect();
        }
        policies.extend(combos.into_iter().map(|triggers| Policy { triggers }));
    }
    policies
}

/// A replayed schedule: its retrain days and, for each day from `first_day`, the live
/// (run, age), `None` where the live model has no row at that age.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub retrain_days: Vec<usize>,
    pub first_day: usize,
    pub live: Vec<Option<(usize, usize)>>,
}

impl Replay {
    /// The schedule's out-of-sample series of `metric` (`NaN` where missing).
    pub fn series(&self, matrix: &AgeMatrix, metric: Metric) -> Vec<f64> {
        self.live
            .iter()
            .map(|cell| cell.map_or(f64::NAN, |(run, age)| metric.value(matrix.runs[run].at(age))))
            .collect()
    }
}

/// Running sums of a model's ΔP@K and P@K on one basis by age (index = ages seen so
/// far), the inputs of a performance trigger. The replay pushes a run's every age at
/// once; a live deployment pushes each day as its label matures: the same additions in
/// the same order, so both read the same means to the last bit.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPrefix {
    basis: Basis,
    /// `[ΔP@K, P@K]`: (sum, count of finite values) over ages `0 .. i`.
    sums: [Vec<(f64, u32)>; 2],
}

impl Default for MetricPrefix {
    fn default() -> Self {
        Self::new(Basis::default())
    }
}

impl MetricPrefix {
    /// An empty prefix on `basis`.
    pub fn new(basis: Basis) -> Self {
        Self { basis, sums: [vec![(0.0, 0)], vec![(0.0, 0)]] }
    }

    /// The prefix of every age of `ages` on `basis`.
    pub fn of(ages: &[Option<DayMetrics>], basis: Basis) -> Self {
        let mut prefix = Self::new(basis);
        ages.iter().for_each(|day| prefix.push(day.as_ref()));
        prefix
    }

    pub fn basis(&self) -> Basis {
        self.basis
    }

    /// Appends the next age (`None`: nothing scored that day).
    pub fn push(&mut self, day: Option<&DayMetrics>) {
        let metrics = [self.basis.delta(), self.basis.precision()];
        for (sums, metric) in self.sums.iter_mut().zip(metrics) {
            let (sum, count) = sums[sums.len() - 1];
            let value = metric.value(day);
            sums.push(if value.is_finite() { (sum + value, count + 1) } else { (sum, count) });
        }
    }

    /// Ages pushed so far.
    pub fn len(&self) -> usize {
        self.sums[0].len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a trigger reads of one model, as known on the day it is evaluated.
#[derive(Debug, Clone, Copy)]
pub struct RunView<'a> {
    pub retrain_day: usize,
    /// The horizon whose labels mature `horizon + 1` days after the scored day.
    pub horizon: usize,
    pub prefix: &'a MetricPrefix,
    pub drift: Option<&'a DriftPath>,
}

/// A trigger evaluated on one day: the value it compared (the mean over the lookback,
/// the share of drifted features, the age) and whether it fired.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub trigger: Trigger,
    /// `None` where the trigger could not be read yet (too few matured or measured days).
    pub value: Option<f64>,
    pub fired: bool,
}

impl Trigger {
    /// `performance`, `drift` or `age`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Performance { .. } => "performance",
            Self::Drift { .. } => "drift",
            Self::Age { .. } => "age",
        }
    }

    /// This trigger on `day` for the model `view` describes (module docs: the rules).
    pub fn read(self, view: &RunView<'_>, day: usize) -> Reading {
        let retrain = view.retrain_day;
        let unread = Reading { trigger: self, value: None, fired: false };
        match self {
            Trigger::Age { max_age } => {
                let age = day - retrain;
                Reading { trigger: self, value: Some(age as f64), fired: age >= max_age as usize }
            }
            Trigger::Performance { metric, tau, lookback } => {
                // Matured days: t + h + 1 <= day.
                let Some(last_matured) = day.checked_sub(view.horizon + 1) else { return unread };
                let Some(first) = (last_matured + 1).checked_sub(lookback as usize) else { return unread };
                if first < retrain {
                    return unread;
                }
                let sums = &view.prefix.sums[usize::from(metric == PerformanceMetric::PAtK)];
                let (from, to) = (first - retrain, (last_matured - retrain + 1).min(sums.len() - 1));
                if from >= to {
                    return unread;
                }
                let (sum, count) = (sums[to].0 - sums[from].0, sums[to].1 - sums[from].1);
                if count == 0 {
                    return unread;
                }
                let mean = sum / f64::from(count);
                Reading { trigger: self, value: Some(mean), fired: mean < tau }
            }
            Trigger::Drift { theta, share, days } => {
                let Some(first) = day.checked_sub(days as usize) else { return unread };
                if first < retrain {
                    return unread;
                }
                let Some(path) = view.drift else { return unread };
                match path.share_above(first - retrain..day - retrain, theta) {
                    Some(measured) => Reading { trigger: self, value: Some(measured), fired: measured >= share },
                    None => unread,
                }
            }
        }
    }
}

/// Replays schedules of one line.
#[derive(Debug)]
pub struct LineReplayer<'a> {
    matrix: &'a AgeMatrix,
    run_at_day: HashMap<usize, usize>,
    first_day: usize,
    end_day: usize,
    horizon: usize,
    /// Per run: prefix sums and counts of ΔP@K and P@K by age.
    prefix: HashMap<usize, MetricPrefix>,
}

impl<'a> LineReplayer<'a> {
    /// `None` when the line has no run.
    pub fn new(matrix: &'a AgeMatrix, line: Line) -> Option<Self> {
        let runs = matrix.runs_of(line);
        let first_day = matrix.runs[*runs.first()?].retrain_day;
        let end_day =
            runs.iter().map(|r| matrix.runs[*r].retrain_day + matrix.runs[*r].ages.len()).max()?.saturating_sub(1);
        let prefix = runs.iter().map(|r| (*r, MetricPrefix::of(&matrix.runs[*r].ages, matrix.basis))).collect();
        Some(Self {
            matrix,
            run_at_day: runs.iter().map(|r| (matrix.runs[*r].retrain_day, *r)).collect(),
            first_day,
            end_day,
            horizon: matrix.horizon as usize,
            prefix,
        })
    }

    /// The run retrained on `day`, if the line has one.
    pub fn run_at(&self, day: usize) -> Option<usize> {
        self.run_at_day.get(&day).copied()
    }

    /// A fixed schedule: the line's first model, then a retrain on each of `days`.
    pub fn fixed(&self, days: &[usize]) -> Replay {
        let mut retrain_days = vec![self.first_day];
        retrain_days.extend(days.iter().copied().filter(|d| *d > self.first_day && self.run_at_day.contains_key(d)));
        self.replay(retrain_days)
    }

    /// An adaptive schedule evaluated at each of `candidates` (sorted).
    pub fn adaptive(&self, policy: &Policy, candidates: &[usize]) -> Replay {
        let mut retrain_days = vec![self.first_day];
        let mut live = self.first_day;
        for &day in candidates.iter().filter(|d| **d > self.first_day) {
            let Some(&run) = self.run_at_day.get(&live) else { break };
            if self.run_at_day.contains_key(&day) && policy.triggers.iter().any(|t| self.fires(*t, run, live, day)) {
                retrain_days.push(day);
                live = day;
            }
        }
        self.replay(retrain_days)
    }

    fn fires(&self, trigger: Trigger, run: usize, retrain: usize, day: usize) -> bool {
        let view = RunView {
            retrain_day: retrain,
            horizon: self.horizon,
            prefix: &self.prefix[&run],
            drift: self.matrix.runs[run].drift.as_ref(),
        };
        trigger.read(&view, day).fired
    }

    fn replay(&self, retrain_days: Vec<usize>) -> Replay {
        let mut live = Vec::with_capacity(self.end_day + 1 - self.first_day);
        let mut next = 0;
        let mut current: Option<(usize, usize)> = None;
        for day in self.first_day..=self.end_day {
            while next < retrain_days.len() && retrain_days[next] <= day {
                current = self.run_at_day.get(&retrain_days[next]).map(|run| (*run, retrain_days[next]));
                next += 1;
            }
            live.push(current.and_then(|(run, retrain)| {
                let age = day - retrain;
                self.matrix.runs[run].at(age).map(|_| (run, age))
            }));
        }
        Replay { retrain_days, first_day: self.first_day, live }
    }
}

#[cfg(test)]
mod tests;
