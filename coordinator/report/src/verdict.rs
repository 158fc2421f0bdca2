//! The verdict as the report shows it: the HTML section that opens the page, before any
//! plot, and `verdict.csv` (section `delta`: one row per line and out-of-sample
//! selector; section `backtest`: one row per line and portfolio setting).

use std::fmt::Write as _;

use super::SweepReport;
use super::cells::{field, number};
use super::html::escape;

/// `verdict.csv`: per (window, model, seed) line and selector, the line's verdict.
pub fn verdict_csv(report: &SweepReport) -> String {
    let mut out = String::from(
        "section,window,model,seed,best_fixed,best_fixed_delta_p_at_k,policies,selectors,tried,spa_p,spa_days,\
         spa_mean_block,spa_samples,stepm_count,stepm,beaten,hindsight_best,hindsight_delta_p_at_k,\
         half_life_days,lookback,among,chosen_delta_p_at_k,chosen_low,chosen_high,chosen_vs_best_fixed,\
         chosen_difference_low,chosen_difference_high,chosen_switches,setting,best_net,sharpe,dsr,trials,\
         dsr_effective,effective_trials,pbo,pbo_blocks\n",
    );
    const DELTA_COLUMNS: usize = 27;
    const BACKTEST_COLUMNS: usize = 9;
    let blanks = |n: usize| ",".repeat(n);
    for line in &report.lines {
        let Some(verdict) = &line.verdict else { continue };
        let spa = verdict.superiority.as_ref();
        let prefix = format!(
            "delta,{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            line.window,
            field(&line.model),
            line.seed,
            field(verdict.best_fixed.as_deref().unwrap_or("")),
            number(verdict.best_fixed_mean),
            verdict.policies,
            verdict.selectors,
            verdict.tried(),
            number(spa.map(|s| s.spa_p)),
            spa.map_or(String::new(), |s| s.days.to_string()),
            number(spa.map(|s| s.mean_block)),
            spa.map_or(String::new(), |s| s.samples.to_string()),
            verdict.stepm.len(),
            field(&verdict.stepm.join(" | ")),
            u8::from(verdict.beaten()),
            field(verdict.hindsight.as_ref().map_or("", |h| h.name.as_str())),
            number(verdict.hindsight.as_ref().map(|h| h.mean)),
            number(verdict.half_life_days),
        );
        if verdict.out_of_sample.is_empty() {
            let _ = writeln!(out, "{prefix},,,,,,,,,{}", blanks(BACKTEST_COLUMNS));
        }
        for chosen in &verdict.out_of_sample {
            let difference = chosen.difference_vs_best_fixed.as_ref();
            let _ = writeln!(
                out,
                "{prefix},{},{},{},{},{},{},{},{},{}{}",
                chosen.lookback,
                match chosen.among {
                    wf_shared::spec::Among::Adaptive => "adaptive",
                    wf_shared::spec::Among::All => "all",
                },
                number(Some(chosen.delta.mean)),
                number(chosen.delta_interval.map(|i| i.low)),
                number(chosen.delta_interval.map(|i| i.high)),
                number(difference.map(|d| d.mean)),
                number(difference.and_then(|d| d.interval).map(|i| i.low)),
                number(difference.and_then(|d| d.interval).map(|i| i.high)),
                chosen.switches,
                blanks(BACKTEST_COLUMNS)
            );
        }
    }
    for line in report.backtest.iter().flat_map(|b| &b.lines) {
        for o in &line.backtest.overfitting {
            let d = o.deflated.as_ref();
            let _ = writeln!(
                out,
                "backtest,{},{},{}{},{},{},{},{},{},{},{},{},{}",
                line.window,
                field(&line.model),
                line.seed,
                blanks(DELTA_COLUMNS - 3),
                o.setting,
                field(o.best.as_deref().unwrap_or("")),
                number(d.map(|d| d.moments.sharpe * 252f64.sqrt())),
                number(d.and_then(|d| d.dsr)),
                d.map_or(String::new(), |d| d.trials.to_string()),
                number(d.and_then(|d| d.dsr_effective)),
                number(d.map(|d| d.effective_trials)),
                number(o.pbo.as_ref().map(|p| p.pbo)),
                o.pbo.as_ref().map_or(String::new(), |p| p.blocks.to_string()),
            );
        }
    }
    out
}

/// The "Verdict" section: per trained line, the verdict's sentences.
pub fn section(out: &mut String, report: &SweepReport) {
    if report.lines.iter().all(|l| l.verdict.is_none() && l.bases.is_none()) {
        return;
    }
    out.push_str(
        "<h2 id=\"verdict\">Verdict</h2>\n<p class=\"note\">Per line: the best fixed cadence, whether any adaptive \
         policy beats it after correcting for the number tried (Hansen's SPA p-value; the Romano–Wolf StepM set at \
         5%), what choosing a schedule out of sample earned, and the decay half-life; then the best fixed \
         cadence's ΔP@K on both bases, beside its return spread. The tables below rank schedules with \
         hindsight.</p>\n",
    );
    for line in &report.lines {
        for sentence in line.bases.iter().flat_map(|b| b.sentences()).filter(|s| s.starts_with("warning")) {
            let _ = writeln!(out, "<p class=\"warn\" data-field=\"basis-warning\">{}</p>", escape(&sentence));
        }
    }
    for line in &report.lines {
        let bases = line.bases.iter().flat_map(|b| b.sentences());
        let Some(verdict) = &line.verdict else {
            let _ = writeln!(
                out,
                "<div class=\"bases\"><h3 class=\"meta\">{}-day window, {} (seed {}, untrained)</h3><ul>",
                line.window,
                escape(&line.model),
                line.seed
            );
            for sentence in bases {
                let _ = writeln!(out, "<li>{}</li>", escape(&sentence));
            }
            out.push_str("</ul></div>\n");
            continue;
        };
        let class = if verdict.beaten() { "ok" } else { "meta" };
        let _ = writeln!(
            out,
            "<div class=\"verdict\" data-window=\"{}\" data-model=\"{}\" data-seed=\"{}\" data-beaten=\"{}\" \
             data-spa-p=\"{}\" data-tried=\"{}\"><h3 class=\"{class}\">{}-day window, {} (seed {})</h3><ul>",
            line.window,
            escape(&line.model),
            line.seed,
            verdict.beaten(),
            number(verdict.superiority.as_ref().map(|s| s.spa_p)),
            verdict.tried(),
            line.window,
            escape(&line.model),
            line.seed
        );
        for sentence in verdict.sentences().into_iter().chain(bases).chain(report.backtest_sentences(line)) {
            let _ = writeln!(out, "<li>{}</li>", escape(&sentence));
        }
        out.push_str("</ul></div>\n");
    }
}
