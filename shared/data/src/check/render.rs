//! The human-readable form of a check report.

use std::fmt::Write;

use super::{CheckReport, Severity};

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Renders the report as a plain-text table; failing gates are listed first.
pub fn render_table(report: &CheckReport) -> String {
    let mut out = String::new();
    let span = match (report.first_date, report.last_date) {
        (Some(first), Some(last)) => format!("{first} .. {last}"),
        _ => "no dates".to_string(),
    };
    let kind = serde_json::to_value(report.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let _ = writeln!(out, "file    {} ({kind})", report.path);
    let _ = writeln!(
        out,
        "shape   {} rows, {} stocks, {} dates, {span}",
        thousands(report.rows),
        thousands(report.stocks),
        thousands(report.dates)
    );
    let _ = writeln!(out);
    let width = report.columns.iter().map(|c| c.name.len()).max().unwrap_or(6).max(6);
    let _ = writeln!(
        out,
        "{:<width$}  {:<8} {:>10} {:>7} {:>5}  worst dates (null share that day)",
        "column", "type", "nulls", "null%", "inf"
    );
    for column in &report.columns {
        let worst: Vec<String> =
            column.worst_dates.iter().map(|d| format!("{} {:.0}%", d.date, d.null_share * 100.0)).collect();
        let flag = if column.null_share > 0.5 { "  <-- mostly null" } else { "" };
        let _ = writeln!(
            out,
            "{:<width$}  {:<8} {:>10} {:>6.2}% {:>5}  {}{flag}",
            column.name,
            column.dtype,
            thousands(column.nulls),
            column.null_share * 100.0,
            column.infinities,
            worst.join(", ")
        );
    }
    let _ = writeln!(out);
    let survivors = &report.survivorship;
    let examples = |finding: &super::Finding| {
        if finding.examples.is_empty() { String::new() } else { format!(" (e.g. {})", finding.examples.join("; ")) }
    };
    let _ = writeln!(out, "universe");
    let _ = writeln!(
        out,
        "  exits    {} stocks stop trading before the end{}",
        survivors.exits.count,
        examples(&survivors.exits)
    );
    let _ = writeln!(
        out,
        "  entries  {} stocks start after the start{}",
        survivors.entries.count,
        examples(&survivors.entries)
    );
    if survivors.survivor_only {
        let _ =
            writeln!(out, "  note     no exits: the universe looks survivor-only (P@K and the base rate read high)");
    }
    for tail in &survivors.unlabeled_tails {
        let _ = writeln!(
            out,
            "  {:<8} {} rows without a label: each stock's last {} days (kept, not scored)",
            tail.target,
            thousands(tail.rows),
            tail.horizon
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "checks");
    let mut gates: Vec<_> = report.gates.iter().collect();
    gates.sort_by_key(|g| (g.passed, g.severity == Severity::Warning));
    for gate in gates {
        let status = match (gate.passed, gate.severity) {
            (true, _) => "PASS",
            (false, Severity::Error) => "FAIL",
            (false, Severity::Warning) => "WARN",
        };
        let _ = writeln!(out, "  {status}  {:<40} {}", gate.check, gate.detail);
    }
    let failures = report.failed_gates().filter(|g| g.severity == Severity::Error).count();
    let warnings = report.failed_gates().filter(|g| g.severity == Severity::Warning).count();
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    let _ = writeln!(out, "\nresult  {verdict}: {failures} failed, {warnings} warnings");
    out
}
