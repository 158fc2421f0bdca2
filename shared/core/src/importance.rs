//! Permutation importance: how much a trained model's validation quality falls when one
//! feature is shuffled across the stocks of each validation day (`docs/ANALYTICS.md`,
//! "Feature importance").

use serde::{Deserialize, Serialize};

/// A job's permutation importance, one value per feature in the job's feature order; empty
/// where not measured (an untrained baseline, a model that reads a history of days, a
/// window without validation days, results before trainer version 5).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Importance {
    /// Validation days measured on.
    pub days: u32,
    /// Mean validation loss of the unshuffled inputs.
    pub base_loss: f64,
    /// Mean validation RankIC (primary horizon) of the unshuffled inputs; `NaN` where no
    /// day has one.
    pub base_rank_ic: f64,
    /// Per feature: validation loss with the feature shuffled minus `base_loss` (a rise:
    /// the feature mattered).
    pub loss: Vec<f32>,
    /// Per feature: `base_rank_ic` minus the validation RankIC with the feature shuffled
    /// (a drop: the feature mattered).
    pub rank_ic: Vec<f32>,
}

impl Importance {
    pub fn is_measured(&self) -> bool {
        !self.loss.is_empty()
    }
}
