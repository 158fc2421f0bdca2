//! The report in plain words, as `wf run` prints it: the verdict first, then the
//! backtest's sentences and the summary table.

use wf_shared::verdict::{Bases, LineVerdict};

use super::cells::truncate;
use super::{LineReport, SweepReport, backtest};

impl SweepReport {
    /// The verdict `wf run` prints first: per trained line, in plain words, the best
    /// fixed cadence, whether any adaptive policy beats it after correcting for the
    /// number tried, what choosing out of sample earned, and the decay half-life; per
    /// line (untrained baselines too), its best fixed cadence on both bases with the
    /// return spread, and a warning where the bases disagree.
    pub fn verdict_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if self.lines.iter().all(|line| line.verdict.is_none() && line.bases.is_none()) {
            return out;
        }
        let _ = writeln!(
            out,
            "Verdict (ΔP@K on the {} basis at horizon {}; SPA and StepM at 5%):",
            self.basis.name(),
            self.horizon
        );
        for line in &self.lines {
            let untrained = self.untrained_models.contains(&line.model);
            let label = if untrained { " (untrained baseline)" } else { "" };
            let _ = writeln!(out, "  window {}, {}, seed {}{label}:", line.window, line.model, line.seed);
            // An untrained baseline scores the same under every schedule: no verdict and no
            // backtest verdict, only its bases.
            let backtest = if untrained { Vec::new() } else { self.backtest_sentences(line) };
            let sentences = line.verdict.iter().flat_map(LineVerdict::sentences);
            for sentence in sentences.chain(line.bases.iter().flat_map(Bases::sentences)).chain(backtest) {
                let _ = writeln!(out, "    - {sentence}");
            }
        }
        out
    }

    /// The backtest's verdict sentences of `line` (none without a backtest).
    pub fn backtest_sentences(&self, line: &LineReport) -> Vec<String> {
        let Some(backtest) = &self.backtest else { return Vec::new() };
        backtest
            .lines
            .iter()
            .filter(|b| b.window == line.window && b.model == line.model && b.seed == line.seed)
            .flat_map(|b| backtest::overfitting_sentences(backtest, b))
            .collect()
    }

    /// The compact summary `wf run` prints: per window × model × fixed cadence, mean
    /// ΔP@K with its interval, RankIC, ICIR and retrains; then each line's best adaptive
    /// policy among those scored on as many days as the fixed cadences, labelled as the
    /// hindsight pick it is.
    pub fn summary_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>6}  {:<10} {:<34} {:>8}  {:<19} {:>7} {:>6} {:>8}",
            "window", "model", "schedule", "ΔP@K", "95% interval", "RankIC", "ICIR", "retrains"
        );
        for line in &self.lines {
            // A policy that lets its model age past max_age has uncovered days; its mean over
            // fewer (earlier) days is not comparable, so only full-coverage policies compete.
            let best_adaptive = line
                .schedules
                .iter()
                .filter(|s| s.adaptive && s.full_coverage())
                .max_by(|a, b| a.delta.mean.total_cmp(&b.delta.mean));
            // An untrained baseline scores the same under every schedule: one row.
            if self.untrained_models.contains(&line.model) {
                if let Some(schedule) = line.schedules.first() {
                    let interval = schedule
                        .delta_interval
                        .as_ref()
                        .map_or_else(|| "-".to_string(), |i| format!("[{:+.4}, {:+.4}]", i.low, i.high));
                    let _ = writeln!(
                        out,
                        "{:>6}  {:<10} {:<34} {:>+8.4}  {:<19} {:>7.4} {:>6.2} {:>8}",
                        line.window,
                        truncate(&line.model, 10),
                        "untrained baseline (any schedule)",
                        schedule.delta.mean,
                        interval,
                        schedule.rank_ic.mean,
                        schedule.rank_ic.ratio(),
                        "-"
                    );
                }
                continue;
            }
            for schedule in line.schedules.iter().filter(|s| !s.adaptive).chain(best_adaptive) {
                let interval = schedule
                    .delta_interval
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |i| format!("[{:+.4}, {:+.4}]", i.low, i.high));
                let mut name = if schedule.adaptive {
                    format!("hindsight best: {}", schedule.name)
                } else {
                    schedule.name.clone()
                };
                if !schedule.full_coverage() {
                    name = format!("{name} (covers {:.0}%)", schedule.coverage() * 100.0);
                }
                let _ = writeln!(
                    out,
                    "{:>6}  {:<10} {:<34} {:>+8.4}  {:<19} {:>7.4} {:>6.2} {:>8}",
                    line.window,
                    line.model,
                    truncate(&name, 34),
                    schedule.delta.mean,
                    interval,
                    schedule.rank_ic.mean,
                    schedule.rank_ic.ratio(),
                    schedule.retrains()
                );
            }
        }
        for suspect in self.dataset.iter().flat_map(|d| &d.lookahead_suspects) {
            let _ = writeln!(out, "look-ahead suspect: {suspect}");
        }
        if !self.missing.is_empty() {
            let _ = writeln!(
                out,
                "{} of {} jobs have no result (failed, cancelled or still running)",
                self.missing.len(),
                self.jobs
            );
        }
        if !self.requeued.is_empty() {
            let _ = writeln!(
                out,
                "{} of them had a damaged or lost result and are being trained again",
                self.requeued.len()
            );
        }
        for model in self.diagnostics.iter().flat_map(|d| &d.exposures) {
            for warning in &model.warnings {
                let _ = writeln!(out, "exposure warning: window {}, {}: {warning}", model.window, model.model);
            }
        }
        if let Some(backtest) = &self.backtest {
            out.push_str(
                "\nBacktest: annualised net returns after trading costs; excess over the equal-weight benchmark; \
                 costs as a share of capital over the period. adapt.: the hindsight best adaptive policy above (chosen by ΔP@K over the whole period).\n",
            );
            out.push_str(&backtest::summary_table(backtest));
        }
        out
    }
}
