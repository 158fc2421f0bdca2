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

/// A spec whose model lists `seeds` seeds.
fn with_seeds(seeds: usize) -> String {
    let list: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    assert!(QUICKSTART.contains("seeds = [0]\n"));
    QUICKSTART.replacen("seeds = [0]\n", &format!("seeds = [{}]\n", list.join(", ")), 1)
}

#[test]
fn a_million_seeds_are_refused_by_the_spec_size_before_parsing_and_long_lists_by_length() {
    let text = with_seeds(1_000_000);
    let started = std::time::Instant::now();
    let errors = SweepConfig::from_toml(&text).expect_err("a million seeds");
    let elapsed = started.elapsed();
    println!("a 1,000,000-seed spec ({} bytes) refused in {elapsed:?}", text.len());
    assert!(elapsed < std::time::Duration::from_millis(100), "{elapsed:?}");
    assert_eq!(errors.fields(), vec!["spec"], "{errors}");
    assert!(errors.to_string().contains("more than the limit of 1048576"), "{errors}");
    // Under the size limit, a list too long is refused by its length before any other
    // check, and duplicates are found in linear time.
    let text = with_seeds(100_000);
    let started = std::time::Instant::now();
    let errors = SweepConfig::from_toml(&text).expect_err("100,000 seeds");
    println!("a 100,000-seed spec ({} bytes) refused in {:?} (TOML parsing included)", text.len(), started.elapsed());
    assert_eq!(errors.fields(), vec!["models[0].seeds"], "{errors}");
    assert!(errors.to_string().contains("100000 entries, more than the limit of 1000"), "{errors}");
    assert!(SweepConfig::from_toml(&with_seeds(1_000)).is_ok());
    // A parse error quotes the offending line, cut short: a hostile line is not echoed.
    let broken = with_seeds(100_000).replacen("seeds = [0, ", "seeds = [0,, ", 1);
    let error = SweepConfig::from_toml(&broken).expect_err("broken");
    assert!(error.to_string().len() < 2_000, "a {}-byte refusal", error.to_string().len());
}

/// The quickstart spec with a `[backtest]` section.
fn with_backtest(section: &str) -> String {
    format!("{QUICKSTART}\n[backtest]\n{section}\n")
}

#[test]
fn a_backtest_grid_takes_single_values_or_lists_with_defaults() {
    use crate::backtest::{Depth, Rebalance};
    let config = SweepConfig::from_toml(&with_backtest(
        "k = [30, 40, 50]\nrebalance = [\"weekly\", \"monthly\", 5]\nbuffer = [0, 20]\nimpact = 0.1\ncapital = 1e9",
    ))
    .expect("valid backtest");
    let grid = config.backtest.expect("a grid");
    assert_eq!(grid.k, vec![30, 40, 50]);
    assert_eq!(grid.rebalance, vec![Rebalance::Weekly, Rebalance::Monthly, Rebalance::Days(5)]);
    assert_eq!(grid.buffer, vec![0, 20]);
    assert_eq!(grid.max_replace, vec![None], "default: unlimited");
    assert_eq!((grid.buy_bps.clone(), grid.sell_bps.clone()), (vec![10.0], vec![10.0]), "default: 10 bps a side");
    assert_eq!(grid.min_trade, vec![0.0]);
    assert_eq!(grid.impact, vec![0.1]);
    assert_eq!(grid.capital, vec![1e9]);
    assert_eq!(grid.depth, Depth::Top(crate::backtest::DEFAULT_DEPTH));
    assert_eq!(grid.settings().len(), 18);
    assert!(SweepConfig::from_toml(QUICKSTART).expect("valid").backtest.is_none(), "no section, no backtest");
    let minimal = SweepConfig::from_toml(&with_backtest("k = 50\nrebalance = \"monthly\"")).expect("valid");
    let minimal = minimal.backtest.expect("a grid");
    assert_eq!(
        minimal.settings(),
        vec![crate::backtest::PortfolioSetting::new(50, Rebalance::Monthly)],
        "the defaults are PortfolioSetting::new's"
    );
    assert_eq!(minimal.retrain_cost, 0.0);
    let limited =
        SweepConfig::from_toml(&with_backtest("k = 50\nrebalance = \"monthly\"\nmax_replace = [5, \"unlimited\"]"))
            .expect("valid");
    assert_eq!(limited.backtest.expect("grid").max_replace, vec![Some(5), None]);
}

#[test]
fn every_bad_backtest_field_is_named() {
    for (section, field) in [
        ("k = 0\nrebalance = \"weekly\"", "backtest.k[0]"),
        ("k = [30, 30]\nrebalance = \"weekly\"", "backtest.k[1]"),
        ("k = 30\nrebalance = \"daily\"", "backtest.rebalance[0]"),
        ("k = 30\nrebalance = 0", "backtest.rebalance[0]"),
        ("k = 30\nrebalance = []", "backtest.rebalance"),
        ("k = 30\nrebalance = \"weekly\"\nbuffer = -1", "backtest.buffer[0]"),
        ("k = 30\nrebalance = \"weekly\"\nmax_replace = 0", "backtest.max_replace[0]"),
        ("k = 30\nrebalance = \"weekly\"\nmax_replace = \"some\"", "backtest.max_replace[0]"),
        ("k = 30\nrebalance = \"weekly\"\nmin_trade = 0.9", "backtest.min_trade[0]"),
        ("k = 30\nrebalance = \"weekly\"\nbuy_bps = -1", "backtest.buy_bps[0]"),
        ("k = 30\nrebalance = \"weekly\"\nsell_bps = nan", "backtest.sell_bps[0]"),
        ("k = 30\nrebalance = \"weekly\"\nimpact = -0.1", "backtest.impact[0]"),
        ("k = 30\nrebalance = \"weekly\"\ncapital = 0", "backtest.capital[0]"),
        ("k = 30\nrebalance = \"weekly\"\nretrain_cost = -5", "backtest.retrain_cost"),
        ("k = 30\nrebalance = \"weekly\"\nretrain_cost = [1, 2]", "backtest"),
        ("k = 100\nrebalance = \"weekly\"\nbuffer = 50", "backtest.depth"),
        ("k = 100\nrebalance = \"weekly\"\nbuffer = 50\ndepth = 120", "backtest.depth"),
        ("k = 30\nrebalance = \"weekly\"\nbogus = 1", "backtest"),
    ] {
        let refused = errors(&with_backtest(section));
        assert!(refused.fields().iter().any(|f| f.starts_with(field)), "{section:?}: expected {field}, got {refused}");
    }
    // A deeper ranking may be asked for, by count or in full.
    for depth in ["150", "\"all\""] {
        let text = with_backtest(&format!("k = 100\nrebalance = \"weekly\"\nbuffer = 50\ndepth = {depth}"));
        assert!(SweepConfig::from_toml(&text).is_ok(), "depth {depth}");
    }
    // A grid expanding beyond the limit is refused by its size alone.
    let lists = (1..=11).map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    let huge = format!("k = [{lists}]\nrebalance = [{lists}]\nbuffer = [{lists}]\nbuy_bps = [{lists}]");
    let refused = errors(&with_backtest(&huge));
    assert!(refused.to_string().contains("14641 settings, more than the limit of 10000"), "{refused}");
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random text is refused (or, rarely, accepted), never a panic.
        #[test]
        fn random_text_never_panics(text in ".{0,600}") {
            let started = std::time::Instant::now();
            let _ = SweepConfig::from_toml(&text);
            prop_assert!(started.elapsed() < std::time::Duration::from_millis(100));
        }

        /// The quickstart spec with a slice replaced by random text, deleted or repeated:
        /// a clear refusal or a valid spec, never a panic.
        #[test]
        fn mutated_specs_never_panic(at in 0usize..2_000, length in 0usize..80, insert in ".{0,40}", mode in 0u8..3) {
            let mut text = QUICKSTART.to_string();
            let start = at.min(text.len());
            let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (start + length).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
            match mode {
                0 => text.replace_range(start..end, &insert),
                1 => text.replace_range(start..end, ""),
                _ => {
                    let slice = text[start..end].to_string();
                    text.insert_str(end, &slice);
                }
            }
            let started = std::time::Instant::now();
            if let Err(errors) = SweepConfig::from_toml(&text) {
                prop_assert!(!errors.to_string().is_empty());
            }
            prop_assert!(started.elapsed() < std::time::Duration::from_millis(100), "{:?}", started.elapsed());
        }
    }
}

#[test]
fn baselines_become_factor_models_named_as_written() {
    let text = format!("{QUICKSTART}\n[baselines]\nfactors = [\"mom_60_5\", \"-ret_5\", \" -vol_60\"]\n");
    let config = SweepConfig::from_toml(&text).expect("valid");
    let factors: Vec<&ModelConfig> = config.models.iter().filter(|m| m.kind == ModelKind::Factor).collect();
    let names: Vec<&str> = factors.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["mom_60_5", "-ret_5", "-vol_60"]);
    assert!(factors.iter().all(|m| m.seeds == vec![0] && m.params["feature"] == serde_json::json!(m.name)));
    assert_eq!(config.models.len(), SweepConfig::from_toml(QUICKSTART).expect("valid").models.len() + 3);
    for (factors, field) in [
        ("[\"-\"]", "baselines.factors[0]"),
        ("[\"ret_5\", \"ret_5\"]", "baselines.factors[1]"),
        ("[\"ridge\"]", "baselines.factors[0]"),
    ] {
        let refused = errors(&format!("{QUICKSTART}\n[baselines]\nfactors = {factors}\n"));
        assert!(refused.fields().contains(&field), "{factors}: {refused}");
    }
}

#[test]
fn the_basis_and_the_selectors_default_and_bad_values_are_named() {
    let config = SweepConfig::from_toml(&with("k = 20", "k = 20")).expect("valid");
    assert_eq!(config.basis, crate::metric::Basis::Median, "the median basis is the default");
    assert_eq!(config.selection, crate::spec::SelectionConfig::default());
    assert_eq!(config.selection.lookbacks, vec![63, 126]);
    let zero = SweepConfig::from_toml(&with("k = 20", "k = 20\nbasis = \"zero\"")).expect("valid");
    assert_eq!(zero.basis, crate::metric::Basis::Zero);
    let chosen = SweepConfig::from_toml(&format!(
        "{}\n[selection]\nlookback = [21, 42, 252]\namong = \"all\"\n",
        with("k = 20", "k = 20")
    ))
    .expect("valid");
    assert_eq!(chosen.selection.lookbacks, vec![21, 42, 252]);
    assert_eq!(chosen.selection.among, crate::spec::Among::All);
    let text = errors(&format!(
        "{}\n[selection]\nlookback = [0, 42, 42]\namong = \"best\"\n",
        with("k = 20", "k = 20\nbasis = \"mean\"")
    ))
    .to_string();
    for expected in [
        "metrics.basis: unknown basis \"mean\" (expected median or zero)",
        "selection.lookback[0]: must be > 0",
        "selection.lookback[2]: 42 appears twice",
        "selection.among: unknown pool \"best\" (expected adaptive or all)",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    let unknown = errors(&format!("{}\n[selection]\nlookbacks = [21]\n", with("k = 20", "k = 20"))).to_string();
    assert!(unknown.contains("lookbacks"), "{unknown}");
}
