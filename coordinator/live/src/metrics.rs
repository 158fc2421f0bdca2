//! A deployment's `wf_live_*` metrics.

use wf_shared::decision::{LiveState, RECENT_DAYS};

/// The drift threshold of `wf_live_drift_share`: a feature drifted when its PSI over the
/// live version's last [`DRIFT_DAYS`] measured days exceeds it.
pub const DRIFT_THETA: f64 = 0.25;
pub const DRIFT_DAYS: usize = 5;

/// One deployment's metrics; ages in trading days, dates (with `calendar`) as Unix
/// seconds of their midnight UTC.
pub(super) fn publish(id: &str, state: &LiveState, calendar: Option<&wf_shared::calendar::TradingCalendar>) {
    use metrics::{counter, gauge};
    let label = [("deployment", id.to_string())];
    let last = state.next_day.saturating_sub(1);
    let live = state.live_version();
    gauge!("wf_live_model_age_days", &label).set(state.live_age() as f64);
    let promoted = state.switches.iter().rev().find(|s| !s.rollback).map_or(live.retrain_day, |s| s.day);
    gauge!("wf_live_days_since_retrain", &label).set(last.saturating_sub(promoted) as f64);
    gauge!("wf_live_versions", &label).set(state.versions.len() as f64);
    gauge!("wf_live_processed_days", &label).set((state.next_day - state.versions[0].retrain_day) as f64);
    let (delta, rank_ic, _) = live.recent(RECENT_DAYS, state.basis);
    gauge!("wf_live_recent_delta_p_at_k", &label).set(delta.unwrap_or(f64::NAN));
    gauge!("wf_live_recent_rank_ic", &label).set(rank_ic.unwrap_or(f64::NAN));
    let drift = live.drift_share(DRIFT_DAYS, DRIFT_THETA).unwrap_or(f64::NAN);
    gauge!("wf_live_drift_share", &label).set(drift);
    gauge!("wf_live_in_shadow", &label).set(f64::from(u8::from(state.candidate.is_some())));
    let mut firings: std::collections::BTreeMap<&'static str, u64> = std::collections::BTreeMap::new();
    for decision in state.decisions.iter().filter(|d| d.retrain) {
        if decision.readings.is_empty() {
            *firings.entry("cadence").or_default() += 1;
        }
        for reading in decision.readings.iter().filter(|r| r.fired) {
            *firings.entry(reading.trigger.kind()).or_default() += 1;
        }
    }
    for (reason, count) in firings {
        counter!("wf_live_trigger_firings_total", &[label[0].clone(), ("reason", reason.to_string())]).absolute(count);
    }
    let promotions = state.switches.iter().skip(1).filter(|s| !s.rollback).count() as u64;
    counter!("wf_live_promotions_total", &label).absolute(promotions);
    counter!("wf_live_rollbacks_total", &label).absolute(state.switches.iter().filter(|s| s.rollback).count() as u64);
    let rejected = state.shadows.iter().filter(|s| !s.promoted).count() as u64;
    counter!("wf_live_shadow_rejections_total", &label).absolute(rejected);
    counter!("wf_live_retrain_failures_total", &label).absolute(state.retrain_failures_total);
    gauge!("wf_live_retrain_failing", &label).set(f64::from(u8::from(state.retrain_failing())));
    let seconds = |day: usize| {
        calendar.and_then(|c| c.date(day)).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc().timestamp() as f64)
    };
    if let (Some(retrained), Some(processed)) = (seconds(live.retrain_day), seconds(last)) {
        gauge!("wf_live_model_retrained_timestamp_seconds", &label).set(retrained);
        gauge!("wf_live_last_processed_timestamp_seconds", &label).set(processed);
    }
}
