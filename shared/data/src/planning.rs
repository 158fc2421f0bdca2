//! Planning a validated sweep on its dataset: the models' parameters checked, then the
//! planner run on the dataset's calendar, universe and digests. The one place that does
//! both, for `wf plan`, `wf train`, `wf live` and the deployments.

use wf_shared::plan::{Plan, PlanInput};
use wf_shared::spec::{SpecErrors, SweepConfig};

use crate::dataset::{Dataset, DatasetSummary};

/// Why a sweep could not be planned; each names the sweep.
#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    #[error("invalid sweep spec {name}: {errors}")]
    InvalidSpec { name: String, errors: SpecErrors },
    #[error("cannot plan sweep {name}: {errors}")]
    Unplannable { name: String, errors: SpecErrors },
}

/// Plans a validated sweep on its loaded dataset; model hyperparameters are checked
/// here too, by the models library.
pub fn plan_sweep(config: &SweepConfig, dataset: &Dataset) -> Result<Plan, PlanningError> {
    let universe = dataset.panel.daily_universe();
    plan_on(config, &PlanInput::of_panel(&dataset.panel, &dataset.digests, &universe))
}

/// [`plan_sweep`] on a dataset's summary (its file's metadata: no value read).
pub fn plan_summary(config: &SweepConfig, summary: &DatasetSummary) -> Result<Plan, PlanningError> {
    plan_on(config, &summary.plan_input())
}

/// Checks `config`'s models and plans it on `input`.
pub fn plan_on(config: &SweepConfig, input: &PlanInput<'_>) -> Result<Plan, PlanningError> {
    wf_shared::model::check_models(config)
        .map_err(|errors| PlanningError::InvalidSpec { name: config.name.clone(), errors })?;
    wf_shared::plan::plan(config, input)
        .map_err(|errors| PlanningError::Unplannable { name: config.name.clone(), errors })
}
