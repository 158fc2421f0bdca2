//! Typed model hyperparameters, validated from a sweep's `[[models]]` entry. Unknown or
//! out-of-range parameters are refused naming `models[i].params.<name>`.
//!
//! The resolved spec ([`ModelSpec::resolve`]: every default applied, the loss weight of
//! each horizon written out) is part of a job's identity, so changing a default changes
//! the job keys of every model that relied on it. [`TRAINER_VERSION`] covers what the
//! spec cannot: the training and scoring code itself.

use serde::{Deserialize, Serialize};

mod external;
pub use external::{MAX_OPTIONS_BYTES, named_trainers, pin_trainers};

use crate::spec::{ModelConfig, ModelKind, SpecError, SpecErrors, SweepConfig, TrainerPin};
pub use crate::target::TargetTransform;

/// The version of the training and scoring code, part of every job's identity.
///
/// Bump it in any change that makes a job's numbers differ (its scores, hence P@K, RankIC
/// or the training statistics): the model code, the optimiser, the loss, initialisation,
/// dropout, data gathering, scoring, the metrics of a day. Results of the old version are
/// then never reused. The test `trainer_version_pins_the_scores_of_a_fixed_job`
/// (`worker/tests/trainer_version.rs`) fails when a fixed tiny job's numbers change and
/// this did not.
///
/// History: 1, the first versioned code; 2, stocks tied on the score at the top-K and
/// bottom-K cuts count fractionally (they were taken in input order); 3, results keep
/// the top-ranked stocks of every scored day (the backtest's input), so results of 2,
/// which have none, are not reused; 4, a score of −0.0 ranks equal to 0.0 in the kept
/// rankings (it ranked below; a factor baseline's negated zeros showed it); 5, results
/// keep the style exposures of every scored day, the metrics of every trained horizon and
/// the permutation importance of every feature, so results of 4, which have none, are not
/// reused; 6, `patchtst` results keep permutation importance too (5's have none; the other
/// kinds' numbers are unchanged); 7, permutation importance reads every second
/// validation day (counting back from the last) and carries a shuffled feature through
/// the input product of `linear` and `mlp`, so every trained kind's importance changes
/// (its scores and metrics do not); 8, kept rankings are positions in each scored day's
/// rows (code order), not universe indices, so a result means the same on a panel whose
/// universe grew after it was trained (the stocks and their order are unchanged); 9, the
/// metrics of a day keep P@K and the base rate on the median basis (returns above the
/// day's median) beside the zero basis, so results of 8, which have none, are not reused
/// (their other numbers are unchanged).
pub const TRAINER_VERSION: u32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
}

/// Training settings shared by every model kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Hard limit on epochs (one epoch = every training day once).
    pub epochs: u32,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Steps of linear learning-rate warm-up.
    pub warmup_steps: u32,
    /// Global gradient-norm limit.
    pub clip_norm: f64,
    /// Epochs without a better validation loss before stopping.
    pub patience: u32,
    /// The last days of the training window held out (after a purge gap) for early stopping.
    pub validation_days: u32,
    pub listnet_weight: f64,
    pub mse_weight: f64,
    /// Loss weight per trained horizon, in the sweep's horizon order; default 1 for the
    /// primary horizon and 0.5 for the others.
    pub horizon_weights: Option<Vec<f64>>,
    /// What each day's returns become before training (`zscore`, the default, is left
    /// out of identities, so existing job keys stay).
    #[serde(default, skip_serializing_if = "TargetTransform::is_zscore")]
    pub target: TargetTransform,
}

impl TrainParams {
    /// The loss weight of each of `config`'s horizons: as given, else 1 for the primary
    /// horizon and 0.5 for the others.
    pub fn horizon_weights_for(&self, config: &SweepConfig) -> Vec<f64> {
        self.horizon_weights.clone().unwrap_or_else(|| {
            config.horizons.iter().map(|h| if *h == config.primary_horizon { 1.0 } else { 0.5 }).collect()
        })
    }
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            epochs: 30,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            warmup_steps: 50,
            clip_norm: 1.0,
            patience: 4,
            validation_days: 21,
            // Measured on the synthetic market (`examples/tune.rs`): ListNet alone over
            // z-scored returns is dominated by a few extreme winners and ranked no better
            // than chance out of sample (ΔP@K -0.01); MSE alone 0.097; 0.1 ListNet + 1.0 MSE
            // 0.090-0.107 for linear and mlp.
            listnet_weight: 0.1,
            mse_weight: 1.0,
            horizon_weights: None,
            target: TargetTransform::Zscore,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSpec {
    Linear {
        train: TrainParams,
    },
    Mlp {
        hidden: Vec<usize>,
        activation: Activation,
        dropout: f32,
        train: TrainParams,
    },
    Patchtst {
        lookback: usize,
        patch: usize,
        d_model: usize,
        layers: usize,
        heads: usize,
        feed_forward: usize,
        train: TrainParams,
    },
    /// Scores every stock by one feature times `sign` (1 or −1), for every horizon; no
    /// training. A missing value scores 0: the day's median, features being robust
    /// z-scores.
    Factor {
        feature: String,
        sign: i32,
    },
    /// Gradient-boosted regression trees (XGBoost's algorithm, `forust-ml`) fitted to the
    /// primary horizon's transformed target on every training day's stocks, with early
    /// stopping on the validation days; the same prediction scores every horizon. Of
    /// `train`, only `learning_rate`, `patience` (rounds without a better validation
    /// loss), `validation_days` and `target` apply.
    Gbdt {
        trees: usize,
        max_depth: usize,
        /// Least hessian sum of a leaf (its row count, for the squared loss).
        min_leaf_weight: f32,
        l2: f32,
        train: TrainParams,
    },
    /// A program registered on the workers trains and scores (`docs/TRAINERS.md`).
    /// `trainer` names the registration; `options` is handed to it as given; the last
    /// `validation_days` of the training window (after a purge gap of the longest
    /// horizon) are marked for validation; `pin` is the registration's identity, pinned
    /// at submission (`[trainers.NAME]`), so a changed program changes every job key.
    External {
        trainer: String,
        options: serde_json::Value,
        validation_days: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<TrainerPin>,
    },
}

/// Parameters as written; every field optional, none unknown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    epochs: Option<u32>,
    learning_rate: Option<f64>,
    weight_decay: Option<f64>,
    warmup_steps: Option<u32>,
    clip_norm: Option<f64>,
    patience: Option<u32>,
    validation_days: Option<u32>,
    listnet_weight: Option<f64>,
    mse_weight: Option<f64>,
    horizon_weights: Option<Vec<f64>>,
    target: Option<TargetTransform>,
    hidden: Option<Vec<usize>>,
    activation: Option<Activation>,
    dropout: Option<f32>,
    lookback: Option<usize>,
    patch: Option<usize>,
    d_model: Option<usize>,
    layers: Option<usize>,
    heads: Option<usize>,
    feed_forward: Option<usize>,
    feature: Option<String>,
    trees: Option<usize>,
    max_depth: Option<usize>,
    min_leaf_weight: Option<f32>,
    l2: Option<f32>,
}

/// Parameters only `gbdt` takes.
const GBDT_ONLY: [&str; 4] = ["trees", "max_depth", "min_leaf_weight", "l2"];

const PATCHTST_ONLY: [&str; 6] = ["lookback", "patch", "d_model", "layers", "heads", "feed_forward"];

/// Refuses parameters that belong to another model kind.
fn check_absent(
    raw: &RawParams,
    names: &[&str],
    kind: &str,
    check: &dyn Fn(bool, &str, &str) -> Result<(), SpecError>,
) -> Result<(), SpecError> {
    for name in names {
        let given = match *name {
            "hidden" => raw.hidden.is_some(),
            "activation" => raw.activation.is_some(),
            "dropout" => raw.dropout.is_some(),
            "lookback" => raw.lookback.is_some(),
            "patch" => raw.patch.is_some(),
            "d_model" => raw.d_model.is_some(),
            "layers" => raw.layers.is_some(),
            "heads" => raw.heads.is_some(),
            "feature" => raw.feature.is_some(),
            "trees" => raw.trees.is_some(),
            "max_depth" => raw.max_depth.is_some(),
            "min_leaf_weight" => raw.min_leaf_weight.is_some(),
            "l2" => raw.l2.is_some(),
            _ => raw.feed_forward.is_some(),
        };
        check(!given, name, &format!("not a parameter of {kind} models"))?;
    }
    Ok(())
}

/// Resolves every model of a sweep ([`ModelSpec::resolve`]), in spec order; all
/// problems at once, each naming its field.
pub fn resolve_models(config: &SweepConfig) -> Result<Vec<ModelSpec>, SpecErrors> {
    let mut specs = Vec::with_capacity(config.models.len());
    let mut errors = Vec::new();
    for index in 0..config.models.len() {
        match ModelSpec::resolve(index, config) {
            Ok(spec) => specs.push(spec),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() { Ok(specs) } else { Err(SpecErrors(errors)) }
}

/// Checks every model of a sweep; all problems at once, each naming its field.
pub fn check_models(config: &SweepConfig) -> Result<(), SpecErrors> {
    resolve_models(config).map(|_| ())
}

impl ModelSpec {
    /// Trading days of features each prediction reads (1: the day itself).
    pub fn lookback(&self) -> usize {
        match self {
            ModelSpec::Patchtst { lookback, .. } => (*lookback).max(1),
            _ => 1,
        }
    }

    /// The `index`-th model of `config` with every default applied, including the loss
    /// weight of each horizon (1 for the primary horizon, 0.5 for the others, unless
    /// `horizon_weights` is given): what a job of this model trains with.
    pub fn resolve(index: usize, config: &SweepConfig) -> Result<Self, SpecError> {
        let model = config
            .models
            .get(index)
            .ok_or_else(|| SpecError::new(format!("models[{index}]"), "the sweep has no such model"))?;
        let mut spec = Self::from_config(index, model, config.horizons.len())?;
        match &mut spec {
            Self::Linear { train } | Self::Mlp { train, .. } | Self::Patchtst { train, .. } => {
                train.horizon_weights = Some(train.horizon_weights_for(config));
            }
            // Trees fit the primary horizon only: its loss (and importance's) weighs that one.
            Self::Gbdt { train, .. } => {
                train.horizon_weights = Some(
                    config.horizons.iter().map(|h| if *h == config.primary_horizon { 1.0 } else { 0.0 }).collect(),
                );
            }
            Self::Factor { .. } => {}
            Self::External { trainer, pin, .. } => {
                let found = config.trainers.get(trainer.as_str()).ok_or_else(|| {
                    SpecError::new(
                        format!("models[{index}].params.trainer"),
                        format!(
                            "trainer {trainer:?} is not pinned: the coordinator pins the trainers registered on it \
                             at submission (`--trainer {trainer}=PATH`), or the spec pins it in [trainers.{trainer}]"
                        ),
                    )
                })?;
                *pin = Some(found.clone());
            }
        }
        Ok(spec)
    }

    /// Validates the `index`-th model of a sweep with `horizons` trained horizons.
    pub fn from_config(index: usize, model: &ModelConfig, horizons: usize) -> Result<Self, SpecError> {
        let field = |name: &str| format!("models[{index}].params.{name}");
        let object = serde_json::Value::Object(model.params.clone().into_iter().collect());
        if model.kind == ModelKind::External {
            return Self::external(index, model);
        }
        let raw: RawParams = serde_json::from_value(object)
            .map_err(|e| SpecError::new(format!("models[{index}].params"), e.to_string()))?;
        if model.kind == ModelKind::Factor {
            return Self::factor(index, &model.params, raw);
        }
        let defaults = TrainParams::default();
        let gbdt = model.kind == ModelKind::Gbdt;
        let train = TrainParams {
            epochs: raw.epochs.unwrap_or(defaults.epochs),
            // Trees shrink each step by the learning rate: 0.05, not Adam's 1e-3.
            learning_rate: raw.learning_rate.unwrap_or(if gbdt { 0.05 } else { defaults.learning_rate }),
            weight_decay: raw.weight_decay.unwrap_or(defaults.weight_decay),
            warmup_steps: raw.warmup_steps.unwrap_or(defaults.warmup_steps),
            clip_norm: raw.clip_norm.unwrap_or(defaults.clip_norm),
            patience: raw.patience.unwrap_or(if gbdt { 20 } else { defaults.patience }),
            validation_days: raw.validation_days.unwrap_or(defaults.validation_days),
            // A gbdt fits the squared error (or the logistic loss of `sign`) only.
            listnet_weight: raw.listnet_weight.unwrap_or(if gbdt { 0.0 } else { defaults.listnet_weight }),
            mse_weight: raw.mse_weight.unwrap_or(defaults.mse_weight),
            horizon_weights: raw.horizon_weights.clone(),
            target: raw.target.unwrap_or_default(),
        };
        let check =
            |ok: bool, name: &str, reason: &str| if ok { Ok(()) } else { Err(SpecError::new(field(name), reason)) };
        check((1..=10_000).contains(&train.epochs), "epochs", "must be between 1 and 10000")?;
        check(train.learning_rate > 0.0 && train.learning_rate <= 1.0, "learning_rate", "must be in (0, 1]")?;
        check(train.weight_decay >= 0.0 && train.weight_decay < 1.0, "weight_decay", "must be in [0, 1)")?;
        check(train.clip_norm > 0.0, "clip_norm", "must be > 0")?;
        check(train.listnet_weight >= 0.0 && train.mse_weight >= 0.0, "listnet_weight", "loss weights must be >= 0")?;
        check(train.listnet_weight + train.mse_weight > 0.0, "mse_weight", "the loss weights must not both be 0")?;
        if let Some(weights) = &train.horizon_weights {
            check(weights.len() == horizons, "horizon_weights", &format!("needs one weight per horizon ({horizons})"))?;
            check(
                weights.iter().all(|w| *w >= 0.0) && weights.iter().sum::<f64>() > 0.0,
                "horizon_weights",
                "weights must be >= 0, not all 0",
            )?;
        }
        match model.kind {
            ModelKind::Linear => {
                for (name, given) in [
                    ("hidden", raw.hidden.is_some()),
                    ("activation", raw.activation.is_some()),
                    ("dropout", raw.dropout.is_some()),
                    ("feature", raw.feature.is_some()),
                ] {
                    check(!given, name, "not a parameter of linear models")?;
                }
                check_absent(&raw, &GBDT_ONLY, "linear", &check)?;
                Ok(Self::Linear { train })
            }
            ModelKind::Gbdt => {
                check_absent(&raw, &PATCHTST_ONLY, "gbdt", &check)?;
                check_absent(&raw, &["hidden", "activation", "dropout", "feature"], "gbdt", &check)?;
                for (name, given) in [
                    ("epochs", raw.epochs.is_some()),
                    ("weight_decay", raw.weight_decay.is_some()),
                    ("warmup_steps", raw.warmup_steps.is_some()),
                    ("clip_norm", raw.clip_norm.is_some()),
                    ("listnet_weight", raw.listnet_weight.is_some()),
                    ("mse_weight", raw.mse_weight.is_some()),
                    ("horizon_weights", raw.horizon_weights.is_some()),
                ] {
                    check(!given, name, "not a parameter of gbdt models (they fit the primary horizon's target)")?;
                }
                let trees = raw.trees.unwrap_or(200);
                check((1..=5_000).contains(&trees), "trees", "must be between 1 and 5000")?;
                let max_depth = raw.max_depth.unwrap_or(4);
                check((1..=12).contains(&max_depth), "max_depth", "must be between 1 and 12")?;
                let min_leaf_weight = raw.min_leaf_weight.unwrap_or(100.0);
                check(min_leaf_weight.is_finite() && min_leaf_weight >= 0.0, "min_leaf_weight", "must be >= 0")?;
                let l2 = raw.l2.unwrap_or(1.0);
                check(l2.is_finite() && l2 >= 0.0, "l2", "must be >= 0")?;
                Ok(Self::Gbdt { trees, max_depth, min_leaf_weight, l2, train })
            }
            // Handled before the training parameters.
            ModelKind::Factor => Self::factor(index, &model.params, raw),
            ModelKind::External => Self::external(index, model),
            ModelKind::Mlp => {
                check_absent(&raw, &PATCHTST_ONLY, "mlp", &check)?;
                check_absent(&raw, &GBDT_ONLY, "mlp", &check)?;
                check_absent(&raw, &["feature"], "mlp", &check)?;
                let hidden = raw.hidden.unwrap_or_else(|| vec![128, 64]);
                check(
                    !hidden.is_empty() && hidden.iter().all(|h| (1..=65_536).contains(h)),
                    "hidden",
                    "layer sizes must be between 1 and 65536",
                )?;
                let dropout = raw.dropout.unwrap_or(0.1);
                check((0.0..0.95).contains(&dropout), "dropout", "must be in [0, 0.95)")?;
                Ok(Self::Mlp { hidden, activation: raw.activation.unwrap_or(Activation::Relu), dropout, train })
            }
            ModelKind::Patchtst => {
                check_absent(&raw, &["hidden", "activation", "dropout", "feature"], "patchtst", &check)?;
                check_absent(&raw, &GBDT_ONLY, "patchtst", &check)?;
                let lookback = raw.lookback.unwrap_or(20);
                let patch = raw.patch.unwrap_or(5);
                let d_model = raw.d_model.unwrap_or(32);
                let heads = raw.heads.unwrap_or(4);
                check((1..=252).contains(&lookback), "lookback", "must be between 1 and 252 trading days")?;
                check(patch >= 1 && lookback.is_multiple_of(patch), "patch", "must divide lookback")?;
                check((1..=1024).contains(&d_model), "d_model", "must be between 1 and 1024")?;
                check(heads >= 1 && d_model.is_multiple_of(heads), "heads", "must divide d_model")?;
                let layers = raw.layers.unwrap_or(2);
                check((1..=16).contains(&layers), "layers", "must be between 1 and 16")?;
                let feed_forward = raw.feed_forward.unwrap_or(2 * d_model);
                check((1..=8192).contains(&feed_forward), "feed_forward", "must be between 1 and 8192")?;
                Ok(Self::Patchtst { lookback, patch, d_model, layers, heads, feed_forward, train })
            }
        }
    }

    /// An external model, not yet pinned (`resolve` pins it).
    fn external(index: usize, model: &ModelConfig) -> Result<Self, SpecError> {
        let params = external::from_params(index, &model.params)?;
        Ok(Self::External {
            trainer: params.trainer,
            options: params.options,
            validation_days: params.validation_days,
            pin: None,
        })
    }

    /// A factor model: `feature`, optionally signed (`"-vol_60"`), and nothing else.
    fn factor(
        index: usize,
        params: &std::collections::BTreeMap<String, serde_json::Value>,
        raw: RawParams,
    ) -> Result<Self, SpecError> {
        let field = |name: &str| format!("models[{index}].params.{name}");
        if let Some(other) = params.keys().find(|name| *name != "feature") {
            return Err(SpecError::new(field(other), "not a parameter of factor models (they take only feature)"));
        }
        let written = raw.feature.ok_or_else(|| {
            SpecError::new(field("feature"), "factor models need the feature they rank by, e.g. \"-ret_5\"")
        })?;
        let (sign, name) = match written.trim().strip_prefix('-') {
            Some(name) => (-1, name.trim()),
            None => (1, written.trim().strip_prefix('+').unwrap_or(written.trim()).trim()),
        };
        if name.is_empty() {
            return Err(SpecError::new(field("feature"), "must name a feature, e.g. \"mom_60_5\" or \"-vol_60\""));
        }
        Ok(Self::Factor { feature: name.to_string(), sign })
    }

    /// The training settings; `None` for a model that is not trained (`factor`). Of a
    /// `gbdt`'s, only some apply (see [`ModelSpec::Gbdt`]).
    pub fn train_params(&self) -> Option<&TrainParams> {
        match self {
            Self::Linear { train }
            | Self::Mlp { train, .. }
            | Self::Patchtst { train, .. }
            | Self::Gbdt { train, .. } => Some(train),
            Self::Factor { .. } | Self::External { .. } => None,
        }
    }

    /// The kind, as specs write it (`mlp`, `linear`, …): a label of bounded cardinality.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Linear { .. } => "linear",
            Self::Mlp { .. } => "mlp",
            Self::Patchtst { .. } => "patchtst",
            Self::Factor { .. } => "factor",
            Self::Gbdt { .. } => "gbdt",
            Self::External { .. } => "external",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: ModelKind, params: serde_json::Value) -> ModelConfig {
        let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
        ModelConfig { name: "m".into(), kind, params, seeds: vec![0] }
    }

    #[test]
    fn defaults_and_given_parameters() {
        let spec =
            ModelSpec::from_config(0, &config(ModelKind::Mlp, serde_json::json!({"hidden": [32], "epochs": 5})), 2)
                .expect("valid");
        let ModelSpec::Mlp { hidden, dropout, train, .. } = spec else { panic!("an mlp") };
        assert_eq!((hidden, dropout, train.epochs, train.learning_rate), (vec![32], 0.1, 5, 1e-3));
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            (ModelKind::Mlp, serde_json::json!({"hiden": [32]}), "models[1].params: unknown field `hiden`"),
            (ModelKind::Mlp, serde_json::json!({"dropout": 1.5}), "models[1].params.dropout: must be in [0, 0.95)"),
            (
                ModelKind::Linear,
                serde_json::json!({"hidden": [8]}),
                "models[1].params.hidden: not a parameter of linear models",
            ),
            (
                ModelKind::Linear,
                serde_json::json!({"learning_rate": 0.0}),
                "models[1].params.learning_rate: must be in (0, 1]",
            ),
            (
                ModelKind::Linear,
                serde_json::json!({"horizon_weights": [1.0]}),
                "models[1].params.horizon_weights: needs one weight per horizon (2)",
            ),
            (
                ModelKind::Patchtst,
                serde_json::json!({"lookback": 20, "patch": 6}),
                "models[1].params.patch: must divide lookback",
            ),
            (
                ModelKind::Patchtst,
                serde_json::json!({"d_model": 30, "heads": 4}),
                "models[1].params.heads: must divide d_model",
            ),
            (ModelKind::Mlp, serde_json::json!({"patch": 5}), "models[1].params.patch: not a parameter of mlp models"),
        ];
        for (kind, params, expected) in cases {
            let error = ModelSpec::from_config(1, &config(kind, params), 2).expect_err("invalid").to_string();
            assert!(error.starts_with(expected), "{error:?} does not start with {expected:?}");
        }
    }
}
