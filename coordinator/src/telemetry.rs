//! Logs and metrics of the long-running processes.
//!
//! Metrics go through the `metrics` facade (the scheduler and the worker runtime record
//! them; without an exporter that costs next to nothing) and are served for Prometheus
//! at `http://ADDRESS/metrics` by [`serve_metrics`].
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `wf_queue_jobs{state}` | gauge | jobs queued, leased, dead-lettered (all sweeps) |
//! | `wf_sweeps_submitted_total` | counter | sweeps accepted |
//! | `wf_jobs_enqueued_total` / `wf_jobs_reused_total` | counter | jobs queued / skipped as already committed |
//! | `wf_leases_total` | counter | leases granted |
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
//! | `wf_results_requeued_total` | counter | completed jobs queued again because their result was damaged or never published |
//! | `wf_job_training_seconds` | histogram | training seconds per committed job, as the worker measured |
//! | `wf_worker_jobs_total{outcome}` | counter | (worker) jobs completed, failed, preempted, abandoned |
//! | `wf_worker_jobs_running` | gauge | (worker) jobs in progress |
//! | `wf_worker_job_seconds` | histogram | (worker) lease to committed result |
//! | `wf_worker_leases_total`, `wf_worker_heartbeats_total`, `wf_worker_datasets_loaded_total` | counter | (worker) |

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Histogram buckets for job seconds: from a tenth of a second to two hours.
const SECONDS_BUCKETS: [f64; 14] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 7200.0];

/// Serves `/metrics` on `listen` from the current tokio runtime (call inside it).
pub fn serve_metrics(listen: SocketAddr, process: &'static str) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .add_global_label("process", process)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .context("histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {listen}"))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("wf_queue_jobs", "Jobs by state across all sweeps (queued includes retry backoff).");
    describe_counter!("wf_sweeps_submitted_total", "Sweeps accepted.");
    describe_counter!("wf_jobs_enqueued_total", "Jobs queued by submissions.");
    describe_counter!("wf_jobs_reused_total", "Jobs of submissions whose result was already committed.");
    describe_counter!("wf_leases_total", "Leases granted.");
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
        "wf_results_requeued_total",
        "Completed jobs queued again because their result was damaged or never published."
    );
    describe_histogram!("wf_job_training_seconds", metrics::Unit::Seconds, "Training seconds per committed job.");
    describe_counter!("wf_worker_jobs_total", "Jobs this worker ended, by outcome.");
    describe_gauge!("wf_worker_jobs_running", "Jobs this worker is running.");
    describe_histogram!("wf_worker_job_seconds", metrics::Unit::Seconds, "Lease to committed result, per job.");
    describe_counter!("wf_worker_leases_total", "Leases this worker received.");
    describe_counter!("wf_worker_heartbeats_total", "Heartbeats this worker sent.");
    describe_counter!("wf_worker_datasets_loaded_total", "Datasets this worker loaded (cache misses).");
}
