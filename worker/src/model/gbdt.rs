//! Gradient-boosted regression trees: XGBoost's algorithm as `forust-ml` implements it,
//! on the CPU, one thread, deterministic for a seed.
//!
//! The ensemble is fitted to the primary horizon's transformed target (the squared loss;
//! the logistic loss for `sign`) on every training day's stocks, with early stopping on
//! the validation days' loss; a missing feature reads 0 (the day's median of a robust
//! z-score), as for the other models. Its prediction scores every horizon. It has no
//! Candle variables: the fitted ensemble travels as JSON ([`Ranker::state`]).

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use forust_ml::metric::Metric;
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use wf_shared::Panel;
use wf_shared::target::TargetTransform;

use super::ranker::{Mode, Ranker};
use crate::WorkerError;
use crate::train::{TrainRequest, TrainStats, split_window};
use wf_shared::model::ModelSpec;

/// A gbdt model: its settings, and the ensemble once fitted.
pub struct Gbdt {
    trees: usize,
    max_depth: usize,
    min_leaf_weight: f32,
    l2: f32,
    horizons: usize,
    seed: u64,
    booster: OnceLock<GradientBooster>,
}

impl std::fmt::Debug for Gbdt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gbdt")
            .field("trees", &self.trees)
            .field("max_depth", &self.max_depth)
            .field("fitted_trees", &self.booster.get().map(|b| b.trees.len()))
            .finish()
    }
}

impl Gbdt {
    /// The unfitted model of a `gbdt` spec with `horizons` outputs (`None`: another kind).
    pub fn of_spec(spec: &ModelSpec, horizons: usize, seed: u64) -> Option<Self> {
        let ModelSpec::Gbdt { trees, max_depth, min_leaf_weight, l2, .. } = spec else { return None };
        Some(Self {
            trees: *trees,
            max_depth: *max_depth,
            min_leaf_weight: *min_leaf_weight,
            l2: *l2,
            horizons,
            seed,
            booster: OnceLock::new(),
        })
    }
}

fn failed(error: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("gbdt: {error}"))
}

impl Ranker for Gbdt {
    fn forward(&self, features: &Tensor, _mode: Mode<'_>) -> candle_core::Result<Tensor> {
        let (count, stocks) = features.dims2()?;
        let booster = self.booster.get().ok_or_else(|| failed("the model is not fitted"))?;
        // [features, stocks] row-major is the column-major matrix of stocks x features.
        let values: Vec<f64> = features.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
        let predictions = booster.predict(&Matrix::new(&values, stocks, count), false);
        let scores: Vec<f32> = predictions.into_iter().map(|p| p as f32).collect();
        Tensor::from_vec(scores, (1, stocks), features.device())?.broadcast_as((self.horizons, stocks))?.contiguous()
    }

    fn variables(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    fn state(&self) -> Option<String> {
        self.booster.get().and_then(|booster| booster.json_dump().ok())
    }

    fn set_state(&self, state: &str) -> candle_core::Result<()> {
        let booster = GradientBooster::from_json(state).map_err(failed)?;
        self.booster.set(booster).map_err(|_| failed("the model is already fitted"))
    }
}

/// Every stock of `days` with a finite target at `horizon`: features as a column-major
/// matrix (missing → 0) and the transformed targets.
fn rows_of(panel: &Panel, days: Range<usize>, horizon: u32, transform: TargetTransform) -> (Vec<f64>, Vec<f64>) {
    let target = panel.target(horizon).unwrap_or_default();
    let mut rows = Vec::new();
    let mut y = Vec::new();
    for day in days {
        let kept: Vec<usize> =
            panel.rows_of_day(day).filter(|row| target.get(*row).is_some_and(|t| t.is_finite())).collect();
        if kept.len() < 2 {
            continue;
        }
        y.extend(transform.apply(&kept.iter().map(|row| target[*row]).collect::<Vec<_>>()));
        rows.extend(kept);
    }
    let mut columns = Vec::with_capacity(rows.len() * panel.features().len());
    for column in panel.features() {
        columns.extend(rows.iter().map(|row| {
            let value = column[*row];
            if value.is_finite() { f64::from(value) } else { 0.0 }
        }));
    }
    (columns, y)
}

/// Fits `model` as `request` says, to the target at `primary`.
pub fn train_gbdt(
    model: &Gbdt,
    request: &TrainRequest<'_>,
    primary: u32,
    device: &Device,
) -> Result<TrainStats, WorkerError> {
    let TrainRequest { panel, window, horizons, params, .. } = request.clone();
    let started = Instant::now();
    let longest = horizons.iter().copied().max().unwrap_or(1) as usize;
    let (train_days, validation_days) = split_window(window, params.validation_days as usize, longest);
    let features = panel.features().len();
    let (columns, y) = rows_of(panel, train_days.clone(), primary, params.target);
    if y.is_empty() {
        return Err(WorkerError::NoData("no training day has two stocks with a target".into()));
    }
    let (held_columns, held_y) = rows_of(panel, validation_days.clone(), primary, params.target);
    let logistic = params.target == TargetTransform::Sign;
    let mut booster = GradientBooster::default()
        .set_objective_type(if logistic { ObjectiveType::LogLoss } else { ObjectiveType::SquaredLoss })
        .set_iterations(model.trees)
        .set_learning_rate(params.learning_rate as f32)
        .set_max_depth(model.max_depth)
        .set_min_leaf_weight(model.min_leaf_weight)
        .set_l2(model.l2)
        .set_seed(model.seed)
        .set_parallel(false);
    let weights = vec![1.0; y.len()];
    let held_weights = vec![1.0; held_y.len()];
    let evaluation = if held_y.is_empty() {
        None
    } else {
        booster = booster
            .set_evaluation_metric(Some(if logistic { Metric::LogLoss } else { Metric::RootMeanSquaredError }))
            .set_early_stopping_rounds(Some(params.patience.max(1) as usize));
        Some(vec![(Matrix::new(&held_columns, held_y.len(), features), held_y.as_slice(), held_weights.as_slice())])
    };
    booster
        .fit(&Matrix::new(&columns, y.len(), features), &y, &weights, evaluation)
        .map_err(|e| WorkerError::NoData(format!("gbdt fit: {e}")))?;
    let trees = booster.trees.len() as u32;
    let best = booster.best_iteration.map_or(trees, |best| best as u32);
    model.booster.set(booster).map_err(|_| WorkerError::Tensor(failed("the model is already fitted")))?;
    Ok(TrainStats {
        epochs: trees,
        best_epoch: best,
        best_validation_loss: f64::NAN,
        history: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
        device: crate::device::device_name(device),
        training_days: train_days.len(),
        validation_days: validation_days.len(),
        time: crate::train::TrainTime::default(),
    })
}
