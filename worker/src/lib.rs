//! `wf-worker`: the compute side of walkforward.
//!
//! It will own the lease loop, heartbeats, the dataset cache (keyed by the content hash
//! of [`wf_shared::DatasetHash`]), and the Candle models with training and scoring. It
//! never writes job state: it reports to the coordinator, which decides.
//!
//! Nothing is implemented here yet; the models issue and the distributed-core issue fill
//! it in. The crate exists so the workspace has its final shape and dependency direction.
