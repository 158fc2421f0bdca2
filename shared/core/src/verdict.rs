//! The verdict of a line: the answer to "which retraining schedule pays for itself?",
//! corrected for the number of schedules tried and checked against a choice made out of
//! sample.
//!
//! Per line (window, model, seed), from its compared schedules
//! ([`crate::replay::LineComparison`]):
//! - the **best fixed cadence** (the report's rule: most covered days, then the highest
//!   mean ΔP@K) is the benchmark;
//! - the **trials** are the adaptive policies covering the whole period and the
//!   out-of-sample selectors (one per `[selection]` lookback);
//! - **SPA** and **StepM** ([`crate::snooping::superior`]) test the trials' daily ΔP@K
//!   against the benchmark's on the days all of them have a value, with a stationary
//!   bootstrap of mean block `3h` (`h` the primary horizon) and `metrics.bootstrap_samples`
//!   resamples;
//! - each **selector** ([`crate::replay::select`]) decides at the finest cadence's retrain
//!   days; its series is reported with its interval and its paired difference against
//!   the benchmark, next to the hindsight best (the adaptive policy with the highest
//!   mean over the whole period).

use serde::{Deserialize, Serialize};

use crate::bootstrap::{Bootstrap, Interval};
use crate::metric::Summary;
use crate::replay::select::Selector;
use crate::replay::{Difference, LineComparison};
use crate::snooping::{StationaryBootstrap, superior};
use crate::spec::{Among, SelectionConfig};

/// What the null market says of the zero basis's intervals, stated beside every one of
/// them (`cargo run -p wf-tests --example null_calibration -- 20`).
pub const ZERO_BASIS_CALIBRATION: &str = "not calibrated: 12% of its 95% intervals excluded 0 on the null market";

/// The familywise level of StepM and the level at which SPA's p-value is read.
pub const ALPHA: f64 = 0.05;

/// The most stationary-bootstrap resamples SPA and StepM draw (`metrics.bootstrap_samples`
/// above it is cut to it).
pub const SPA_SAMPLES_MAX: u32 = 5_000;

/// A schedule chosen out of sample with one lookback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutOfSample {
    pub lookback: u32,
    pub among: Among,
    /// Its name among the trials: `chosen out of sample (lookback 63d)`.
    pub name: String,
    pub delta: Summary,
    pub delta_interval: Option<Interval>,
    pub difference_vs_best_fixed: Option<Difference>,
    /// Times the selector changed the schedule it follows.
    pub switches: usize,
}

/// The best adaptive policy by its mean over the whole period: a pick made with hindsight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hindsight {
    pub name: String,
    pub mean: f64,
    pub interval: Option<Interval>,
}

/// A line's verdict on ΔP@K.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineVerdict {
    pub best_fixed: Option<String>,
    pub best_fixed_mean: Option<f64>,
    /// Adaptive policies covering the whole period (the others cannot be compared).
    pub policies: usize,
    pub selectors: usize,
    /// SPA and StepM over the policies and the selectors; `None` with fewer than 10
    /// common days or nothing to test.
    pub superiority: Option<superior::Superiority>,
    /// The trials StepM finds better than the best fixed cadence, by name.
    pub stepm: Vec<String>,
    pub hindsight: Option<Hindsight>,
    pub out_of_sample: Vec<OutOfSample>,
    /// The decay half-life of the line's (window, model) ΔP@K curve, in trading days.
    #[serde(default)]
    pub half_life_days: Option<f64>,
}

/// What a verdict is computed with.
#[derive(Debug, Clone, Copy)]
pub struct VerdictSettings<'a> {
    pub selection: &'a SelectionConfig,
    pub horizon: u32,
    pub samples: u32,
    pub seed: u64,
}

/// The verdict of one compared line; `decisions` are the finest cadence's retrain days.
pub fn line_verdict(comparison: &LineComparison, decisions: &[usize], settings: VerdictSettings<'_>) -> LineVerdict {
    let outcomes = &comparison.outcomes;
    let series = &comparison.series;
    let full: Vec<usize> = (0..outcomes.len()).filter(|i| outcomes[*i].full_coverage()).collect();
    let adaptive: Vec<usize> = full.iter().copied().filter(|i| outcomes[*i].adaptive).collect();
    let pool: Vec<usize> = match settings.selection.among {
        Among::Adaptive => adaptive.clone(),
        Among::All => full.clone(),
    };
    let horizon = settings.horizon as usize;
    let interval_bootstrap = Bootstrap { block: horizon, samples: settings.samples, seed: settings.seed };
    let best = comparison.best_fixed;
    let offsets: Vec<usize> =
        decisions.iter().filter(|d| **d >= comparison.first_day).map(|d| d - comparison.first_day).collect();

    let mut selector_series = Vec::new();
    let mut out_of_sample = Vec::new();
    if !pool.is_empty() {
        let pool_series: Vec<&[f64]> = pool.iter().map(|i| series[*i].as_slice()).collect();
        let selector = Selector::new(&pool_series, &offsets);
        for (position, lookback) in settings.selection.lookbacks.iter().enumerate() {
            let selection = selector.select(horizon, *lookback as usize);
            let name = format!("chosen out of sample (lookback {lookback}d)");
            let seed = settings.seed ^ (0x5e1ec7 + position as u64);
            let difference = best.map(|b| {
                let paired: Vec<f64> = selection.series.iter().zip(&series[b]).map(|(a, b)| a - b).collect();
                let summary = Summary::of(&paired);
                Difference {
                    against: outcomes[b].name.clone(),
                    mean: summary.mean,
                    interval: Bootstrap { seed, ..interval_bootstrap }
                        .paired_difference_interval(&selection.series, &series[b]),
                    common_days: summary.n,
                }
            });
            out_of_sample.push(OutOfSample {
                lookback: *lookback,
                among: settings.selection.among,
                name,
                delta: Summary::of(&selection.series),
                delta_interval: Bootstrap { seed, ..interval_bootstrap }.mean_interval(&selection.series),
                difference_vs_best_fixed: difference,
                switches: selection.choices.len().saturating_sub(1),
            });
            selector_series.push(selection.series);
        }
    }

    // The trials, named, and their series; then the days every one of them (and the
    // benchmark) has a value.
    let mut trial_names: Vec<String> = adaptive.iter().map(|i| outcomes[*i].name.clone()).collect();
    trial_names.extend(out_of_sample.iter().map(|o| o.name.clone()));
    let mut trial_series: Vec<&[f64]> = adaptive.iter().map(|i| series[*i].as_slice()).collect();
    trial_series.extend(selector_series.iter().map(Vec::as_slice));
    let superiority = best.and_then(|b| {
        let length = trial_series.iter().map(|s| s.len()).chain([series[b].len()]).min().unwrap_or(0);
        let common: Vec<usize> = (0..length)
            .filter(|t| series[b][*t].is_finite() && trial_series.iter().all(|s| s[*t].is_finite()))
            .collect();
        let pick = |s: &[f64]| common.iter().map(|t| s[*t]).collect::<Vec<f64>>();
        let benchmark = pick(&series[b]);
        let trials: Vec<Vec<f64>> = trial_series.iter().map(|s| pick(s)).collect();
        let trial_refs: Vec<&[f64]> = trials.iter().map(Vec::as_slice).collect();
        let bootstrap = StationaryBootstrap {
            mean_block: (3 * horizon.max(1)) as f64,
            // Every resample is kept while the candidates are read: bounded, whatever the
            // spec's `bootstrap_samples` (up to 10⁶).
            samples: settings.samples.min(SPA_SAMPLES_MAX),
            seed: settings.seed,
        };
        superior::test(&benchmark, &trial_refs, bootstrap, ALPHA)
    });
    let stepm = superiority.iter().flat_map(|s| s.stepm.iter().map(|i| trial_names[*i].clone())).collect();
    let hindsight = adaptive
        .iter()
        .copied()
        .filter(|i| outcomes[*i].delta.mean.is_finite())
        .max_by(|a, b| outcomes[*a].delta.mean.total_cmp(&outcomes[*b].delta.mean))
        .map(|i| Hindsight {
            name: outcomes[i].name.clone(),
            mean: outcomes[i].delta.mean,
            interval: outcomes[i].delta_interval,
        });
    LineVerdict {
        best_fixed: best.map(|b| outcomes[b].name.clone()),
        best_fixed_mean: best.map(|b| outcomes[b].delta.mean),
        policies: adaptive.len(),
        selectors: out_of_sample.len(),
        superiority,
        stepm,
        hindsight,
        out_of_sample,
        half_life_days: None,
    }
}

impl LineVerdict {
    /// Trials corrected for: the policies and the selectors.
    pub fn tried(&self) -> usize {
        self.policies + self.selectors
    }

    /// Whether some trial beats the best fixed cadence after correction.
    pub fn beaten(&self) -> bool {
        self.superiority.as_ref().is_some_and(|s| s.spa_p < ALPHA) && !self.stepm.is_empty()
    }

    /// The verdict in plain words, one sentence per finding.
    pub fn sentences(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(best) = &self.best_fixed else {
            out.push("no fixed cadence to compare against".to_string());
            return out;
        };
        out.push(format!("best fixed cadence: {best} (ΔP@K {:+.4})", self.best_fixed_mean.unwrap_or(f64::NAN)));
        let tried = format!(
            "{} tried: {} adaptive {} and {} out-of-sample {}",
            self.tried(),
            self.policies,
            plural(self.policies, "policy", "policies"),
            self.selectors,
            plural(self.selectors, "selector", "selectors")
        );
        match &self.superiority {
            None if self.tried() == 0 => out.push(format!(
                "nothing to correct for: no adaptive policy covers the whole period, so none is compared with {best}"
            )),
            None => out.push(format!(
                "no test against {best}: fewer than 10 days common to it and the {tried}, or fewer than 2 \
                 bootstrap samples"
            )),
            Some(s) if self.beaten() => out.push(format!(
                "{} of {tried} beat {best} after correction (SPA p = {:.2}; StepM at {:.0}%: {})",
                self.stepm.len(),
                s.spa_p,
                ALPHA * 100.0,
                self.stepm.join("; ")
            )),
            Some(s) => out
                .push(format!("no adaptive policy beats {best} after correcting for {tried} (SPA p = {:.2})", s.spa_p)),
        }
        for chosen in &self.out_of_sample {
            let mut sentence = format!("{}: ΔP@K {:+.4}", chosen.name, chosen.delta.mean);
            if let Some(difference) = &chosen.difference_vs_best_fixed {
                sentence.push_str(&format!(", {:+.4} against {}", difference.mean, difference.against));
                if let Some(interval) = &difference.interval {
                    sentence.push_str(&format!(" [{:+.4}, {:+.4}]", interval.low, interval.high));
                }
            }
            sentence.push_str(&format!(", {} {}", chosen.switches, plural(chosen.switches, "switch", "switches")));
            out.push(sentence);
        }
        if let Some(hindsight) = &self.hindsight {
            out.push(format!(
                "hindsight best (not a choice anyone could have made): {} at ΔP@K {:+.4}",
                hindsight.name, hindsight.mean
            ));
        }
        out.push(match self.half_life_days {
            Some(days) => format!("decay half-life {days:.0} trading days"),
            None => "no decay half-life (the curve does not decay exponentially)".to_string(),
        });
        out
    }
}

/// One schedule's quality on both bases, with its return spread beside them: the check
/// that the headline basis does not mistake low volatility for skill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bases {
    /// The schedule read (a line's best fixed cadence).
    pub schedule: String,
    pub zero: Reading,
    pub median: Reading,
    /// Mean forward return of the top K minus the bottom K.
    pub spread: Reading,
}

/// A series' mean and 95% moving-block bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub mean: f64,
    pub interval: Option<Interval>,
}

impl Reading {
    fn of(series: &[f64], bootstrap: Bootstrap) -> Self {
        Self { mean: Summary::of(series).mean, interval: bootstrap.mean_interval(series) }
    }

    /// The sign the interval is sure of: `Some(true)` above 0, `Some(false)` below.
    fn sure_sign(&self) -> Option<bool> {
        let interval = self.interval?;
        interval.excludes_zero().then_some(interval.low > 0.0)
    }
}

impl Bases {
    /// The schedule `retrain_days` of `line`, read on both bases and by spread.
    pub fn of(
        matrix: &crate::age::AgeMatrix,
        line: crate::age::Line,
        schedule: &str,
        retrain_days: &[usize],
        bootstrap: Bootstrap,
    ) -> Option<Self> {
        let replay = crate::replay::LineReplayer::new(matrix, line)?.fixed(retrain_days);
        let read = |metric: crate::age::Metric| Reading::of(&replay.series(matrix, metric), bootstrap);
        Some(Self {
            schedule: schedule.to_string(),
            zero: read(crate::age::Metric::DeltaPAtK),
            median: read(crate::age::Metric::MedianDeltaPAtK),
            spread: read(crate::age::Metric::Spread),
        })
    }

    /// The two bases disagree in sign by more than their intervals allow: each interval
    /// excludes zero, on opposite sides.
    pub fn disagree(&self) -> bool {
        matches!((self.zero.sure_sign(), self.median.sure_sign()), (Some(a), Some(b)) if a != b)
    }

    /// The figures in words, and the warning when the bases disagree.
    pub fn sentences(&self) -> Vec<String> {
        let shown = |reading: &Reading, digits: usize| match reading.interval {
            Some(i) => format!("{:+.digits$} [{:+.digits$}, {:+.digits$}]", reading.mean, i.low, i.high),
            None => format!("{:+.digits$}", reading.mean),
        };
        let mut out = vec![format!(
            "{}: ΔP@K {} on the median basis, {} on the zero basis (it rewards low volatility in a rising \
             market; {ZERO_BASIS_CALIBRATION}), top-K − bottom-K return {}",
            self.schedule,
            shown(&self.median, 4),
            shown(&self.zero, 4),
            shown(&self.spread, 5)
        )];
        if self.disagree() {
            out.push(format!(
                "warning: the bases disagree on {}: the zero basis reads {} and the median basis {}, both beyond \
                 their intervals; the zero basis is reading volatility, not skill",
                self.schedule,
                if self.zero.mean > 0.0 { "skill" } else { "anti-skill" },
                if self.median.mean > 0.0 { "skill" } else { "anti-skill" }
            ));
        }
        out
    }
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

#[cfg(test)]
mod tests;
