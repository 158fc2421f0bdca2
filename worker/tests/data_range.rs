//! A job's identity names the days it reads and digests their values, not the whole
//! panel: on a panel that has grown since (days appended, stocks listed), a job whose
//! days are all on both keeps its key and, trained on either, its numbers. A job whose
//! scoring the longer panel lets run further is another job (another key).

use candle_core::Device;
use wf_shared::cadence::Cadence;
use wf_shared::dataset::PanelDigests;
use wf_shared::plan::{Job, plan_panel};
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, Panel, PanelSpec, build_panel};
use wf_worker::job::{JobOutput, read_days, run_job};

fn model(name: &str, kind: ModelKind, params: serde_json::Value) -> ModelConfig {
    let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
    ModelConfig { name: name.into(), kind, params, seeds: vec![3] }
}

fn config() -> SweepConfig {
    let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date");
    SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "range".into(),
        panel: "synth:range".into(),
        content_hash: None,
        features: None,
        start: date(2021, 9, 1),
        end: date(2022, 3, 31),
        train_windows: vec![100],
        cadences: vec![Cadence::Monthly],
        horizons: vec![1, 5],
        primary_horizon: 5,
        embargo: 1,
        max_age: 20,
        k: TopK::Count(6),
        bootstrap_samples: 100,
        bootstrap_seed: 7,
        models: vec![
            model("linear", ModelKind::Linear, serde_json::json!({"epochs": 3})),
            model(
                "patchtst",
                ModelKind::Patchtst,
                serde_json::json!({"lookback": 10, "patch": 5, "d_model": 8, "layers": 1, "heads": 2, "epochs": 2}),
            ),
        ],
        triggers: Default::default(),
        max_jobs: 1000,
        backtest: None,
        trainers: Default::default(),
    }
}

/// Everything of an output that a result keeps, but the training time.
fn numbers(output: &JobOutput) -> String {
    let mut result = output.result();
    result.training.seconds = 0.0;
    format!("{result:?}")
}

fn panels() -> (Panel, Panel) {
    let start = chrono::NaiveDate::from_ymd_opt(2021, 1, 4).expect("date");
    let market = generate(&SynthSpec { stocks: 24, days: 400, start, seed: 9, null: false }).expect("market");
    let mut columns = market.bars;
    // A stock listed on the longer panel only, whose code sorts first: every other
    // stock's universe index moves by one between the two panels.
    let listed = columns.date.iter().enumerate().filter(|(_, d)| d.to_string().as_str() >= "2022-04-01");
    let rows: Vec<usize> = listed.map(|(row, _)| row).filter(|row| columns.code[*row] == columns.code[0]).collect();
    for row in rows {
        columns.date.push(columns.date[row]);
        columns.code.push("0000".into());
        for column in [&mut columns.open, &mut columns.high, &mut columns.low, &mut columns.close, &mut columns.volume]
        {
            column.push(column[row]);
        }
        if let Some(turnover) = columns.turnover.as_mut() {
            turnover.push(turnover[row]);
        }
    }
    let bars = Bars::new(columns).expect("bars");
    let spec = PanelSpec { horizons: vec![1, 5] };
    let long = build_panel(&bars, &spec);
    let cut = long.calendar().index_on_or_before("2022-03-15".parse().expect("date")).expect("day");
    let short = build_panel(&bars.truncated(cut), &spec);
    assert!(long.codes().len() == short.codes().len() + 1, "the longer panel lists one more stock");
    (short, long)
}

#[test]
fn a_job_keeps_its_key_and_its_numbers_on_a_longer_panel() {
    let (short, long) = panels();
    let config = config();
    let short_digests = PanelDigests::of(&short);
    let long_digests = PanelDigests::of(&long);
    assert_ne!(short_digests.hash(), long_digests.hash());
    let short_plan = plan_panel(&config, &short, &short_digests).expect("plannable");
    let long_plan = plan_panel(&config, &long, &long_digests).expect("plannable");
    let date = |panel: &Panel, day: usize| panel.calendar().date(day).expect("date");
    let by_date = |panel: &Panel, job: &Job| (job.model, date(panel, job.retrain_day));
    let long_jobs: std::collections::BTreeMap<_, &Job> =
        long_plan.jobs.iter().map(|j| (by_date(&long, j), j)).collect();

    let (mut shared, mut cut) = (Vec::new(), 0);
    for job in &short_plan.jobs {
        let other = long_jobs[&by_date(&short, job)];
        let scored_alike = date(&short, job.score_days.end - 1) == date(&long, other.score_days.end - 1);
        // Same days read, same values: same key; scoring cut short by the panel's end:
        // another job.
        assert_eq!(job.key == other.key, scored_alike, "{:?}", by_date(&short, job));
        if scored_alike {
            shared.push((job, other));
        } else {
            cut += 1;
        }
    }
    assert!(cut >= 2 && shared.len() >= 4, "{} shared, {cut} cut short", shared.len());

    // Trained on either panel, a shared job gives the same numbers: its rankings (day
    // positions) included, though every universe index moved.
    for model in 0..config.models.len() {
        let (job, other) = shared.iter().rev().find(|(job, _)| job.model == model).expect("a shared job per model");
        let a = run_job(&short, &config, job, &Device::Cpu).expect("job runs");
        let b = run_job(&long, &config, other, &Device::Cpu).expect("job runs");
        assert_eq!(numbers(&a), numbers(&b), "{}", config.models[model].name);
        // As universe indices, the same stocks.
        let codes = |panel: &Panel, job: &Job, output: &JobOutput| -> Vec<Vec<String>> {
            let run = wf_shared::age::ModelRun::of_job(job, output.result(), panel);
            run.rankings.iter().map(|r| r.iter().map(|s| panel.codes()[*s as usize].clone()).collect()).collect()
        };
        assert_eq!(codes(&short, job, &a), codes(&long, other, &b));
    }
}

#[test]
fn a_changed_value_in_the_days_a_job_reads_changes_its_key_and_no_other() {
    let (short, _) = panels();
    let config = config();
    let plan = plan_panel(&config, &short, &PanelDigests::of(&short)).expect("plannable");
    // One feature value on the retrain day of the linear line's second job: read by the
    // jobs that score or train on that day, or look back over it (`patchtst`, 10 days).
    let linear: Vec<&Job> = plan.jobs.iter().filter(|j| j.model == 0).collect();
    let day = linear[1].retrain_day;
    let mut parts = short.into_parts();
    let row = (0..parts.day.len()).find(|r| parts.day[*r] as usize == day).expect("a row that day");
    parts.features[0][row] += 1.0;
    let changed = Panel::new(parts).expect("panel");
    let replanned = plan_panel(&config, &changed, &PanelDigests::of(&changed)).expect("plannable");
    for (before, after) in plan.jobs.iter().zip(&replanned.jobs) {
        let lookback = if before.model == 1 { 10 } else { 1 };
        let reads = |job: &Job| job.train_days.start.saturating_sub(lookback - 1) <= day && day < job.score_days.end;
        assert_eq!(
            before.key != after.key,
            reads(before),
            "job of day {} (model {})",
            before.retrain_day,
            before.model
        );
    }
}

/// A job reads only the days its identity names: trained on a panel holding just those
/// days (`Panel::days`, what a worker loads for it), every kind of model gives the numbers
/// it gives on the whole panel, bit for bit. One day fewer at the front of a look-back
/// model's days changes them (the bound is tight).
#[test]
fn a_job_on_a_panel_of_only_the_days_it_reads_gives_the_same_numbers() {
    let (_, long) = panels();
    let mut config = config();
    config.models.push(model("mlp", ModelKind::Mlp, serde_json::json!({"epochs": 2, "hidden": [8]})));
    config.models.push(model("gbdt", ModelKind::Gbdt, serde_json::json!({"trees": 5, "max_depth": 2})));
    config.models.push(model("factor", ModelKind::Factor, serde_json::json!({"feature": "ret_20"})));
    let plan = plan_panel(&config, &long, &PanelDigests::of(&long)).expect("plannable");
    for model in 0..config.models.len() {
        let job = plan.jobs.iter().rev().find(|job| job.model == model).expect("a job per model");
        let days = read_days(&config, job).expect("read days");
        assert!(days.start > 0 && days.end < long.calendar().len(), "{days:?} is the whole panel");
        let slice = long.days(days.clone());
        assert!(slice.rows() < long.rows() / 2, "{} of {} rows", slice.rows(), long.rows());
        let whole = run_job(&long, &config, job, &Device::Cpu).expect("job runs");
        let only = run_job(&slice, &config, job, &Device::Cpu).expect("job runs on its days");
        assert_eq!(numbers(&only), numbers(&whole), "{}", config.models[model].name);
        if config.models[model].name == "patchtst" {
            let short = long.days(days.start + 1..days.end);
            let cut = run_job(&short, &config, job, &Device::Cpu).expect("job runs");
            assert_ne!(numbers(&cut), numbers(&whole), "the look-back's first day is read");
        }
    }
}
