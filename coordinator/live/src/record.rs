//! What a deployment is (its record, its id), why a command on one failed, and a
//! deployment opened for work.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wf_data::dataset::{DataRoots, Dataset};
use wf_shared::decision::{LivePolicy, LiveState};
use wf_shared::plan::{Job, Plan, PlanInput};
use wf_shared::spec::SweepConfig;

use crate::simulate::live_decision_days;

/// What a deployment is, fixed when it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    /// The sweep spec's TOML text: the dataset, the plan and the model configuration.
    pub spec: String,
    pub model: String,
    pub window: u32,
    pub seed: u64,
    /// As `wf live deploy --policy` took it (a cadence or a policy).
    pub policy: String,
    pub from: chrono::NaiveDate,
    /// Days a retrained version runs in shadow before it may replace the live one.
    #[serde(default)]
    pub shadow_days: u32,
    /// The tenant it belongs to: a coordinator's `Predict` answers only that tenant's
    /// callers (and admins); others are told it does not exist.
    #[serde(default = "local_tenant")]
    pub tenant: String,
}

pub(crate) fn local_tenant() -> String {
    wf_shared::LOCAL_TENANT.to_string()
}

/// Why a deployment command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("{0}")]
    Invalid(String),
    #[error("deployment {0:?} does not exist (`wf live list` shows them)")]
    Unknown(String),
    #[error("deployment {0:?} exists already (`wf live status {0}`)")]
    Exists(String),
    #[error("{0}")]
    Conflict(String),
    /// A prediction asked for a day the deployment has not processed yet.
    #[error("{0}")]
    NotProcessed(String),
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
    #[error(transparent)]
    Live(#[from] wf_shared::decision::LiveError),
    #[error(transparent)]
    Planning(#[from] wf_data::planning::PlanningError),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

pub(crate) type Result<T> = std::result::Result<T, DeploymentError>;

/// A deployment opened for work: its record, spec, dataset, plan and state.
pub struct Opened {
    pub record: DeploymentRecord,
    pub config: SweepConfig,
    /// Shared with the retrains trained in this process and with a predictor's cache.
    pub dataset: Arc<Dataset>,
    pub plan: Plan,
    pub model: usize,
    pub policy: LivePolicy,
    pub state: Option<LiveState>,
    /// The panel's per-day digests for the spec: what its retrains' keys and its history
    /// digest are combined from.
    pub(crate) days: wf_shared::dataset::DayView,
    /// The panel file's stamp, taken before its dataset was read: a file replaced while it
    /// is read (an ingest renames the new panel over the old) then differs from it, and is
    /// read again. Taken after the read, the new file's stamp would stand for the old
    /// panel's days, and no later day would ever be seen.
    pub(crate) panel_stamp: Option<(std::time::SystemTime, u64)>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("record", &self.record).finish_non_exhaustive()
    }
}

impl Opened {
    /// Deployment `record`, without its state: its spec parsed, its dataset read (from
    /// under `roots`) and planned. Blocks: reads the panel.
    pub(crate) fn load(record: DeploymentRecord, roots: &DataRoots) -> Result<Self> {
        let id = &record.id;
        let config = SweepConfig::from_toml(&record.spec)
            .map_err(|e| DeploymentError::Invalid(format!("{id}: its spec no longer reads: {e}")))?;
        let panel_stamp = file_stamp(&config.panel);
        let dataset = wf_data::dataset::open(&config.panel, &config.horizons, config.features.as_deref(), roots)
            .and_then(|source| source.whole())
            .map_err(|e| DeploymentError::Other(e.into()))?;
        let plan = wf_data::planning::plan_sweep(&config, &dataset)?;
        let model = config
            .models
            .iter()
            .position(|m| m.name == record.model)
            .ok_or_else(|| DeploymentError::Invalid(format!("{id}: the spec has no model {}", record.model)))?;
        let policy: LivePolicy =
            record.policy.parse().map_err(|e| DeploymentError::Invalid(format!("{id}: policy: {e}")))?;
        let universe = dataset.panel.daily_universe();
        let input = PlanInput::of_panel(&dataset.panel, &dataset.digests, &universe);
        let days = wf_shared::plan::day_view(&config, &input).map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        Ok(Opened { record, config, dataset: Arc::new(dataset), plan, model, policy, state: None, days, panel_stamp })
    }

    /// The line's jobs by retrain day.
    pub fn jobs(&self) -> BTreeMap<usize, &Job> {
        self.plan.line_jobs(self.model, self.record.window, self.record.seed)
    }

    /// The retrain of day `day`: the training-only job of the deployment's line
    /// ([`wf_shared::plan::training_job`]), whose key stays as the panel grows.
    pub fn training_job(&self, day: usize) -> Result<Job> {
        let universe = self.dataset.panel.daily_universe();
        let input = PlanInput::of_panel(&self.dataset.panel, &self.dataset.digests, &universe);
        let (seed, window) = (self.record.seed, self.record.window);
        wf_shared::plan::training_job(&self.config, &input, &self.days, self.model, seed, window, day).map_err(|e| {
            DeploymentError::Invalid(format!("{}: the retrain of {}: {e}", self.record.id, self.date(day)))
        })
    }

    /// The digest of its panel's history before day `next_day` ([`LiveState::history`]).
    pub fn history(&self, next_day: usize) -> wf_shared::DatasetHash {
        let next_day = next_day.min(self.days.days());
        let matured = next_day.saturating_sub(self.config.longest_horizon() as usize + 1);
        self.days.data_digest(0..next_day, 0..matured, 0..0)
    }

    /// Refuses a panel whose days before `state.next_day` are not the ones processed.
    pub(crate) fn check_history(&self, state: &LiveState) -> Result<()> {
        let Some(recorded) = state.history else { return Ok(()) };
        let calendar = self.dataset.panel.calendar();
        if state.next_day > calendar.len() || self.history(state.next_day) != recorded {
            return Err(DeploymentError::Invalid(format!(
                "{}: its panel's history changed: the days before {} are not the ones it processed (a day \
                 inserted, removed or corrected in {}); deploy again on the new history",
                self.record.id,
                calendar.date(state.next_day).map_or_else(|| format!("day {}", state.next_day), |d| d.to_string()),
                self.config.panel
            )));
        }
        Ok(())
    }

    /// Its decision days, through the panel's last day.
    pub fn decision_days(&self) -> Result<Vec<usize>> {
        live_decision_days(&self.plan, &self.policy, self.dataset.panel.calendar(), self.config.start)
            .map_err(|e| DeploymentError::Invalid(e.to_string()))
    }

    /// The date of calendar day `day`.
    pub fn date(&self, day: usize) -> String {
        self.dataset.panel.calendar().date(day).map(|d| d.to_string()).unwrap_or_default()
    }
}

/// A deployment id: `<model>-w<window>-<8 hex>` of the spec text, model, window, seed,
/// policy and start date.
pub fn deployment_id(record: &DeploymentRecord) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [
        &record.spec,
        &record.model,
        &record.window.to_string(),
        &record.seed.to_string(),
        &record.policy,
        &record.from.to_string(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    // Another tenant's deployment of the same line is another deployment (the local
    // tenant's ids are as they were before tenants).
    if record.tenant != wf_shared::LOCAL_TENANT {
        hasher.update(record.tenant.as_bytes());
    }
    let safe: String =
        record.model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("{safe}-w{}-{}", record.window, &hasher.finalize().to_hex()[..8])
}

/// The modification time and length of the panel file `uri` (`None` for a synthetic one).
pub(crate) fn file_stamp(uri: &str) -> Option<(std::time::SystemTime, u64)> {
    if wf_data::dataset::synth_spec(uri).is_some() {
        return None;
    }
    let metadata = std::fs::metadata(uri).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}
