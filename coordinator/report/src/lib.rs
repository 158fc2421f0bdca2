//! `wf-report`: a sweep's report, aggregated from its committed results with the analytics core:
//! the age matrix → decay curves per (window, model), and per line the replays of the
//! fixed cadences and the adaptive policies, compared.
//!
//! A report is built from whatever is committed: jobs without a result (still running,
//! dead-lettered, cancelled) are listed as missing, and every figure says how many
//! models it rests on.
//!
//! [`files`] writes it out: the JSON document, CSV tables and a self-contained HTML page
//! with SVG plots ([`html`]).

pub mod backtest;
mod cells;
pub mod diagnostics;
pub mod files;
pub mod html;
mod text;
pub mod verdict;

use chrono::NaiveDate;
use serde::Serialize;
use wf_shared::Panel;
use wf_shared::age::{AgeMatrix, Line, Metric};
use wf_shared::bootstrap::Bootstrap;
use wf_shared::decay::{DecayCurve, decay_curves};
use wf_shared::metric::Basis;
use wf_shared::plan::{Manifest, Plan, audit};
use wf_shared::replay::{LineReplayer, ScheduleOutcome, compare_line, expand_policies};
use wf_shared::snooping::spent::{self, Part};
use wf_shared::spec::{ModelKind, SweepConfig, TopK};
use wf_shared::verdict::{Bases, LineVerdict, VerdictSettings, line_verdict};

/// Best adaptive policies per line that get bootstrap intervals.
const TOP_POLICIES: usize = 5;

/// The schedules of one (window, model, seed) line.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LineReport {
    pub window: u32,
    pub model: String,
    pub seed: u64,
    /// Fixed cadences first, in spec order, then the adaptive policies in grid order.
    pub schedules: Vec<ScheduleOutcome>,
    /// The line's verdict (`wf_shared::verdict`); none for an untrained baseline, whose
    /// schedules all score the same.
    #[serde(default)]
    pub verdict: Option<LineVerdict>,
    /// Its best fixed cadence's ΔP@K on both bases and its return spread.
    #[serde(default)]
    pub bases: Option<Bases>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SweepReport {
    pub sweep_id: String,
    pub name: String,
    pub dataset_hash: String,
    /// The horizon and K the metrics are measured at.
    pub horizon: u32,
    pub k: TopK,
    pub jobs: usize,
    pub results: usize,
    /// Job keys without a committed result.
    pub missing: Vec<String>,
    /// Of `missing`, the jobs that had completed but whose result was damaged or lost
    /// (refused when read, or never published): queued again by this report.
    #[serde(default)]
    pub requeued: Vec<String>,
    /// Model names, by the index `decay[].model` uses.
    #[serde(default)]
    pub models: Vec<String>,
    /// The sanity baseline: the sweep's `linear` model, if it has one.
    #[serde(default)]
    pub baseline_model: Option<String>,
    /// Models that are not trained (`factor` baselines): every schedule of theirs scores
    /// the same.
    #[serde(default)]
    pub untrained_models: Vec<String>,
    /// What a pick must beat to count in P@K: every ΔP@K, P@K and base rate of the
    /// report is on this basis, but for `LineReport::bases`, which reads both. A report
    /// written before bases existed was on the zero basis.
    #[serde(default = "zero_basis")]
    pub basis: Basis,
    /// Mean base rate over every scored day: the P@K of a random ranking.
    #[serde(default)]
    pub base_rate: Option<f64>,
    /// Decay curves per (window, model): ΔP@K, P@K and RankIC vs model age.
    pub decay: Vec<DecayCurve>,
    pub lines: Vec<LineReport>,
    /// Out-of-sample series over calendar time: per line, the fixed cadences and the
    /// best fully covered adaptive policy.
    #[serde(default)]
    pub series: Vec<ScheduleSeries>,
    #[serde(default)]
    pub dataset: Option<DatasetSummary>,
    #[serde(default)]
    pub audit: Option<AuditSummary>,
    /// The portfolio backtest, when the spec has a `[backtest]` section.
    #[serde(default)]
    pub backtest: Option<backtest::BacktestReport>,
    /// Why models rank as they do: style exposures and every trained horizon's metrics.
    #[serde(default)]
    pub diagnostics: Option<diagnostics::Diagnostics>,
}

/// One schedule's daily out-of-sample quality (`None`: no live model scored that day).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ScheduleSeries {
    pub window: u32,
    pub model: String,
    pub seed: u64,
    pub schedule: String,
    pub adaptive: bool,
    pub dates: Vec<NaiveDate>,
    pub delta: Vec<Option<f64>>,
    pub rank_ic: Vec<Option<f64>>,
    pub retrain_dates: Vec<NaiveDate>,
}

/// The panel the sweep ran on.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DatasetSummary {
    pub uri: String,
    pub content_hash: String,
    pub rows: usize,
    pub stocks: usize,
    pub trading_days: usize,
    pub first_date: Option<NaiveDate>,
    pub last_date: Option<NaiveDate>,
    pub mean_stocks_per_day: f64,
    /// Null share of every feature column, in panel order.
    pub features: Vec<FeatureQuality>,
    /// Features whose mean same-day RankIC with a target is implausibly high
    /// (`wf_shared::label_guard::lookahead_suspects`): they may read future prices.
    #[serde(default)]
    pub lookahead_suspects: Vec<wf_shared::label_guard::LookaheadSuspect>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FeatureQuality {
    pub name: String,
    pub null_share: f64,
}

/// The split-manifest audit: every job's dates re-derived independently of the planner.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditSummary {
    pub jobs: usize,
    pub leaking_jobs: usize,
    /// The first findings (empty when no job leaks).
    pub findings: Vec<String>,
}

/// What a report is built from.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    pub sweep_id: &'a str,
    pub config: &'a SweepConfig,
    pub plan: &'a Plan,
    pub panel: &'a Panel,
    pub dataset_hash: wf_shared::DatasetHash,
    /// The backtest's market (with a `[backtest]` section).
    pub market: Option<&'a wf_shared::backtest::portfolio::Market>,
    /// The verdict's statistics: each line's verdict (SPA, StepM, selectors), both bases,
    /// and the backtest's DSR, PBO and selectors. Always on but in the `backtest` bench,
    /// which builds the report without them too, to measure their cost.
    pub statistics: bool,
    /// The panel's look-ahead suspects when its summary already holds them (the
    /// coordinator planned with it); `None`: found from `panel` here.
    pub lookahead: Option<&'a [wf_shared::label_guard::LookaheadSuspect]>,
}

impl SweepReport {
    /// The report read from its JSON document (`report.json`, `GetReport`).
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }

    /// The report as its JSON document, indented (what `report.json` holds).
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

impl DatasetSummary {
    pub fn of(
        uri: &str,
        hash: &wf_shared::DatasetHash,
        panel: &Panel,
        lookahead_suspects: Vec<wf_shared::label_guard::LookaheadSuspect>,
    ) -> Self {
        let dates = panel.calendar().dates();
        let universe = panel.daily_universe();
        let rows = panel.rows();
        let features = panel
            .feature_names()
            .iter()
            .zip(panel.features())
            .map(|(name, values)| FeatureQuality {
                name: name.clone(),
                null_share: if rows == 0 {
                    0.0
                } else {
                    values.iter().filter(|v| !v.is_finite()).count() as f64 / rows as f64
                },
            })
            .collect();
        Self {
            uri: uri.to_string(),
            content_hash: hash.to_string(),
            rows,
            stocks: panel.codes().len(),
            trading_days: dates.len(),
            first_date: dates.first().copied(),
            last_date: dates.last().copied(),
            mean_stocks_per_day: if universe.is_empty() {
                0.0
            } else {
                universe.iter().sum::<usize>() as f64 / universe.len() as f64
            },
            features,
            lookahead_suspects,
        }
    }
}

/// Builds the report of `input.plan` from the runs in `matrix`.
pub fn build_full(input: ReportInput<'_>, matrix: &AgeMatrix, missing: Vec<String>) -> SweepReport {
    let ReportInput { sweep_id, config, plan, panel, dataset_hash, market, statistics, lookahead } = input;
    let mut report = build(sweep_id, config, plan, dataset_hash.to_string(), matrix, missing, statistics);
    let calendar = panel.calendar();
    let date = |day: usize| calendar.date(day).unwrap_or_default();
    let mut series_all = Vec::new();
    // `build` made one LineReport per line, in `matrix.lines()` order.
    for (line, outcomes) in matrix.lines().into_iter().zip(&report.lines) {
        let Some(replayer) = LineReplayer::new(matrix, line) else { continue };
        let best = outcomes
            .schedules
            .iter()
            .filter(|s| s.adaptive && s.full_coverage())
            .max_by(|a, b| a.delta.mean.total_cmp(&b.delta.mean));
        let chosen: Vec<&ScheduleOutcome> = outcomes.schedules.iter().filter(|s| !s.adaptive).chain(best).collect();
        let mut series = Vec::new();
        for schedule in chosen {
            let replay = replayer.fixed(&schedule.retrain_days);
            let finite = |v: f64| v.is_finite().then_some(v);
            series.push(ScheduleSeries {
                window: line.window,
                model: outcomes.model.clone(),
                seed: line.seed,
                schedule: schedule.name.clone(),
                adaptive: schedule.adaptive,
                dates: (0..replay.live.len()).map(|i| date(replay.first_day + i)).collect(),
                delta: replay.series(matrix, matrix.basis.delta()).into_iter().map(finite).collect(),
                rank_ic: replay.series(matrix, Metric::RankIc).into_iter().map(finite).collect(),
                retrain_dates: schedule.retrain_days.iter().map(|d| date(*d)).collect(),
            });
        }
        series_all.extend(series);
    }
    report.series = series_all;
    if let (Some(grid), Some(market)) = (&config.backtest, market) {
        let lines = matrix
            .lines()
            .into_iter()
            .zip(&report.lines)
            .map(|(line, outcomes)| (line, outcomes.model.clone(), outcomes.schedules.as_slice()))
            .collect();
        report.backtest = Some(backtest::build(backtest::BacktestInput {
            grid,
            market,
            panel,
            matrix,
            lines,
            samples: config.bootstrap_samples,
            seed: config.bootstrap_seed,
            selection: &config.selection,
            statistics,
        }));
    }
    let manifest = Manifest::new(config, dataset_hash, calendar, plan);
    let findings = audit(&manifest, calendar, config);
    report.audit = Some(AuditSummary {
        jobs: manifest.jobs.len(),
        leaking_jobs: findings.len(),
        findings: findings.iter().take(10).map(|f| format!("{}: {}", f.key.short(), f.problem)).collect(),
    });
    let suspects = lookahead.map_or_else(|| wf_shared::label_guard::lookahead_suspects(panel), <[_]>::to_vec);
    report.dataset = Some(DatasetSummary::of(&config.panel, &dataset_hash, panel, suspects));
    report.diagnostics = Some(diagnostics::build(config, matrix, calendar, panel.feature_names()));
    report
}

/// Builds the report of `plan` (of `config`) from the runs in `matrix`: decay curves and
/// schedule comparisons, with the verdict and both bases when `statistics` (no calendar
/// series, dataset summary or audit: see [`build_full`]).
pub fn build(
    sweep_id: &str,
    config: &SweepConfig,
    plan: &Plan,
    dataset_hash: String,
    matrix: &AgeMatrix,
    missing: Vec<String>,
    statistics: bool,
) -> SweepReport {
    let bootstrap = Bootstrap {
        block: config.primary_horizon as usize,
        samples: config.bootstrap_samples,
        seed: config.bootstrap_seed,
    };
    let policies = expand_policies(&config.triggers);
    let candidates = plan.finest_retrain_days();
    let model_name =
        |index: usize| config.models.get(index).map_or_else(|| format!("model {index}"), |m| m.name.clone());
    let verdict_settings = VerdictSettings {
        selection: &config.selection,
        horizon: config.primary_horizon,
        samples: config.bootstrap_samples,
        seed: config.bootstrap_seed,
    };
    let untrained = |model: usize| config.models.get(model).is_some_and(|m| m.kind == ModelKind::Factor);
    let mut lines: Vec<LineReport> = matrix
        .lines()
        .into_iter()
        .map(|line: Line| {
            let comparison =
                compare_line(matrix, line, &plan.retrain_days, &policies, candidates, bootstrap, TOP_POLICIES);
            let verdict = comparison
                .as_ref()
                .filter(|_| statistics && !untrained(line.model))
                .map(|c| spent::timed(Part::Verdict, || line_verdict(c, candidates, verdict_settings)));
            let bases = comparison.as_ref().filter(|_| statistics).and_then(|c| {
                let best = &c.outcomes[c.best_fixed?];
                spent::timed(Part::Bases, || Bases::of(matrix, line, &best.name, &best.retrain_days, bootstrap))
            });
            LineReport {
                window: line.window,
                model: model_name(line.model),
                seed: line.seed,
                schedules: comparison.map_or_else(Vec::new, |c| c.outcomes),
                verdict,
                bases,
            }
        })
        .collect();
    let mut decay = Vec::new();
    for metric in [config.basis.delta(), config.basis.precision(), Metric::RankIc] {
        decay.extend(decay_curves(matrix, metric, config.bootstrap_samples, config.bootstrap_seed));
    }
    for (line, report) in matrix.lines().into_iter().zip(&mut lines) {
        if let Some(verdict) = &mut report.verdict {
            verdict.half_life_days = decay
                .iter()
                .find(|c| c.metric == config.basis.delta() && c.window == line.window && c.model == line.model)
                .and_then(|c| c.half_life_days);
        }
    }
    let base_rate = |day: &wf_shared::metric::DayMetrics| day.base_rate_on(config.basis);
    let base_rates: Vec<f64> = matrix.runs.iter().flat_map(|run| run.ages.iter().flatten().map(base_rate)).collect();
    SweepReport {
        sweep_id: sweep_id.to_string(),
        name: config.name.clone(),
        dataset_hash,
        horizon: config.primary_horizon,
        k: config.k,
        jobs: plan.jobs.len(),
        results: matrix.runs.len(),
        missing,
        requeued: Vec::new(),
        models: config.models.iter().map(|m| m.name.clone()).collect(),
        baseline_model: config.models.iter().find(|m| m.kind == ModelKind::Linear).map(|m| m.name.clone()),
        untrained_models: config
            .models
            .iter()
            .filter(|m| m.kind == ModelKind::Factor)
            .map(|m| m.name.clone())
            .collect(),
        basis: config.basis,
        base_rate: (!base_rates.is_empty()).then(|| base_rates.iter().sum::<f64>() / base_rates.len() as f64),
        decay,
        lines,
        series: Vec::new(),
        dataset: None,
        audit: None,
        backtest: None,
        diagnostics: None,
    }
}

fn zero_basis() -> Basis {
    Basis::Zero
}

#[cfg(test)]
mod tests {
    use wf_shared::metric::Summary;

    use super::*;

    fn schedule(name: &str, adaptive: bool, deltas: &[f64]) -> ScheduleOutcome {
        ScheduleOutcome {
            line: Line { window: 126, model: 0, seed: 0 },
            name: name.into(),
            adaptive,
            retrain_days: vec![0],
            train_seconds: 1.0,
            delta: Summary::of(deltas),
            delta_interval: None,
            rank_ic: Summary::of(deltas),
            difference_vs_best_fixed: None,
            on_frontier: false,
            covered_days: deltas.len(),
            // The fixed cadence of the test scores 100 days: the line's period.
            period_days: 100,
        }
    }

    #[test]
    fn the_best_adaptive_policy_is_chosen_among_those_scored_on_every_day() {
        let report = SweepReport {
            sweep_id: "sw-000000000001".into(),
            name: "t".into(),
            dataset_hash: String::new(),
            horizon: 5,
            k: TopK::Count(10),
            jobs: 3,
            results: 3,
            missing: Vec::new(),
            requeued: Vec::new(),
            models: vec!["mlp".into()],
            baseline_model: None,
            untrained_models: Vec::new(),
            basis: Basis::Median,
            base_rate: None,
            decay: Vec::new(),
            series: Vec::new(),
            dataset: None,
            audit: None,
            backtest: None,
            diagnostics: None,
            lines: vec![LineReport {
                window: 126,
                model: "mlp".into(),
                seed: 0,
                schedules: vec![
                    schedule("weekly", false, &[0.02; 100]),
                    schedule("full coverage", true, &[0.03; 100]),
                    schedule("aged out early", true, &[0.09; 20]),
                ],
                verdict: None,
                bases: None,
            }],
        };
        let table = report.summary_table();
        assert!(table.contains("hindsight best: full coverage"), "{table}");
        assert!(!table.contains("aged out early"), "{table}");

        // An untrained baseline's line is one row: every schedule scores the same.
        let mut report = report;
        report.untrained_models = vec!["mlp".into()];
        let table = report.summary_table();
        assert_eq!(table.lines().filter(|l| l.contains("mlp")).count(), 1, "{table}");
        assert!(table.contains("untrained baseline (any schedule)"), "{table}");
    }
}
