//! `wf-live`: persistent deployments (`wf live deploy | advance | status | list |
//! rollback`, `wf predict`): one model configuration, train window, seed and policy,
//! advanced over the panel's days with the live decisions ([`wf_shared::decision`]), each day
//! scored by the live version's own model ([`wf_worker::observer::PanelObserver`]); and
//! `wf live simulate`, the same decisions fed historical days.
//!
//! Async, with no runtime of its own, and free of the coordinator: it reaches the world
//! through two ports. Its files go through [`LiveFiles`] (the coordinator's artifact store
//! implements it, under `live/<id>/`); its retrains through [`Retrainer`] ([`LocalTrainer`]
//! trains in this process; the coordinator's `QueueTrainer` queues them for the workers).
//!
//! A deployment's files:
//!
//! | file | written | holds |
//! |---|---|---|
//! | `deployment.json` | once, create-only | the spec (TOML text), model, window, seed, policy, start date |
//! | `state.json` | after every decision day and at the end of an advance | [`LiveState`]: versions, decisions, switches, the next day |
//! | `versions/<n>.safetensors` | once per version, create-only | the version's weights with its job key and dataset hash |
//! | `predictions/<date>-v<n>.parquet` | once per day and version, by `wf predict` | date, rank, code, score, version |
//!
//! A process killed mid-advance leaves the state of its last decision day; the next
//! advance processes the days after it again, which decide the same (the days and the
//! models are the same), and a version whose weights were written before the kill is
//! loaded rather than trained again: no decision is lost or repeated.
//!
//! | module | holds |
//! |---|---|
//! | `files` | Where deployments keep their files: the port, and an adapter in memory. |
//! | `record` | What a deployment is (its record, its id), why a command on one failed, and a deployment opened for work. |
//! | `trainer` | Who trains a deployment's versions: the port, and training in this process. |
//! | `store` | Deployments in their files: deploy, open, advance, roll back. |
//! | `predictor` | Serving predictions, and advancing the deployments whose panels grew. |
//! | `metrics` | A deployment's `wf_live_*` metrics. |
//! | `ranking` | Ranking one day with a model: what `wf predict` serves. |
//! | [`simulate`] | `wf live simulate`: a deployment's decisions fed historical days one by one. |

mod files;
mod metrics;
mod predictor;
mod ranking;
mod record;
mod store;
mod trainer;

pub mod simulate;

pub use files::{FilesError, LiveFiles, MemoryFiles, conformance};
pub use metrics::{DRIFT_DAYS, DRIFT_THETA};
pub use predictor::{MAX_PREDICTION_K, Prediction, Predictor, Ranked};
pub use ranking::{Ranking, rank_day};
pub use record::{DeploymentError, DeploymentRecord, Opened, deployment_id};
pub use store::{Advanced, Deployments};
pub use trainer::{LocalTrainer, Retrainer};

/// A future of this crate, boxed: its body is compiled once, here, rather than again in
/// every crate that awaits it (an `async fn`'s body is compiled where it is awaited; the
/// app crate compiled the whole of an advance a second time).
pub type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[cfg(test)]
mod tests;
