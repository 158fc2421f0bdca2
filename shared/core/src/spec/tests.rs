use super::*;

pub(crate) const QUICKSTART: &str = r#"
name = "quickstart"

[dataset]
panel = "synth:default"

[evaluation]
start = 2022-01-03
end = "2024-06-28"

[plan]
train_windows = [126, 252]
cadences = ["weekly", "monthly", "21d", "63d"]
horizons = [1, 5]
primary_horizon = 5
max_age = 126

[metrics]
k = 20
bootstrap_samples = 500
bootstrap_seed = 7

[[models]]
name = "ridge"
kind = "linear"
seeds = [0]
params = { weight_decay = 0.001 }

[triggers.performance]
tau = [0.0, 0.02]
lookback = [10, 21]

[triggers.drift]
theta = [0.25]
share = [0.3]
days = [5]

[triggers.age]
max_age = [63]
"#;

fn with(from: &str, to: &str) -> String {
    assert!(QUICKSTART.contains(from), "test edit {from:?} does not apply");
    QUICKSTART.replacen(from, to, 1)
}

fn errors(text: &str) -> SpecErrors {
    SweepConfig::from_toml(text).expect_err("spec must be refused")
}

#[test]
fn quickstart_spec_validates() {
    let config = SweepConfig::from_toml(QUICKSTART).expect("valid spec");
    assert_eq!(config.train_windows, vec![126, 252]);
    assert_eq!(
        config.cadences,
        vec![Cadence::Weekly, Cadence::Monthly, Cadence::TradingDays(21), Cadence::TradingDays(63)]
    );
    assert_eq!(config.start, NaiveDate::from_ymd_opt(2022, 1, 3).expect("date"));
    assert_eq!(config.end, NaiveDate::from_ymd_opt(2024, 6, 28).expect("date"));
    assert_eq!((config.longest_horizon(), config.primary_horizon, config.embargo, config.max_age), (5, 5, 0, 126));
    assert_eq!(config.k, TopK::Count(20));
    assert_eq!(config.models[0].params["weight_decay"], serde_json::json!(0.001));
    assert_eq!(config.triggers.performance.as_ref().map(|p| p.lookback.clone()), Some(vec![10, 21]));
}

#[test]
fn errors_name_the_field_and_the_reason() {
    let cases = [
        (with("[126, 252]", "[126, -5]"), "plan.train_windows[1]: must be > 0"),
        (with("[126, 252]", "[126, 0]"), "plan.train_windows[1]: must be > 0"),
        (with("[126, 252]", "[126, 126]"), "plan.train_windows[1]: 126 appears twice"),
        (
            with("end = \"2024-06-28\"", "end = 2021-06-28"),
            "evaluation.end: 2021-06-28 is before evaluation.start 2022-01-03",
        ),
        (with("\"63d\"]", "\"3w\"]"), "plan.cadences[3]: unknown cadence \"3w\""),
        (with("primary_horizon = 5", "primary_horizon = 20"), "plan.primary_horizon: 20 is not one of plan.horizons"),
        (with("k = 20", "k = 1.5"), "metrics.k: a fraction must be between 0 and 1"),
        (with("k = 20", "k = \"150%\""), "metrics.k: must be a count, a fraction or a percentage"),
        (with("kind = \"linear\"", "kind = \"xgboost\""), "models[0].kind: unknown model kind \"xgboost\""),
        (with("tau = [0.0, 0.02]", "tau = [0.0, 3.0]"), "triggers.performance.tau[1]: must be in (-1, 1]"),
        (with("theta = [0.25]", "theta = [-0.1]"), "triggers.drift.theta[0]: a PSI threshold must be in (0, 10]"),
        (with("share = [0.3]", "share = [1.5]"), "triggers.drift.share[0]: a share of features must be in (0, 1]"),
        (with("max_age = [63]", "max_age = [400]"), "triggers.age.max_age[0]: must be <= 125, got 400"),
        (with("start = 2022-01-03", "start = \"yesterday\""), "evaluation.start: must be a date"),
        (
            with("panel = \"synth:default\"", "panel = \"p.csv\"\nfeatures = [\"mom\", \"fwd_ret_5\"]"),
            "dataset.features[1]: column \"fwd_ret_5\" reads like a label (name matches \"fwd_*\")",
        ),
        (
            with("panel = \"synth:default\"", "panel = \"p.csv\"\nfeatures = [\"mom\", \"mom\"]"),
            "dataset.features[1]: \"mom\" appears twice",
        ),
        (with("panel = \"synth:default\"", "panel = \"p.csv\"\nfeatures = []"), "dataset.features: must not be empty"),
    ];
    for (text, expected) in cases {
        let message = errors(&text).to_string();
        assert!(message.contains(expected), "{message:?} does not contain {expected:?}");
    }
}

#[test]
fn parse_errors_name_the_field() {
    let unknown = errors(&with("max_age = 126", "max_age = 126\ntrainwindows = [1]"));
    assert_eq!(unknown.fields(), vec!["plan.trainwindows"], "{unknown}");
    assert!(unknown.to_string().contains("unknown field `trainwindows`"));
    let wrong_type = errors(&with("[126, 252]", "\"126\""));
    assert_eq!(wrong_type.fields(), vec!["plan.train_windows"], "{wrong_type}");
    let missing = errors(&QUICKSTART.replace("horizons = [1, 5]\n", ""));
    assert_eq!(missing.fields(), vec!["plan"], "{missing}");
    assert!(missing.to_string().contains("missing field `horizons`"));
    let broken = errors("name = ");
    assert_eq!(broken.fields(), vec!["spec"]);
    assert!(!broken.to_string().contains('\n'));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = with("[126, 252]", "[0, -1]").replace("k = 20", "k = 0");
    assert_eq!(errors(&text).fields(), vec!["plan.train_windows[0]", "plan.train_windows[1]", "metrics.k"]);
}

#[test]
fn k_may_be_a_fraction_or_a_percentage() {
    let fraction = SweepConfig::from_toml(&with("k = 20", "k = 0.1")).expect("valid");
    assert_eq!(fraction.k, TopK::Fraction(0.1));
    let percent = SweepConfig::from_toml(&with("k = 20", "k = \"10%\"")).expect("valid");
    assert_eq!(percent.k.for_universe(200), 20);
}
