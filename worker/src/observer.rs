//! What a live deployment observes of its models on a panel, computed the live way: each
//! version's trained model scores a day when asked (one day at a time, as a deployment
//! scores each new day), that day's metrics come from its scores and the day's targets,
//! and its drift from the day's features binned against the version's training window.
//!
//! Nothing here reads a job's stored rows: a deployment advanced with this observer and
//! the offline replay of the sweep's jobs are two computations, and they agree
//! (`tests/live.rs`).

use std::collections::HashMap;
use std::ops::Range;

use candle_core::Device;
use wf_shared::decision::{Observe, Version};
use wf_shared::drift::{BINS, DriftReference};
use wf_shared::metric::{DayMetrics, day_metrics};
use wf_shared::panel::Panel;
use wf_shared::spec::TopK;

use std::sync::Arc;

use crate::model::Ranker;
use crate::train::score_day;

/// One version's model and its training window's bins.
struct Served {
    model: Arc<dyn Ranker>,
    drift: DriftReference,
}

/// Observes versions on `panel` up to `last_day`, the last day whose label is known.
#[allow(missing_debug_implementations)] // holds trained models, which have no Debug
pub struct PanelObserver<'a> {
    panel: &'a Panel,
    /// The primary horizon's output column and its target.
    column: usize,
    target: &'a [f64],
    k: TopK,
    last_day: usize,
    device: Device,
    versions: HashMap<usize, Served>,
    /// Score failures (a device error): the day reads as not scored, and is listed here.
    pub failures: Vec<String>,
}

impl<'a> PanelObserver<'a> {
    /// `None` when the panel has no target for `horizon`.
    pub fn new(
        panel: &'a Panel,
        horizons: &[u32],
        horizon: u32,
        k: TopK,
        last_day: usize,
        device: Device,
    ) -> Option<Self> {
        let column = horizons.iter().position(|h| *h == horizon)?;
        let target = panel.target(horizon)?;
        Some(Self { panel, column, target, k, last_day, device, versions: HashMap::new(), failures: Vec::new() })
    }

    /// Serves `model`, trained on `train_days` for `retrain_day`; returns its version
    /// record's training bins.
    pub fn add(&mut self, retrain_day: usize, model: Arc<dyn Ranker>, train_days: Range<usize>) -> Vec<[u32; BINS]> {
        let drift = DriftReference::of(self.panel, train_days);
        let training = drift.training.clone();
        self.versions.insert(retrain_day, Served { model, drift });
        training
    }
}

impl Observe for PanelObserver<'_> {
    fn metrics(&mut self, version: &Version, day: usize) -> Option<DayMetrics> {
        if day > self.last_day {
            return None;
        }
        let served = self.versions.get(&version.retrain_day)?;
        match score_day(served.model.as_ref(), self.panel, day, self.column, &self.device) {
            Ok(scores) => day_metrics(&scores, &self.target[self.panel.rows_of_day(day)], self.k),
            Err(error) => {
                self.failures.push(format!("version {} day {day}: {error}", version.number));
                None
            }
        }
    }

    fn drift(&mut self, version: &Version, day: usize) -> Option<Vec<[u32; BINS]>> {
        if day > self.last_day {
            return None;
        }
        Some(self.versions.get(&version.retrain_day)?.drift.day(self.panel, day))
    }
}
