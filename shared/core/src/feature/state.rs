//! What continuing a panel needs, saved next to it by `wf data prepare` (`PANEL.state`):
//! each stock's last days of prices and its running sums after its last day. Built by a
//! whole build ([`super::build_panel_with_state`]), read and written again by
//! [`super::extend_panel`].

use serde::{Deserialize, Serialize};

use crate::rolling::Sums;

/// Days of prices a stock's state keeps: the longest look-back (60 days of log returns,
/// which read 61 closes) and a margin.
pub const TAIL_DAYS: usize = 64;

/// The format of [`FeatureState`]; a state of another format is refused.
pub const STATE_FORMAT: &str = "walkforward-features-state-v1";

/// Days of prices a state keeps for `horizons`: [`TAIL_DAYS`], or more when a horizon
/// reaches further (the targets it fills in read the closes of that many earlier days).
pub fn tail_days(horizons: &[u32]) -> usize {
    TAIL_DAYS.max(horizons.iter().copied().max().unwrap_or(0) as usize + 1)
}

/// What continuing a panel needs, saved next to it by `wf data prepare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureState {
    pub format: String,
    pub horizons: Vec<u32>,
    /// The equal-weighted market log return of every day of the panel's calendar.
    pub market: Vec<f64>,
    /// Per stock, in the panel's code order.
    pub stocks: Vec<StockState>,
}

/// One stock's dense series: where it starts and how long it is, its last days of prices
/// and its running sums after its last day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockState {
    pub code: String,
    /// Global day index of its first row.
    pub first_day: u32,
    /// Days from its first row to its last (rows or not).
    pub len: u32,
    pub tail: Tail,
    pub sums: Vec<Sums>,
}

/// The last `min(len, TAIL_DAYS)` days of a stock's dense series (null: no row or no
/// price that day).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tail {
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
    /// Traded value: turnover, else close × volume.
    pub value: Vec<f64>,
}
