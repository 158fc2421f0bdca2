//! `wf-coordinator`: the coordinator of walkforward and the library behind the `wf` CLI.
//!
//! | module | owns |
//! |---|---|
//! | [`artifact`] | the artifact store: manifests, results written once by job key, reports |
//! | [`store`] | the `JobStore` port, its in-memory and Redis adapters, their conformance suite |
//! | [`testing`] | a private `redis-server` for tests |
//!
//! It decides nothing about jobs itself: `wf_shared::job::JobState::apply` does, and
//! the stores make each decided move atomic.

pub mod artifact;
pub mod store;
pub mod testing;
