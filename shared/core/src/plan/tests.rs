use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;

use super::*;
use crate::dataset::DatasetHash;
use crate::spec::tests::QUICKSTART;
use crate::spec::{ModelConfig, ModelKind, TriggerGrid};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
}

fn model(name: &str, seeds: Vec<u64>) -> ModelConfig {
    ModelConfig { name: name.into(), kind: ModelKind::Linear, params: Default::default(), seeds }
}

fn config(windows: Vec<u32>, cadences: Vec<Cadence>, horizons: Vec<u32>, embargo: u32, max_age: u32) -> SweepConfig {
    SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "test".into(),
        panel: "synth:default".into(),
        content_hash: None,
        features: None,
        start: date(2020, 1, 1),
        end: date(2021, 6, 30),
        train_windows: windows,
        primary_horizon: horizons[0],
        cadences,
        horizons,
        embargo,
        max_age,
        k: TopK::Count(10),
        bootstrap_samples: 100,
        bootstrap_seed: 1,
        models: vec![model("m", vec![0])],
        triggers: TriggerGrid::default(),
        max_jobs: 100_000,
        backtest: None,
        trainers: Default::default(),
    }
}

struct Dataset {
    calendar: TradingCalendar,
    features: Vec<String>,
    universe: Vec<usize>,
    horizons: Vec<u32>,
    digests: PanelDigests,
}

impl Dataset {
    fn new(calendar: TradingCalendar) -> Self {
        Self::with(calendar, vec!["a".into(), "b".into()], 1)
    }

    /// A panel on `calendar` with `features`, whose values are told apart by `tag`.
    fn with(calendar: TradingCalendar, features: Vec<String>, tag: u8) -> Self {
        let universe = vec![100; calendar.len()];
        let horizons: Vec<u32> = (1..=30).collect();
        let digests = PanelDigests::placeholder(tag, calendar.len(), &features, &horizons);
        Self { calendar, features, universe, horizons, digests }
    }

    fn input(&self) -> PlanInput<'_> {
        PlanInput {
            calendar: &self.calendar,
            digests: &self.digests,
            feature_names: &self.features,
            daily_universe: &self.universe,
            horizons: &self.horizons,
        }
    }
}

/// A weekday calendar from 2018 with the days at `holes` missing (holidays).
fn calendar_with_holes(days: usize, holes: &BTreeSet<usize>) -> TradingCalendar {
    let all = TradingCalendar::business_days(date(2018, 1, 1), days);
    let kept = all.dates().iter().enumerate().filter(|(i, _)| !holes.contains(i)).map(|(_, d)| *d).collect();
    TradingCalendar::from_dates(kept)
}

fn cadence_strategy() -> impl Strategy<Value = Cadence> {
    prop_oneof![
        (1u32..70).prop_map(Cadence::TradingDays),
        Just(Cadence::Weekly),
        Just(Cadence::Biweekly),
        Just(Cadence::Monthly),
        Just(Cadence::Quarterly),
    ]
}

/// Retrain dates counted directly from the dates, independently of `Cadence`.
fn direct_count(cadence: Cadence, calendar: &TradingCalendar, first: usize, last: usize) -> usize {
    let dates = calendar.dates();
    let period = |d: NaiveDate| -> i64 {
        match cadence {
            Cadence::Monthly => i64::from(d.year()) * 100 + i64::from(d.month()),
            Cadence::Quarterly => i64::from(d.year()) * 100 + i64::from((d.month() - 1) / 3),
            _ => (d - date(1970, 1, 5)).num_days().div_euclid(7),
        }
    };
    match cadence {
        Cadence::TradingDays(step) => (last - first) / step as usize + 1,
        _ => {
            // Periods whose first trading day on the whole calendar lies in first..=last.
            let starts: BTreeSet<i64> = (first..=last).map(|d| period(dates[d])).collect();
            starts
                .into_iter()
                .filter(|p| dates.iter().position(|d| period(*d) == *p).is_some_and(|i| i >= first))
                .filter(|p| cadence != Cadence::Biweekly || p.rem_euclid(2) == 0)
                .count()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn training_labels_never_reach_the_retrain_date(
        days in 700usize..1100,
        holes in proptest::collection::btree_set(0usize..1100, 0..40),
        windows in proptest::collection::btree_set(1u32..200, 1..4),
        cadences in proptest::collection::btree_set(cadence_strategy(), 1..4),
        horizons in proptest::collection::btree_set(1u32..25, 1..4),
        embargo in 0u32..5,
        max_age in 1u32..300,
    ) {
        let dataset = Dataset::new(calendar_with_holes(days, &holes));
        let config = config(windows.into_iter().collect(), cadences.into_iter().collect(), horizons.into_iter().collect(), embargo, max_age);
        let plan = plan(&config, &dataset.input()).expect("plannable spec");
        let h = config.longest_horizon() as usize;
        for job in &plan.jobs {
            let last_train = job.train_days.end - 1;
            prop_assert!(last_train + h < job.retrain_day, "label of day {last_train} + {h} reaches retrain day {}", job.retrain_day);
            prop_assert_eq!(job.retrain_day - (last_train + h + 1), embargo as usize);
            prop_assert_eq!(job.train_days.len(), job.window as usize);
            prop_assert_eq!(job.score_days.start, job.retrain_day);
            prop_assert!(job.score_days.len() <= max_age as usize && !job.score_days.is_empty());
            prop_assert!(job.score_days.end - 1 + h < dataset.calendar.len(), "scores a day whose target has not matured");
            prop_assert!(!job.cadences.is_empty());
        }
        let manifest = Manifest::new(&config, DatasetHash::from_bytes([1; 32]), &dataset.calendar, &plan);
        prop_assert!(audit(&manifest, &dataset.calendar, &config).is_empty());

        let first = dataset.calendar.index_on_or_after(config.start);
        let last = (dataset.calendar.index_on_or_after(config.end.succ_opt().expect("date")) - 1).min(plan.last_matured_day);
        let mut union = BTreeSet::new();
        for (cadence, retrain_days) in &plan.retrain_days {
            prop_assert_eq!(retrain_days.len(), direct_count(*cadence, &dataset.calendar, first, last), "{}", cadence);
            union.extend(retrain_days.iter().copied());
        }
        // Dedup: one job per (window, retrain day), shared by every cadence that needs it.
        prop_assert_eq!(plan.jobs.len(), union.len() * config.train_windows.len());
        let keys: BTreeSet<JobKey> = plan.jobs.iter().map(|j| j.key).collect();
        prop_assert_eq!(keys.len(), plan.jobs.len(), "distinct trainings have distinct keys");
    }
}

#[test]
fn a_deeper_ranking_is_part_of_the_identity_and_the_default_depth_is_not() {
    use crate::backtest::{BacktestGrid, DEFAULT_DEPTH, Depth, PortfolioSetting, Rebalance};
    let dataset = Dataset::new(calendar_with_holes(600, &BTreeSet::new()));
    let plain = config(vec![126], vec![Cadence::TradingDays(63)], vec![5], 0, 63);
    let grid = |depth| BacktestGrid { depth, ..BacktestGrid::single(&PortfolioSetting::new(50, Rebalance::Weekly)) };
    let keys_and_text = |config: &SweepConfig| {
        let plan = plan(config, &dataset.input()).expect("plannable");
        (plan.jobs.iter().map(|j| j.key).collect::<Vec<_>>(), plan.jobs[0].identity.clone())
    };
    let (plain_keys, plain_text) = keys_and_text(&plain);
    assert!(!plain_text.contains("ranks"), "{plain_text}");
    let default_depth = SweepConfig { backtest: Some(grid(Depth::Top(DEFAULT_DEPTH))), ..plain.clone() };
    assert_eq!(keys_and_text(&default_depth).0, plain_keys, "a backtest at the default depth shares every job");
    for depth in [Depth::Top(200), Depth::All] {
        let deeper = SweepConfig { backtest: Some(grid(depth)), ..plain.clone() };
        let (keys, text) = keys_and_text(&deeper);
        assert!(text.contains("\"ranks\""), "{text}");
        assert!(keys.iter().all(|k| !plain_keys.contains(k)), "{depth:?}: a deeper ranking is another job");
    }
}

#[test]
fn coarser_cadences_share_the_jobs_of_finer_ones() {
    let dataset = Dataset::new(calendar_with_holes(900, &BTreeSet::new()));
    let both = config(vec![126], vec![Cadence::TradingDays(21), Cadence::TradingDays(63)], vec![5], 0, 63);
    let plan_both = plan(&both, &dataset.input()).expect("plannable");
    let fine =
        plan(&config(vec![126], vec![Cadence::TradingDays(21)], vec![5], 0, 63), &dataset.input()).expect("plannable");
    assert_eq!(plan_both.jobs.len(), fine.jobs.len(), "63d adds no training to 21d");
    assert!(plan_both.jobs_before_dedup > fine.jobs.len() as u64);
    assert!(plan_both.saving() > 0.2);
    let shared = plan_both.jobs.iter().filter(|j| j.cadences.len() == 2).count();
    assert_eq!(shared as u64, plan_both.jobs_before_dedup - plan_both.jobs.len() as u64);
    // A later sweep on the same data reuses the same keys.
    let coarse =
        plan(&config(vec![126], vec![Cadence::TradingDays(63)], vec![5], 0, 63), &dataset.input()).expect("plannable");
    let fine_keys: BTreeSet<JobKey> = fine.jobs.iter().map(|j| j.key).collect();
    assert!(coarse.jobs.iter().all(|j| fine_keys.contains(&j.key)));
}

#[test]
fn dedup_never_merges_different_data_models_or_seeds() {
    let dataset = Dataset::new(calendar_with_holes(900, &BTreeSet::new()));
    let base = config(vec![126], vec![Cadence::Monthly], vec![5], 0, 63);
    let keys = |config: &SweepConfig, tag: u8| -> BTreeSet<JobKey> {
        let other = Dataset::with(dataset.calendar.clone(), dataset.features.clone(), tag);
        plan(config, &other.input()).expect("plannable").jobs.iter().map(|j| j.key).collect()
    };
    let reference = keys(&base, 1);
    let mut variants = vec![("other dataset", keys(&base, 2))];
    let mut seeded = base.clone();
    seeded.models = vec![model("m", vec![1])];
    variants.push(("other seed", keys(&seeded, 1)));
    let mut mlp = base.clone();
    mlp.models[0].kind = ModelKind::Mlp;
    variants.push(("other model kind", keys(&mlp, 1)));
    let mut params = base.clone();
    params.models[0].params.insert("learning_rate".into(), serde_json::json!(0.01));
    variants.push(("other params", keys(&params, 1)));
    let mut k = base.clone();
    k.k = TopK::Count(20);
    variants.push(("other K", keys(&k, 1)));
    let mut fraction = base.clone();
    fraction.k = TopK::Fraction(0.1);
    variants.push(("K as a fraction", keys(&fraction, 1)));
    let mut primary = base.clone();
    primary.horizons = vec![1, 5];
    let mut primary_other = primary.clone();
    primary.primary_horizon = 5;
    primary_other.primary_horizon = 1;
    let (primary_keys, primary_other_keys) = (keys(&primary, 1), keys(&primary_other, 1));
    assert!(primary_keys.is_disjoint(&primary_other_keys), "the primary horizon is part of the key");
    let mut weights = primary.clone();
    weights.models[0].params.insert("horizon_weights".into(), serde_json::json!([0.2, 1.0]));
    assert!(keys(&weights, 1).is_disjoint(&primary_keys), "loss weights are part of the key");
    // The default weights written out are the same training as the default.
    let mut explicit = primary.clone();
    explicit.models[0].params.insert("horizon_weights".into(), serde_json::json!([0.5, 1.0]));
    assert_eq!(keys(&explicit, 1), primary_keys, "a default written out is the same job");
    let mut embargo = base.clone();
    embargo.embargo = 1;
    variants.push(("other training dates", keys(&embargo, 1)));
    let mut horizons = base.clone();
    horizons.horizons = vec![5, 10];
    variants.push(("other horizons", keys(&horizons, 1)));
    let mut max_age = base.clone();
    max_age.max_age = 40;
    // Jobs cut at the last matured day score the same days either way: those are shared.
    assert!(keys(&max_age, 1).difference(&reference).count() > 10, "another scoring range is another job");
    let mut default_written = base.clone();
    default_written.models[0].params.insert("epochs".into(), serde_json::json!(30));
    assert_eq!(keys(&default_written, 1), reference, "a default written out is the same job");
    let mut renamed = base.clone();
    renamed.models[0].name = "renamed".into();
    assert_eq!(keys(&renamed, 1), reference, "a model's name is a label, not part of the training");
    for (what, variant) in variants {
        assert!(variant.is_disjoint(&reference), "{what} shares a key with the reference");
    }
}

#[test]
fn quickstart_plans_on_a_business_day_calendar() {
    let config = SweepConfig::from_toml(QUICKSTART).expect("valid spec");
    let dataset = Dataset::new(TradingCalendar::business_days(date(2021, 1, 4), 1000));
    let plan = plan(&config, &dataset.input()).expect("plannable");
    assert_eq!(plan.cells.len(), 8);
    assert!(plan.jobs.len() < plan.jobs_before_dedup as usize);
}

#[test]
fn a_window_longer_than_the_history_names_the_window() {
    let dataset = Dataset::new(TradingCalendar::business_days(date(2019, 6, 3), 600));
    let errors =
        plan(&config(vec![126, 504], vec![Cadence::Monthly], vec![20], 0, 63), &dataset.input()).expect_err("too long");
    assert_eq!(errors.fields(), vec!["plan.train_windows[1]"]);
    assert!(
        errors.to_string().contains("504 trading days plus horizon 20 and embargo 0 need 524 trading days"),
        "{errors}"
    );
}

#[test]
fn k_larger_than_the_universe_is_refused() {
    let mut dataset = Dataset::new(TradingCalendar::business_days(date(2019, 1, 1), 800));
    dataset.universe[400] = 7;
    let errors =
        plan(&config(vec![126], vec![Cadence::Monthly], vec![5], 0, 63), &dataset.input()).expect_err("k > universe");
    assert!(errors.to_string().starts_with("metrics.k: 10 exceeds the universe: 7 stocks on"), "{errors}");
}

#[test]
fn a_sweep_beyond_the_job_limit_is_refused_before_planning() {
    let dataset = Dataset::new(TradingCalendar::business_days(date(2015, 1, 1), 2000));
    let mut huge = config((1..=1000).collect(), vec![Cadence::TradingDays(1)], vec![5], 0, 63);
    huge.models = vec![model("m", (0..4000).collect())];
    let errors = plan(&huge, &dataset.input()).expect_err("over the limit");
    assert_eq!(errors.fields(), vec!["limits.max_jobs"]);
    assert!(errors.to_string().contains("more than the limit of 100000"), "{errors}");
}

#[test]
fn a_pinned_content_hash_must_match() {
    let dataset = Dataset::new(TradingCalendar::business_days(date(2019, 1, 1), 800));
    let mut pinned = config(vec![126], vec![Cadence::Monthly], vec![5], 0, 63);
    pinned.content_hash = Some(DatasetHash::from_bytes([9; 32]));
    assert_eq!(plan(&pinned, &dataset.input()).expect_err("mismatch").fields(), vec!["dataset.content_hash"]);
}

#[test]
fn the_audit_catches_a_leaking_job() {
    let dataset = Dataset::new(TradingCalendar::business_days(date(2019, 1, 1), 800));
    let config = config(vec![126], vec![Cadence::Monthly], vec![5], 0, 63);
    let plan = plan(&config, &dataset.input()).expect("plannable");
    let mut manifest = Manifest::new(&config, DatasetHash::from_bytes([1; 32]), &dataset.calendar, &plan);
    assert!(audit(&manifest, &dataset.calendar, &config).is_empty());
    // Shift one job's window forward by two days: its last labels now reach the retrain date.
    let day = |d: NaiveDate| dataset.calendar.index_of(d).expect("on calendar");
    let job = &mut manifest.jobs[3];
    job.train_first = dataset.calendar.date(day(job.train_first) + 2).expect("date");
    job.train_last = dataset.calendar.date(day(job.train_last) + 2).expect("date");
    let findings = audit(&manifest, &dataset.calendar, &config);
    assert!(findings.iter().all(|f| f.key == manifest.jobs[3].key), "{findings:?}");
    assert!(findings[0].problem.contains("is not known before"), "{:?}", findings[0]);
}

#[test]
fn a_horizon_the_panel_lacks_is_named() {
    let mut dataset = Dataset::new(TradingCalendar::business_days(date(2019, 1, 1), 800));
    dataset.horizons = vec![1, 5];
    let errors =
        plan(&config(vec![126], vec![Cadence::Monthly], vec![5, 10], 0, 63), &dataset.input()).expect_err("no target");
    assert_eq!(errors.to_string(), "plan.horizons[1]: the panel has no target for horizon 10 (it has [1, 5])");
}

#[test]
fn other_features_are_another_job() {
    let dataset = Dataset::new(calendar_with_holes(900, &BTreeSet::new()));
    let config = config(vec![126], vec![Cadence::Monthly], vec![5], 0, 63);
    let reference: BTreeSet<JobKey> =
        plan(&config, &dataset.input()).expect("plannable").jobs.iter().map(|j| j.key).collect();
    for features in
        [vec!["b".to_string(), "a".to_string()], vec!["a".to_string()], vec!["a".to_string(), "c".to_string()]]
    {
        let other = Dataset::with(dataset.calendar.clone(), features.clone(), 1);
        let keys: BTreeSet<JobKey> =
            plan(&config, &other.input()).expect("plannable").jobs.iter().map(|j| j.key).collect();
        assert!(keys.is_disjoint(&reference), "features {features:?} share a key with [a, b]");
    }
}

#[test]
fn a_job_key_is_the_hash_of_its_readable_identity() {
    let dataset = Dataset::new(calendar_with_holes(900, &BTreeSet::new()));
    let mut config = config(vec![126], vec![Cadence::Monthly], vec![1, 5], 2, 63);
    config.primary_horizon = 5;
    config.k = TopK::Fraction(0.25);
    let plan = plan(&config, &dataset.input()).expect("plannable");
    let job = &plan.jobs[0];
    assert_eq!(JobKey::of_identity(&job.identity), job.key);
    let identity = JobIdentity::parse(&job.identity).expect("readable identity");
    assert_eq!(identity.format, JOB_FORMAT);
    assert_eq!(identity.trainer, crate::model::TRAINER_VERSION);
    assert_eq!(identity.features, dataset.features);
    assert_eq!((identity.primary_horizon, identity.k, identity.embargo), (5, TopK::Fraction(0.25), 2));
    assert_eq!(identity.horizons, vec![1, 5]);
    let date = |day: usize| dataset.calendar.date(day).expect("date");
    assert_eq!(identity.train, [date(job.train_days.start), date(job.train_days.end - 1)]);
    assert_eq!(identity.score, Some([date(job.score_days.start), date(job.score_days.end - 1)]));
    // Defaults are written out: the loss weights of the primary and the other horizon.
    assert_eq!(identity.model.train_params().expect("trained").horizon_weights, Some(vec![0.5, 1.0]));
    assert_eq!(identity.model.train_params().expect("trained").epochs, 30);
    // The text is canonical: parsing and writing it again gives the same bytes.
    assert_eq!(identity.to_canonical(), job.identity);
    // Differences are named by field.
    let mut other = identity.clone();
    other.k = TopK::Count(50);
    other.primary_horizon = 1;
    let differences = identity_differences(&job.identity, &other.to_canonical(), 10);
    assert_eq!(differences, vec!["k.count: null → 50", "k.fraction: 0.25 → null", "primary_horizon: 5 → 1"]);
}

#[test]
fn the_audit_uses_the_spec_embargo_not_the_manifest() {
    let dataset = Dataset::new(TradingCalendar::business_days(date(2019, 1, 1), 800));
    let planned_without = config(vec![126], vec![Cadence::Monthly], vec![5], 0, 63);
    let plan = plan(&planned_without, &dataset.input()).expect("plannable");
    let mut manifest = Manifest::new(&planned_without, DatasetHash::from_bytes([1; 32]), &dataset.calendar, &plan);
    // A manifest that claims an embargo it was not planned with does not fool the audit.
    manifest.embargo = 3;
    manifest.longest_horizon = 1;
    let mut with_embargo = planned_without.clone();
    with_embargo.embargo = 3;
    let jobs = |findings: Vec<AuditFinding>| findings.iter().map(|f| f.key).collect::<BTreeSet<_>>().len();
    let findings = audit(&manifest, &dataset.calendar, &with_embargo);
    assert_eq!(findings.len(), plan.jobs.len(), "every job's labels are within the embargo");
    assert!(findings[0].problem.contains("plus an embargo of 3 trading days"), "{:?}", findings[0]);
    assert!(audit(&manifest, &dataset.calendar, &planned_without).is_empty());
    // A longer horizon in the spec than the manifest records is caught too.
    let mut longer = planned_without.clone();
    longer.horizons = vec![5, 10];
    assert_eq!(jobs(audit(&manifest, &dataset.calendar, &longer)), plan.jobs.len());
}

#[test]
fn jobs_at_the_edges_of_the_data_pass_the_audit() {
    // The first retrain day leaves exactly the window, horizon and embargo before it;
    // the last scored day is the last day with a matured target.
    let calendar = TradingCalendar::business_days(date(2019, 12, 2), 400);
    let dataset = Dataset::new(calendar);
    let (window, h, e) = (100u32, 5u32, 2u32);
    let mut config = config(vec![window], vec![Cadence::TradingDays(10)], vec![h], e, 500);
    let first_retrain = (window + h + e) as usize;
    config.start = dataset.calendar.date(first_retrain).expect("date");
    config.end = date(2030, 1, 1);
    let plan = plan(&config, &dataset.input()).expect("plannable");
    let first = plan.jobs.iter().min_by_key(|j| j.retrain_day).expect("a job");
    assert_eq!(first.train_days.start, 0, "the first job trains from the data's first day");
    let last_matured = dataset.calendar.len() - 1 - h as usize;
    assert!(plan.jobs.iter().any(|j| j.score_days.end - 1 == last_matured), "a job scores up to the last matured day");
    let manifest = Manifest::new(&config, DatasetHash::from_bytes([1; 32]), &dataset.calendar, &plan);
    assert!(audit(&manifest, &dataset.calendar, &config).is_empty());
    // One day earlier would not fit: the window, horizon and embargo need those days.
    let mut early = config.clone();
    early.start = dataset.calendar.date(first_retrain - 1).expect("date");
    assert_eq!(plan_fields(&early, &dataset), vec!["plan.train_windows[0]"]);
}

fn plan_fields(config: &SweepConfig, dataset: &Dataset) -> Vec<String> {
    plan(config, &dataset.input()).expect_err("does not fit").fields().into_iter().map(String::from).collect()
}

#[test]
fn a_factor_on_a_feature_the_panel_lacks_is_refused_naming_it_and_one_it_has_is_planned() {
    use crate::spec::{ModelConfig, ModelKind};
    let dataset = Dataset::new(calendar_with_holes(600, &BTreeSet::new()));
    let factor = |feature: &str| ModelConfig {
        name: "factor".into(),
        kind: ModelKind::Factor,
        params: [("feature".to_string(), serde_json::json!(feature))].into_iter().collect(),
        seeds: vec![0],
    };
    let mut with_factor = config(vec![126], vec![Cadence::TradingDays(63)], vec![5], 0, 63);
    with_factor.models.push(factor("-zzz"));
    let refused = plan(&with_factor, &dataset.input()).expect_err("no such feature");
    assert_eq!(refused.fields(), vec!["models[1].params.feature"]);
    assert!(refused.to_string().contains("\"zzz\""), "{refused}");
    with_factor.models[1] = factor("-b");
    let planned = plan(&with_factor, &dataset.input()).expect("plannable");
    let factor_job = planned.jobs.iter().find(|j| j.model == 1).expect("factor jobs");
    assert!(factor_job.identity.contains("\"feature\":\"b\"") && factor_job.identity.contains("\"sign\":-1"));
}
