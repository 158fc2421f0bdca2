//! The parameters of an `external` model: `trainer`, `options` and `validation_days`.

use std::collections::BTreeMap;

use crate::spec::{ModelKind, SpecError, SpecErrors, SweepConfig, TrainerPin, is_trainer_name};

/// The largest `options` table, as canonical JSON: it travels in every job's identity.
pub const MAX_OPTIONS_BYTES: usize = 16 * 1024;

/// Validation days of an external model when its spec gives none: as the built-in models.
pub const DEFAULT_VALIDATION_DAYS: u32 = 21;

/// An external model's parameters, validated (`ModelSpec::External` without its pin).
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalParams {
    pub trainer: String,
    pub options: serde_json::Value,
    pub validation_days: u32,
}

/// The `index`-th model's `params`, as an external model's.
pub(super) fn from_params(
    index: usize,
    params: &BTreeMap<String, serde_json::Value>,
) -> Result<ExternalParams, SpecError> {
    let field = |name: &str| format!("models[{index}].params.{name}");
    if let Some(other) = params.keys().find(|name| !["trainer", "options", "validation_days"].contains(&name.as_str()))
    {
        return Err(SpecError::new(
            field(other),
            "not a parameter of external models (they take trainer, options and validation_days)",
        ));
    }
    let trainer = match params.get("trainer") {
        Some(serde_json::Value::String(name)) if is_trainer_name(name) => name.clone(),
        Some(serde_json::Value::String(name)) => {
            return Err(SpecError::new(
                field("trainer"),
                format!(
                    "{name:?} is not a trainer's name: a spec names a trainer registered on the workers (1 to 64 \
                     letters, digits, _ and -), never a path or a command"
                ),
            ));
        }
        Some(_) => return Err(SpecError::new(field("trainer"), "must be a string: the name of a registered trainer")),
        None => {
            return Err(SpecError::new(
                field("trainer"),
                "external models need the name of a trainer registered on the workers, e.g. \"lightgbm\"",
            ));
        }
    };
    let options = match params.get("options") {
        None => serde_json::Value::Object(serde_json::Map::new()),
        Some(value @ serde_json::Value::Object(_)) => value.clone(),
        Some(_) => return Err(SpecError::new(field("options"), "must be a table (handed to the trainer as JSON)")),
    };
    let size = serde_json::to_vec(&options).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_OPTIONS_BYTES {
        return Err(SpecError::new(
            field("options"),
            format!("is {size} bytes as JSON, more than the {MAX_OPTIONS_BYTES} allowed"),
        ));
    }
    let validation_days = match params.get("validation_days") {
        None => DEFAULT_VALIDATION_DAYS,
        Some(value) => match value.as_u64() {
            Some(days) if days <= 1_000 => days as u32,
            _ => return Err(SpecError::new(field("validation_days"), "must be an integer between 0 and 1000")),
        },
    };
    Ok(ExternalParams { trainer, options, validation_days })
}

/// The trainer each external model of `config` names, with the model's index.
pub fn named_trainers(config: &SweepConfig) -> Vec<(usize, &str)> {
    config
        .models
        .iter()
        .enumerate()
        .filter(|(_, model)| model.kind == ModelKind::External)
        .filter_map(|(index, model)| Some((index, model.params.get("trainer")?.as_str()?)))
        .collect()
}

/// `spec_toml` (valid, read as `config`) with the identity of every trainer its models
/// name pinned, as `registered` gives it (or the reason it cannot: an unknown name). A
/// trainer the spec pins already must be pinned as registered; the others are written
/// at the end as `[trainers.NAME]` tables. Returns the text and its config.
pub fn pin_trainers(
    spec_toml: &str,
    config: &SweepConfig,
    registered: impl Fn(&str) -> Result<TrainerPin, String>,
) -> Result<(String, SweepConfig), SpecErrors> {
    let mut errors = Vec::new();
    let mut added = std::collections::BTreeMap::new();
    for (index, model) in config.models.iter().enumerate().filter(|(_, model)| model.kind == ModelKind::External) {
        let name = match from_params(index, &model.params) {
            Ok(params) => params.trainer,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let name = name.as_str();
        match registered(name) {
            Err(reason) => errors.push(SpecError::new(format!("models[{index}].params.trainer"), reason)),
            Ok(pin) => match config.trainers.get(name) {
                Some(written) if *written != pin => errors.push(SpecError::new(
                    format!("trainers.{name}"),
                    format!("the spec pins {written}, but the registered trainer is {pin}"),
                )),
                Some(_) => {}
                None => {
                    added.insert(name.to_string(), pin);
                }
            },
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    if added.is_empty() {
        return Ok((spec_toml.to_string(), config.clone()));
    }
    let mut text = spec_toml.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("\n# Pinned at submission: the registered trainers' identities (docs/TRAINERS.md).\n");
    for (name, pin) in &added {
        let version = toml::Value::String(pin.version.clone());
        text.push_str(&format!("[trainers.{name}]\nprogram = \"{}\"\nversion = {version}\n", pin.program));
    }
    let pinned = SweepConfig::from_toml(&text).map_err(|error| {
        SpecErrors::one(
            "trainers",
            format!(
                "the registered trainers could not be pinned ({error}): write the spec's pins as [trainers.NAME] tables"
            ),
        )
    })?;
    if added.iter().any(|(name, pin)| pinned.trainers.get(name) != Some(pin)) {
        return Err(SpecErrors::one("trainers", "the registered trainers could not be pinned"));
    }
    Ok((text, pinned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelSpec, TrainParams};
    use crate::spec::ModelConfig;

    fn params(value: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        value.as_object().cloned().unwrap_or_default().into_iter().collect()
    }

    #[test]
    fn an_external_model_names_a_trainer_never_a_path() {
        let spec =
            from_params(0, &params(serde_json::json!({"trainer": "lgbm", "options": {"leaves": 31}}))).expect("valid");
        let ExternalParams { trainer, options, validation_days } = spec;
        assert_eq!((trainer.as_str(), options["leaves"].as_i64(), validation_days), ("lgbm", Some(31), 21));
        assert_eq!(DEFAULT_VALIDATION_DAYS, TrainParams::default().validation_days, "as the built-in models");
        for (given, field) in [
            (serde_json::json!({"trainer": "/bin/sh"}), "models[2].params.trainer"),
            (serde_json::json!({"trainer": "python3 -c 'x'"}), "models[2].params.trainer"),
            (serde_json::json!({"trainer": "../x"}), "models[2].params.trainer"),
            (serde_json::json!({"trainer": 3}), "models[2].params.trainer"),
            (serde_json::json!({}), "models[2].params.trainer"),
            (serde_json::json!({"trainer": "a", "options": 3}), "models[2].params.options"),
            (serde_json::json!({"trainer": "a", "epochs": 3}), "models[2].params.epochs"),
            (serde_json::json!({"trainer": "a", "validation_days": -1}), "models[2].params.validation_days"),
            (
                serde_json::json!({"trainer": "a", "options": {"x": "y".repeat(MAX_OPTIONS_BYTES)}}),
                "models[2].params.options",
            ),
        ] {
            let error = from_params(2, &params(given.clone())).expect_err("refused");
            assert_eq!(error.field, field, "{given}: {error}");
        }
    }

    #[test]
    fn resolving_needs_the_pin_and_carries_it() {
        let mut config = SweepConfig::from_toml(crate::spec::tests::QUICKSTART).expect("valid");
        config.models = vec![ModelConfig {
            name: "x".into(),
            kind: ModelKind::External,
            params: params(serde_json::json!({"trainer": "lgbm"})),
            seeds: vec![0],
        }];
        let error = ModelSpec::resolve(0, &config).expect_err("unpinned");
        assert_eq!(error.field, "models[0].params.trainer");
        let pin = crate::spec::TrainerPin { program: "ab".repeat(32), version: "lgbm 1".into() };
        config.trainers.insert("lgbm".into(), pin.clone());
        let ModelSpec::External { pin: found, .. } = ModelSpec::resolve(0, &config).expect("pinned") else {
            panic!("external")
        };
        assert_eq!(found, Some(pin));
    }
}

#[cfg(test)]
mod pin_tests {
    use super::*;

    const SPEC: &str = r#"
name = "x"
[dataset]
panel = "synth:default"
[evaluation]
start = 2022-01-03
end = 2022-06-30
[plan]
train_windows = [126]
cadences = ["monthly"]
horizons = [5]
max_age = 21
[metrics]
k = 10
bootstrap_samples = 100
bootstrap_seed = 1
[[models]]
name = "mine"
kind = "external"
params = { trainer = "lgbm", options = { leaves = 31 } }
"#;

    fn registered(name: &str) -> Result<TrainerPin, String> {
        match name {
            "lgbm" => Ok(TrainerPin { program: "0f".repeat(32), version: "lgbm \"trainer\" 1.0".into() }),
            other => Err(format!("no trainer {other:?} is registered")),
        }
    }

    #[test]
    fn pins_are_written_into_the_spec_and_read_back() {
        let config = SweepConfig::from_toml(SPEC).expect("valid");
        let (text, pinned) = pin_trainers(SPEC, &config, registered).expect("pinned");
        assert_eq!(pinned.trainers.get("lgbm"), registered("lgbm").ok().as_ref());
        assert_eq!(SweepConfig::from_toml(&text).expect("reads"), pinned);
        // Pinned already: unchanged.
        let (again, _) = pin_trainers(&text, &pinned, registered).expect("pinned");
        assert_eq!(again, text);
        // A pin other than the registration's is refused, naming it.
        let stale = text.replace(&"0f".repeat(32), &"1e".repeat(32));
        let config = SweepConfig::from_toml(&stale).expect("valid");
        let error = pin_trainers(&stale, &config, registered).expect_err("stale");
        assert_eq!(error.fields(), ["trainers.lgbm"]);
        // An unknown trainer is refused at its model.
        let unknown = SPEC.replace("trainer = \"lgbm\"", "trainer = \"other\"");
        let config = SweepConfig::from_toml(&unknown).expect("valid");
        let error = pin_trainers(&unknown, &config, registered).expect_err("unknown");
        assert_eq!(error.fields(), ["models[0].params.trainer"]);
    }
}
