//! End-to-end tests of the `wf` binary: one test binary for the whole suite.

mod alerts;
mod auth_cli;
mod chaos;
mod cluster;
mod dashboards;
mod data_cli;
mod deploy;
mod external;
mod hostile;
mod live_cli;
mod network;
mod null_market;
mod plan_cli;
mod report_html;
mod reuse;
mod s3;
mod tls;
mod train_cli;
