//! Progress display on stderr: a spinner with the current stage and elapsed time.
//! Hidden automatically when stderr is not a terminal, so logs and tests stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner for work done in named stages.
pub fn stage_spinner() -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    spinner.set_style(style);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// A bar over a sweep's jobs: done of total, with running/queued/failed counts and ETA.
pub fn sweep_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{bar:32} {pos}/{len} jobs  {msg}  [{elapsed} elapsed, ETA {eta}]")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Shows `progress` on `bar`.
pub fn show(bar: &ProgressBar, progress: &wf_proto::v1::SweepProgress) {
    bar.set_length(progress.total);
    bar.set_position(progress.succeeded + progress.dead_lettered + progress.cancelled);
    bar.set_message(describe(progress));
}

/// One line of counts.
pub fn describe(progress: &wf_proto::v1::SweepProgress) -> String {
    let mut text = format!("done {}  running {}  queued {}", progress.succeeded, progress.running, progress.queued);
    if progress.dead_lettered > 0 {
        text.push_str(&format!("  dead-lettered {}", progress.dead_lettered));
    }
    if progress.cancelled > 0 {
        text.push_str(&format!("  cancelled {}", progress.cancelled));
    }
    if progress.failures > 0 || progress.expiries > 0 || progress.preemptions > 0 {
        text.push_str(&format!(
            "  (failures {}, expired leases {}, preemptions {})",
            progress.failures, progress.expiries, progress.preemptions
        ));
    }
    text
}
