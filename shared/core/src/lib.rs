//! `wf-shared`: the pure domain of walkforward.
//!
//! Everything here is synchronous, deterministic and free of I/O: no tokio, tonic,
//! redis, candle or polars, and no clock reads. The data layer (`wf-data`) reads and
//! writes files and hands plain columns to this crate; the coordinator and workers
//! call it to decide, never the other way round.
//!
//! | module | owns |
//! |---|---|
//! | [`calendar`] | the trading calendar: sorted distinct dates, offsets in trading days |
//! | [`cadence`] | retraining cadences and the retrain dates they select |
//! | [`spec`] | sweep specs (TOML) and their validation, errors naming the field |
//! | [`model`] | model hyperparameters with their defaults resolved, the trainer version |
//! | [`plan`] | the planner: jobs with the purge rule, job keys, dedup, split manifest |
//! | [`bars`] | validated daily OHLCV, stored per stock on the calendar |
//! | [`feature`] | the feature catalogue and the panel builder (features + forward targets) |
//! | [`panel`] | the panel: one row per (date, stock), features and targets as columns |
//! | [`synth`] | the synthetic market with planted regime breaks (the embedded default) |
//! | [`metric`] | per-day ranking metrics (P@K, base rate, RankIC, spread) and summaries |
//! | [`bootstrap`] | moving-block bootstrap intervals |
//! | [`evaluate`] | scoring a model's test days into age-matrix rows |
//! | [`exposure`] | style exposures: Spearman of a model's scores with style factors, by age |
//! | [`importance`] | permutation importance of each feature on a job's validation days |
//! | [`age`] | the age matrix: every model's metrics at every age |
//! | [`decay`] | decay curves, decay rate, half-life |
//! | [`drift`] | PSI of recent features against the training window |
//! | [`replay`] | fixed and adaptive schedules replayed from the age matrix, compared |
//! | [`snooping`] | corrections for the number tried: SPA, StepM, deflated Sharpe, PBO |
//! | [`verdict`] | a line's verdict: the best fixed cadence, SPA/StepM, out-of-sample choice |
//! | [`linear`] | a ridge least-squares scorer, the closed-form stand-in for models |
//! | [`dataset`] | dataset identity (content hash newtype) |
//! | [`label_guard`] | what may never be a feature: label-like names, copies of a target |
//! | [`job`] | the job state machine: leases fenced by attempt, retries, dead letters |

pub mod age;
pub mod backtest;
pub mod bars;
pub mod bootstrap;
pub mod cadence;
pub mod calendar;
pub mod dataset;
pub mod decay;
pub mod decision;
pub mod drift;
pub mod evaluate;
pub mod exposure;
pub mod feature;
pub mod importance;
pub mod job;
pub mod label_guard;
pub mod linear;
pub mod metric;
pub mod model;
pub mod panel;
pub mod plan;
pub mod replay;
mod rolling;
pub mod snooping;
pub mod spec;
pub mod synth;
pub mod target;
pub mod targets;
pub mod verdict;

pub use bars::{Bars, BarsColumns, BarsError};
pub use calendar::TradingCalendar;
pub use dataset::{DatasetHash, DatasetRef, content_hash};
pub use feature::{FEATURES, FeatureDef, PanelSpec, build_panel};
pub use panel::Panel;

/// The tenant of sweeps and deployments made without authentication (the local CLI, a
/// coordinator without `--auth`).
pub const LOCAL_TENANT: &str = "local";
