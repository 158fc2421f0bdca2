//! `wf-coordinator`: the coordinator of walkforward and the library behind the `wf` CLI.
//!
//! | module | owns |
//! |---|---|
//! | [`artifact`] | the artifact store: manifests, results written once by job key, reports |
//! | [`scheduler`] | submit, lease, heartbeat, report, cancel, progress, reaper: the coordinator's decisions |
//! | [`server`], [`service`] | the gRPC server (health, reflection) and its handlers |
//! | [`report`] | a sweep's report from its committed results (decay curves, schedule replays) |
//! | [`deployment`] | persistent live deployments in the artifact store: deploy, advance, rollback, predict |
//! | [`live`] | `wf live simulate`: a deployment's decisions fed historical days one by one |
//! | [`local`] | `wf run`: coordinator and workers in one process, over loopback gRPC |
//! | [`cli`], [`command`] | the `wf` and `wf-worker` command lines and what each command does |
//! | [`client`] | watching a sweep and fetching its report, for the CLI |
//! | [`quota`] | per-tenant limits: open streams, submit rate |
//! | [`store`] | the `JobStore` port, its in-memory and Redis adapters, their conformance suite |
//! | [`telemetry`] | Prometheus `/metrics` and the metrics recorded |
//! | [`testing`] | a private `redis-server` for tests |
//!
//! It decides nothing about jobs itself: `wf_shared::job::JobState::apply` does, and
//! the stores make each decided move atomic.

pub mod artifact;
pub mod auth;
pub mod cli;
pub mod client;
pub mod command;
pub mod deployment;
pub mod live;
pub mod local;
mod progress;
pub mod quota;
pub mod report;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod testing;
