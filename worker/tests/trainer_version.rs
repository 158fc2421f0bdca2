//! The trainer version pin: a fixed tiny job of each model kind (`linear`, `mlp`,
//! `patchtst`; `gbdt`, a factor, the `rank` and `sign` targets; an external trainer's
//! files and metrics) is trained and scored, and a digest of its numbers must be the one
//! pinned for the current `TRAINER_VERSION`. A change to training or scoring that changes the numbers fails
//! here until the version is bumped (so results of the old code are never reused as the
//! new code's) and the new digest pinned.
//!
//! The digest covers, per model: the epochs run, every scored day's P@K (exact) and
//! RankIC, and the scores of two days, the floats rounded to 5 significant digits (so a
//! change in the last bits of one float does not fail the pin, a change in training does).

use candle_core::Device;
use wf_shared::cadence::Cadence;
use wf_shared::model::TRAINER_VERSION;
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, PanelSpec, build_panel};
use wf_worker::job::run_job;
use wf_worker::train::score_day;

#[global_allocator]
static ALLOCATOR: wf_worker::allocator::MiMalloc = wf_worker::allocator::MiMalloc;

/// (trainer version, digest of the fixed jobs' numbers), one row per version.
/// Version 3 also covers the first and last scored days' top ten ranks; version 5 the
/// other horizons' metrics, the exposures and the permutation importance; version 9 the
/// primary horizon's P@K on the median basis.
const PINNED: &[(u32, &str)] = &[
    (1, "bc51b2efaa89a444"),
    (2, "bc51b2efaa89a444"),
    (3, "9f966aa9201a0ef9"),
    (4, "9f966aa9201a0ef9"),
    (5, "4b3dfbb805c147aa"),
    (6, "22bcfcaf004a79bf"),
    (7, "beb79373094062cb"),
    // Rankings as positions in the day's rows: the fixed jobs' panel has every stock on
    // every day, where positions and universe indices coincide.
    (8, "beb79373094062cb"),
    // P@K on the median basis kept beside the zero basis; without its line the digest
    // is version 8's (the other numbers are unchanged).
    (9, "22ab9156ef088d10"),
];

fn model(name: &str, kind: ModelKind, params: serde_json::Value) -> ModelConfig {
    let params = params.as_object().cloned().unwrap_or_default().into_iter().collect();
    ModelConfig { name: name.into(), kind, params, seeds: vec![11] }
}

fn rounded(value: f64) -> String {
    if value.is_finite() { format!("{value:.4e}") } else { "nan".into() }
}

/// The first fixed jobs: `linear`, `mlp` and `patchtst` (pinned since version 1).
fn first_models() -> Vec<ModelConfig> {
    vec![
        model("linear", ModelKind::Linear, serde_json::json!({"epochs": 4})),
        model("mlp", ModelKind::Mlp, serde_json::json!({"hidden": [16, 8], "epochs": 4})),
        model(
            "patchtst",
            ModelKind::Patchtst,
            serde_json::json!({"lookback": 10, "patch": 5, "d_model": 8, "layers": 1, "heads": 2, "epochs": 3}),
        ),
    ]
}

/// The other kinds and the target transforms (pinned since version 9): `gbdt`, a factor,
/// and `linear` and `mlp` towards the `rank` and `sign` targets.
fn other_models() -> Vec<ModelConfig> {
    vec![
        model("gbdt", ModelKind::Gbdt, serde_json::json!({"trees": 20, "max_depth": 3, "min_leaf_weight": 20.0})),
        model("factor", ModelKind::Factor, serde_json::json!({"feature": "-vol_60"})),
        model("linear-rank", ModelKind::Linear, serde_json::json!({"epochs": 3, "target": "rank"})),
        model("mlp-sign", ModelKind::Mlp, serde_json::json!({"hidden": [8], "epochs": 3, "target": "sign"})),
        model("gbdt-rank", ModelKind::Gbdt, serde_json::json!({"trees": 10, "max_depth": 2, "target": "rank"})),
    ]
}

/// The fixed jobs' panel and sweep, with `models`.
fn fixed_config(models: Vec<ModelConfig>) -> (wf_shared::Panel, SweepConfig) {
    let start = chrono::NaiveDate::from_ymd_opt(2021, 1, 4).expect("date");
    let synth = generate(&SynthSpec { stocks: 40, days: 400, start, seed: 3, null: false }).expect("valid spec");
    let panel = build_panel(&Bars::new(synth.bars).expect("bars"), &PanelSpec { horizons: vec![1, 5] });
    let config = SweepConfig {
        selection: Default::default(),
        basis: Default::default(),
        name: "pin".into(),
        panel: "synth:pin".into(),
        content_hash: None,
        features: None,
        start: chrono::NaiveDate::from_ymd_opt(2021, 9, 1).expect("date"),
        end: chrono::NaiveDate::from_ymd_opt(2021, 9, 30).expect("date"),
        train_windows: vec![120],
        cadences: vec![Cadence::Monthly],
        horizons: vec![1, 5],
        primary_horizon: 5,
        embargo: 0,
        max_age: 30,
        k: TopK::Count(8),
        bootstrap_samples: 100,
        bootstrap_seed: 7,
        models,
        triggers: Default::default(),
        max_jobs: 100,
        backtest: None,
        trainers: Default::default(),
    };
    (panel, config)
}

/// Trains the fixed jobs of `models` and writes down their numbers.
fn fixed_jobs_numbers(models: Vec<ModelConfig>) -> String {
    let (panel, config) = fixed_config(models);
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let mut numbers = String::new();
    for index in 0..config.models.len() {
        let job = plan.jobs.iter().find(|job| job.model == index).expect("a job of each model");
        let output = run_job(&panel, &config, job, &Device::Cpu).expect("job runs");
        numbers.push_str(&format!("{} epochs {}\n", config.models[index].name, output.stats.epochs));
        for day in &output.ages {
            let (p_at_k, rank_ic) = day.map_or((f64::NAN, None), |d| (d.p_at_k, d.rank_ic));
            numbers.push_str(&format!("{p_at_k} {}\n", rank_ic.map_or("-".into(), rounded)));
        }
        // Version 9 keeps P@K on the median basis too.
        let median: Vec<String> =
            output.ages.iter().map(|d| d.map_or("-".into(), |d| d.median_p_at_k.to_string())).collect();
        numbers.push_str(&format!("median {}\n", median.join(" ")));
        // Version 3 keeps rankings: the first and last scored days' top ranks.
        for ranking in [output.rankings.first(), output.rankings.last()].into_iter().flatten() {
            let text: Vec<String> = ranking.iter().take(10).map(u32::to_string).collect();
            numbers.push_str(&format!("ranks {}\n", text.join(" ")));
        }
        // Version 5 keeps every trained horizon's metrics and the style exposures.
        for kept in &output.horizons {
            for day in &kept.ages {
                let (p_at_k, rank_ic) = day.map_or((f64::NAN, None), |d| (d.p_at_k, d.rank_ic));
                numbers.push_str(&format!("h{} {p_at_k} {}\n", kept.horizon, rank_ic.map_or("-".into(), rounded)));
            }
        }
        numbers.push_str(&format!("exposures {:?} {:?}\n", output.exposures.factors, output.exposures.values));
        let importance: Vec<String> = output.importance.loss.iter().map(|v| rounded(f64::from(*v))).collect();
        numbers.push_str(&format!("importance {} {}\n", output.importance.days, importance.join(" ")));
        for day in [job.score_days.start, job.score_days.end - 1] {
            let scores =
                score_day(output.ranker().expect("a built-in model"), &panel, day, 1, &Device::Cpu).expect("scores");
            let text: Vec<String> = scores.iter().map(|s| rounded(*s)).collect();
            numbers.push_str(&text.join(" "));
            numbers.push('\n');
        }
    }
    numbers
}

#[test]
fn trainer_version_pins_the_scores_of_a_fixed_job() {
    check_pin(PINNED, &fixed_jobs_numbers(first_models()));
}

/// (trainer version, digest) of the other kinds and targets ([`other_models`]).
const PINNED_OTHERS: &[(u32, &str)] = &[(9, "4673ff2d8b53a53b")];

#[test]
fn trainer_version_pins_gbdt_the_factor_and_every_target() {
    check_pin(PINNED_OTHERS, &fixed_jobs_numbers(other_models()));
}

fn check_pin(table: &[(u32, &str)], numbers: &str) {
    let digest = blake3::hash(numbers.as_bytes()).to_hex()[..16].to_string();
    let pinned = table.iter().find(|(version, _)| *version == TRAINER_VERSION);
    match pinned {
        Some((_, expected)) => assert_eq!(
            *expected,
            digest,
            "the fixed jobs' numbers changed (digest {digest}, pinned {expected} for trainer version \
             {TRAINER_VERSION}): if the change to training or scoring is meant, bump TRAINER_VERSION \
             (shared/core/src/model.rs) to {} and pin ({}, \"{digest}\") here",
            TRAINER_VERSION + 1,
            TRAINER_VERSION + 1,
        ),
        None => panic!("trainer version {TRAINER_VERSION} has no pinned digest: add ({TRAINER_VERSION}, \"{digest}\")"),
    }
}

#[path = "support/python.rs"]
mod support_python;

/// (trainer version, digest) of an external job ([`external_numbers`]).
const PINNED_EXTERNAL: &[(u32, &str)] = &[(9, "8160e06356043eb0")];

/// An external job's numbers: what its trainer was handed (job.json's spans and row
/// counts, and the training file's columns) and the metrics of its scores (minus one
/// feature). `None` without a Python with polars.
fn external_numbers() -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let python = support_python::required()?.display().to_string();
    let folder = tempfile::tempdir().expect("tempdir");
    let kept = folder.path().join("kept");
    std::fs::create_dir(&kept).expect("mkdir");
    let body = format!(
        r#"#!{python}
import json, shutil, sys
import polars as pl
if sys.argv[1:] == ["--version"]:
    print("pin 1")
    sys.exit(0)
folder = sys.argv[1]
job = json.load(open(f"{{folder}}/job.json"))
train = pl.read_parquet(f"{{folder}}/train.parquet")
seen = {{k: job[k] for k in ["fit", "validation", "score", "train_rows", "score_rows", "horizons", "targets", "features"]}}
seen["train_columns"] = train.columns
json.dump(seen, open("{kept}/" + job["job"], "w"), sort_keys=True)
score = pl.read_parquet(f"{{folder}}/score.parquet")
score.select("date", "code", (-pl.col("vol_60").cast(pl.Float64).fill_null(0.0)).alias("score")).write_parquet(f"{{folder}}/scores.parquet")
"#,
        kept = kept.display()
    );
    let program = folder.path().join("pin.py");
    std::fs::write(&program, body).expect("write");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut trainers = wf_worker::external::Trainers::in_folder(folder.path().join("work"));
    trainers.register("pin", &program, &[], false).expect("registered");
    let external = model("external", ModelKind::External, serde_json::json!({"trainer": "pin", "validation_days": 10}));
    let mut numbers = String::new();
    let (panel, mut config) = fixed_config(vec![external]);
    config.trainers.insert("pin".into(), trainers.pin("pin").expect("pin"));
    let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plannable");
    let job = &plan.jobs[0];
    let context = wf_worker::job::JobContext { trainers: Some(&trainers), ..Default::default() };
    let output = wf_worker::job::run_job_in(&panel, &config, job, &Device::Cpu, &context).expect("job runs");
    numbers.push_str(&std::fs::read_to_string(kept.join(job.key.to_string())).expect("what it saw"));
    for day in &output.ages {
        let (p_at_k, rank_ic) = day.map_or((f64::NAN, None), |d| (d.p_at_k, d.rank_ic));
        numbers.push_str(&format!("{p_at_k} {}\n", rank_ic.map_or("-".into(), rounded)));
    }
    Some(numbers)
}

#[test]
fn trainer_version_pins_what_an_external_trainer_is_handed_and_its_metrics() {
    if let Some(numbers) = external_numbers() {
        check_pin(PINNED_EXTERNAL, &numbers);
    }
}
