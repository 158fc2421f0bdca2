//! Ranking models behind one [`Ranker`] interface, in Candle.
//!
//! - `linear`: one linear map from features to one score per horizon (the baseline);
//! - `mlp`: hidden layers with an activation and dropout, then one score per horizon;
//! - `patchtst`: a transformer over patches of each stock's feature history;
//! - `factor`: one feature times a sign, untrained (a baseline);
//! - `gbdt`: gradient-boosted regression trees (`forust-ml`), fitted without Candle.
//!
//! Weights are initialised from the job's seed with our own ChaCha generator (Candle's
//! CPU `randn` is not seedable), and dropout masks come from the same generator, so a
//! job trained twice gives bit-identical scores on CPU.

mod factor;
pub mod fused;
pub mod gbdt;
mod linear;
mod mlp;
mod patchtst;
mod ranker;

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use factor::Factor;
pub use gbdt::Gbdt;
pub use linear::Linear;
pub use mlp::Mlp;
pub use patchtst::{PatchTst, PatchTstShape};
pub use ranker::{Mode, Ranker, Tape};
pub use wf_shared::model::{Activation, ModelSpec, TRAINER_VERSION, TrainParams, check_models, resolve_models};

/// Builds the model of `spec` for the inputs `feature_names` (in panel order) and
/// `horizons` outputs.
pub fn build(
    spec: &ModelSpec,
    feature_names: &[String],
    horizons: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Box<dyn Ranker>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let features = feature_names.len();
    Ok(match spec {
        ModelSpec::Factor { feature, sign } => {
            let column = feature_names.iter().position(|name| name == feature).ok_or_else(|| {
                candle_core::Error::Msg(format!("the factor's feature {feature:?} is not among the model's inputs"))
            })?;
            Box::new(Factor::new(column, *sign, horizons))
        }
        ModelSpec::Linear { .. } => Box::new(Linear::new(features, horizons, &mut rng, device)?),
        ModelSpec::Gbdt { .. } => Box::new(
            Gbdt::of_spec(spec, horizons, seed).ok_or_else(|| candle_core::Error::Msg("not a gbdt spec".into()))?,
        ),
        ModelSpec::Mlp { hidden, activation, dropout, .. } => {
            Box::new(Mlp::new(features, hidden, horizons, *activation, *dropout, &mut rng, device)?)
        }
        ModelSpec::Patchtst { lookback, patch, d_model, layers, heads, feed_forward, .. } => {
            let shape = PatchTstShape {
                features,
                lookback: *lookback,
                patch: *patch,
                d_model: *d_model,
                layers: *layers,
                heads: *heads,
                feed_forward: *feed_forward,
                horizons,
            };
            Box::new(PatchTst::new(shape, &mut rng, device)?)
        }
        ModelSpec::External { trainer, .. } => {
            return Err(candle_core::Error::Msg(format!(
                "an external model (trainer {trainer:?}) is trained and scored by its program, not built here"
            )));
        }
    })
}
