//! A benchmark's targets: each figure checked against its target, with the verdict to
//! print beside it; any miss, or any phase that failed, fails the benchmark
//! ([`Targets::exit_code`]). Pure: the bench prints and exits.

/// The misses of one benchmark run.
#[derive(Debug, Default)]
pub struct Targets {
    missed: Vec<String>,
}

impl Targets {
    /// Checks `figure <= target` for `what`: `"met"`, or `"MISSED"` (recorded).
    pub fn at_most(&mut self, what: &str, figure: f64, target: f64) -> &'static str {
        self.check(what, figure <= target, format!("{figure:.4} > {target}"))
    }

    /// Checks `figure >= target` for `what`: `"met"`, or `"MISSED"` (recorded).
    pub fn at_least(&mut self, what: &str, figure: f64, target: f64) -> &'static str {
        self.check(what, figure >= target, format!("{figure:.4} < {target}"))
    }

    fn check(&mut self, what: &str, met: bool, how: String) -> &'static str {
        if met {
            "met"
        } else {
            self.missed.push(format!("{what}: {how}"));
            "MISSED"
        }
    }

    /// Records a phase that failed or crashed (a miss whatever its figures).
    pub fn failed(&mut self, what: impl Into<String>) {
        self.missed.push(format!("{}: failed", what.into()));
    }

    /// What was missed, one line each.
    pub fn missed(&self) -> &[String] {
        &self.missed
    }

    /// The process's exit code: 0, or 1 when anything was missed.
    pub fn exit_code(&self) -> i32 {
        i32::from(!self.missed.is_empty())
    }

    /// The closing line: every miss, or that every target was met.
    pub fn summary(&self) -> String {
        if self.missed.is_empty() {
            "every target met".to_string()
        } else {
            format!("MISSED {} target(s): {}", self.missed.len(), self.missed.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_or_a_failure_fails_and_a_met_target_does_not() {
        let mut targets = Targets::default();
        assert_eq!(targets.at_most("plan", 0.04, 0.05), "met");
        assert_eq!(targets.at_least("speed", 1.2, 1.0), "met");
        assert_eq!(targets.exit_code(), 0);
        assert_eq!(targets.summary(), "every target met");
        assert_eq!(targets.at_least("scoring vs torch", 0.4, 1.0), "MISSED");
        targets.failed("prepare");
        assert_eq!(targets.exit_code(), 1);
        assert_eq!(targets.missed(), ["scoring vs torch: 0.4000 < 1", "prepare: failed"]);
    }
}
