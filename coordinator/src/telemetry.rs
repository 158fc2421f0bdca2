//! Logs and metrics of the long-running processes.
//!
//! Metrics go through the `metrics` facade (the scheduler and the worker runtime record
//! them; without an exporter that costs next to nothing) and are served for Prometheus
//! at `http://ADDRESS/metrics` by [`serve_metrics`].
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `wf_queue_jobs{state}` | gauge | jobs queued, leased, dead-lettered (all sweeps) |
//! | `wf_sweeps_submitted_total{tenant}` | counter | sweeps accepted |
//! | `wf_jobs_enqueued_total{tenant}` / `wf_jobs_reused_total{tenant}` | counter | jobs queued / skipped as already committed, by the submitting tenant |
//! | `wf_leases_total` | counter | leases granted |
//! | `wf_leases_handed_again_total` | counter | leases whose answer a worker never got, handed to it again |
//! | `wf_leases_expired_total` | counter | leases the reaper took back |
//! | `wf_heartbeats_total` | counter | heartbeats answered |
//! | `wf_results_committed_total` / `wf_results_rejected_total` | counter | results committed / refused as stale |
//! | `wf_results_refused_total{reason}` | counter | stored results not reused (unreadable, format, checksum, identity) and set aside |
//! | `wf_job_failures_total{kind}` | counter | failures reported (retryable, permanent, preempted) |
//! | `wf_job_retries_total` | counter | failed jobs queued again |
//! | `wf_dead_letters_total` | counter | jobs dead-lettered |
//! | `wf_reconciled_jobs_total` | counter | jobs the job store had lost, queued again from the artifact store |
//! | `wf_epochs_started_total` / `wf_epoch` | counter / gauge | lease epochs started (a fresh, restarted or emptied store) / the current one |
//! | `wf_jobs_hung_total` | counter | attempts failed for running past `--max-job-seconds` |
//! | `wf_store_repairs_total` | counter | job store index entries repaired after a partial loss |
//! | `wf_store_outages_total` | counter | times the reaper found the job store unreachable (once per outage) |
//! | `wf_results_requeued_total` | counter | completed jobs queued again because their result was damaged or never published |
//! | `wf_results_recovered_total` | counter | jobs leased again although their result was committed (the job store lost the commit, e.g. Redis rolled back its last second): completed without training |
//! | `wf_job_training_seconds` | histogram | training seconds per committed job, as the worker measured |
//! | `wf_job_delta_p_at_k{kind}` / `wf_job_rank_ic{kind}` | histogram | a committed job's mean out-of-sample ΔP@K / RankIC (`docs/ANALYTICS.md`, "Job summary"), by model kind |
//! | `wf_worker_jobs_total{outcome}` | counter | (worker) jobs completed, failed, preempted, abandoned |
//! | `wf_worker_jobs_running` | gauge | (worker) jobs in progress |
//! | `wf_worker_job_seconds` | histogram | (worker) lease to committed result |
//! | `wf_worker_leases_total`, `wf_worker_heartbeats_total`, `wf_worker_datasets_loaded_total` | counter | (worker) |
//! | `wf_predictions_total{deployment}` / `wf_prediction_seconds{deployment}` | counter / histogram | `Predict` calls answered, and their time |
//! | `wf_live_model_age_days{deployment}` | gauge | trading days from the live version's retrain date to the last processed day |
//! | `wf_live_days_since_retrain{deployment}` | gauge | trading days since the last promotion |
//! | `wf_live_model_retrained_timestamp_seconds{deployment}`, `wf_live_last_processed_timestamp_seconds{deployment}` | gauge | the live version's retrain date and the last processed date (Unix seconds, midnight UTC): staleness in calendar days |
//! | `wf_live_recent_delta_p_at_k{deployment}`, `wf_live_recent_rank_ic{deployment}` | gauge | means over the live version's last 21 matured days (NaN: none yet) |
//! | `wf_live_drift_share{deployment}` | gauge | share of features with PSI > 0.25 over the live version's last 5 days |
//! | `wf_live_versions{deployment}`, `wf_live_processed_days{deployment}`, `wf_live_in_shadow{deployment}` | gauge | versions trained, days processed, 1 while a version is in shadow |
//! | `wf_live_trigger_firings_total{deployment,reason}` | counter | retrains decided, by what fired (`performance`, `drift`, `age`, `cadence`) |
//! | `wf_live_promotions_total`, `wf_live_rollbacks_total`, `wf_live_shadow_rejections_total` (`{deployment}`) | counter | switches of the live version, and candidates kept out |
//! | `wf_live_retrain_failures_total{deployment}` / `wf_live_retrain_failing{deployment}` | counter / gauge | retrains that failed; 1 while the deployment is stuck on a failed retrain (the next advance tries it again) |
//! | `wf_live_retrain_waiting_seconds{deployment}` | gauge | how long the coordinator's advance has waited for a retrain it queued to the workers; 0 when none waits (set by `--live-advance-seconds`) |
//! | `wf_live_retrains_queued_total` | counter | retrains queued to the workers as training-only jobs |
//!
//! The `wf_live_*` series are refreshed every 15 s from the deployments' stored state by a
//! coordinator started with `--live-artifacts`.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Histogram buckets for a prediction's seconds: a millisecond to 2.5 s.
const PREDICTION_BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Histogram buckets for job seconds: from a tenth of a second to two hours.
const SECONDS_BUCKETS: [f64; 14] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 7200.0];

/// Histogram buckets for a job's mean ΔP@K and RankIC.
const SKILL_BUCKETS: [f64; 11] = [-0.2, -0.1, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2];

/// Serves `/metrics` on `listen` from the current tokio runtime (call inside it), with
/// every counter of `process` (`coordinator` or `worker`) at zero until it counts, so
/// rates and alerts read 0 rather than nothing.
pub fn serve_metrics(listen: SocketAddr, process: &'static str) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .add_global_label("process", process)
        .set_buckets_for_metric(Matcher::Full("wf_prediction_seconds".into()), &PREDICTION_BUCKETS)
        .context("histogram buckets")?
        .set_buckets_for_metric(Matcher::Full("wf_job_delta_p_at_k".into()), &SKILL_BUCKETS)
        .context("histogram buckets")?
        .set_buckets_for_metric(Matcher::Full("wf_job_rank_ic".into()), &SKILL_BUCKETS)
        .context("histogram buckets")?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .context("histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {listen}"))?;
    describe();
    initialize(process);
    Ok(())
}

/// Registers `process`'s counters (each label value of a closed set) at zero.
fn initialize(process: &str) {
    use metrics::counter;
    if process == "worker" {
        for name in ["wf_worker_leases_total", "wf_worker_heartbeats_total", "wf_worker_datasets_loaded_total"] {
            counter!(name).increment(0);
        }
        for outcome in wf_worker::runtime::Ended::ALL {
            counter!("wf_worker_jobs_total", "outcome" => outcome.name()).increment(0);
        }
        metrics::gauge!("wf_worker_jobs_running").set(0.0);
        return;
    }
    for name in [
        "wf_leases_total",
        "wf_leases_handed_again_total",
        "wf_leases_expired_total",
        "wf_heartbeats_total",
        "wf_results_committed_total",
        "wf_results_rejected_total",
        "wf_job_retries_total",
        "wf_dead_letters_total",
        "wf_reconciled_jobs_total",
        "wf_jobs_hung_total",
        "wf_store_repairs_total",
        "wf_store_outages_total",
        "wf_results_requeued_total",
        "wf_results_recovered_total",
        "wf_live_retrains_queued_total",
    ] {
        counter!(name).increment(0);
    }
    for kind in wf_shared::job::FailureKind::ALL {
        counter!("wf_job_failures_total", "kind" => kind.name()).increment(0);
    }
    for reason in wf_proto::stored::StoredRefusal::REASONS {
        counter!("wf_results_refused_total", "reason" => reason).increment(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("wf_queue_jobs", "Jobs by state across all sweeps (queued includes retry backoff).");
    describe_counter!("wf_sweeps_submitted_total", "Sweeps accepted.");
    describe_counter!("wf_predictions_total", "Predict calls answered, per deployment.");
    describe_histogram!("wf_prediction_seconds", "Seconds to answer a Predict call, per deployment.");
    describe_gauge!(
        "wf_live_model_age_days",
        "Trading days from the live version's retrain date to the last processed day."
    );
    describe_gauge!("wf_live_days_since_retrain", "Trading days since the last promotion.");
    describe_gauge!("wf_live_model_retrained_timestamp_seconds", "The live version's retrain date (Unix seconds).");
    describe_gauge!("wf_live_last_processed_timestamp_seconds", "The deployment's last processed date (Unix seconds).");
    describe_gauge!("wf_live_recent_delta_p_at_k", "Mean dP@K over the live version's last 21 matured days.");
    describe_gauge!("wf_live_recent_rank_ic", "Mean RankIC over the live version's last 21 matured days.");
    describe_gauge!("wf_live_drift_share", "Share of features with PSI > 0.25 over the live version's last 5 days.");
    describe_gauge!("wf_live_versions", "Versions a deployment has trained.");
    describe_gauge!("wf_live_processed_days", "Days a deployment has processed.");
    describe_gauge!("wf_live_in_shadow", "1 while a retrained version is in shadow.");
    describe_counter!("wf_live_trigger_firings_total", "Retrains decided, by what fired.");
    describe_counter!("wf_live_promotions_total", "Versions promoted to live.");
    describe_counter!("wf_live_rollbacks_total", "Rollbacks of the live version.");
    describe_counter!("wf_live_shadow_rejections_total", "Versions kept out after their shadow period.");
    describe_counter!("wf_live_retrain_failures_total", "Retrains that failed.");
    describe_gauge!("wf_live_retrain_failing", "1 while the last failed retrain's day is still unprocessed.");
    describe_gauge!(
        "wf_live_retrain_waiting_seconds",
        metrics::Unit::Seconds,
        "How long the advance has waited for a retrain queued to the workers (0: none)."
    );
    describe_counter!("wf_live_retrains_queued_total", "Retrains queued to the workers as training-only jobs.");
    describe_counter!("wf_jobs_enqueued_total", "Jobs queued by submissions.");
    describe_counter!("wf_jobs_reused_total", "Jobs of submissions whose result was already committed.");
    describe_counter!("wf_leases_total", "Leases granted.");
    describe_counter!(
        "wf_leases_handed_again_total",
        "Leases whose answer a worker never got (its call failed after the store granted them), handed to it again."
    );
    describe_counter!("wf_leases_expired_total", "Leases past their deadline taken back by the reaper.");
    describe_counter!("wf_heartbeats_total", "Heartbeats answered.");
    describe_counter!("wf_results_committed_total", "Results committed.");
    describe_counter!(
        "wf_results_rejected_total",
        "Results refused: their lease was no longer current, or held by another worker."
    );
    describe_counter!(
        "wf_results_refused_total",
        "Stored results refused on reuse and set aside, by reason (unreadable, format, checksum, identity)."
    );
    describe_counter!("wf_job_failures_total", "Failures reported by workers, by kind.");
    describe_counter!("wf_job_retries_total", "Failed jobs queued again.");
    describe_counter!("wf_dead_letters_total", "Jobs dead-lettered.");
    describe_counter!("wf_reconciled_jobs_total", "Jobs the job store had lost, queued again from the artifact store.");
    describe_counter!("wf_epochs_started_total", "Lease epochs started (a fresh, restarted or emptied job store).");
    describe_gauge!("wf_epoch", "The lease epoch leases are granted in.");
    describe_counter!("wf_jobs_hung_total", "Attempts failed for running past the maximum job duration.");
    describe_counter!("wf_store_repairs_total", "Job store index entries repaired after a partial loss.");
    describe_counter!(
        "wf_store_outages_total",
        "Times the reaper found the job store unreachable (counted once per outage)."
    );
    describe_counter!(
        "wf_results_requeued_total",
        "Completed jobs queued again because their result was damaged or never published."
    );
    describe_counter!(
        "wf_results_recovered_total",
        "Jobs leased again whose result was committed (the job store lost the commit): completed without training."
    );
    describe_histogram!("wf_job_training_seconds", metrics::Unit::Seconds, "Training seconds per committed job.");
    describe_histogram!("wf_job_delta_p_at_k", "A committed job's mean out-of-sample dP@K, by model kind.");
    describe_histogram!("wf_job_rank_ic", "A committed job's mean out-of-sample RankIC, by model kind.");
    describe_counter!("wf_worker_jobs_total", "Jobs this worker ended, by outcome.");
    describe_gauge!("wf_worker_jobs_running", "Jobs this worker is running.");
    describe_histogram!("wf_worker_job_seconds", metrics::Unit::Seconds, "Lease to committed result, per job.");
    describe_counter!("wf_worker_leases_total", "Leases this worker received.");
    describe_counter!("wf_worker_heartbeats_total", "Heartbeats this worker sent.");
    describe_counter!("wf_worker_datasets_loaded_total", "Datasets this worker loaded (cache misses).");
}
