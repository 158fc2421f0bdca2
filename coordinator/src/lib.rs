//! `wf-coordinator`: the coordinator of walkforward: scheduler, stores, artifact store,
//! reports, services and server. The `wf` command line is the app crate (`app/`); the
//! live deployments it serves are `wf_live`'s.
//!
//! | module | owns |
//! |---|---|
//! | [`artifact`] | the artifact store: manifests, results written once by job key, reports |
//! | [`scheduler`] | submit, lease, heartbeat, report, cancel, progress, reaper: the coordinator's decisions |
//! | [`auth`] | bearer tokens, tenants, the roles each call needs |
//! | [`server`], [`service`] | the gRPC server (health, reflection) and its handlers |
//! | [`report`] | a sweep's report from its committed results (decay curves, schedule replays) |
//! | [`deployments`] | the coordinator's side of `wf_live`'s deployments: their files in the artifact store, their retrains on the queue |
//! | [`quota`] | per-tenant limits: open streams, submit rate |
//! | [`store`] | the `JobStore` port, its in-memory and Redis adapters, their conformance suite |
//! | [`telemetry`] | Prometheus `/metrics` and the metrics recorded |
//! | [`testing`] | a private `redis-server` for tests |
//!
//! It decides nothing about jobs itself: `wf_shared::job::JobState::apply` does, and
//! the stores make each decided move atomic.

pub mod artifact;
pub mod auth;
pub mod deployments;
pub mod quota;

/// A sweep's report: the `wf-report` crate, under its old path.
pub use wf_report as report;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod testing;
