//! Tries training settings on one synthetic job and prints out-of-sample ΔP@K:
//! `cargo run -p wf-worker --example tune -- '{"epochs": 15}' ...`
use candle_core::Device;
use wf_shared::cadence::Cadence;
use wf_shared::plan::plan_panel;
use wf_shared::spec::{ModelConfig, ModelKind, SweepConfig, TopK};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, PanelSpec, build_panel};

fn main() {
    let synth = generate(&SynthSpec::default()).expect("spec");
    let bars = Bars::new(synth.bars).expect("bars");
    let panel = build_panel(&bars, &PanelSpec { horizons: vec![1, 5] });
    let first_break = panel.calendar().index_of(synth.truth.breaks[0]).expect("break");
    for (arg_index, arg) in std::env::args().skip(1).enumerate() {
        let (kind, params) = match arg.strip_prefix("mlp ") {
            Some(rest) => (ModelKind::Mlp, rest),
            None => (ModelKind::Linear, arg.as_str()),
        };
        let params: serde_json::Value = serde_json::from_str(params).expect("json");
        let config = SweepConfig {
            selection: Default::default(),
            basis: Default::default(),
            name: "t".into(),
            panel: "synth".into(),
            content_hash: None,
            features: None,
            start: chrono::NaiveDate::from_ymd_opt(2022, 1, 3).expect("d"),
            end: chrono::NaiveDate::from_ymd_opt(2024, 6, 28).expect("d"),
            train_windows: vec![252],
            cadences: vec![Cadence::Quarterly],
            horizons: vec![1, 5],
            primary_horizon: 5,
            embargo: 0,
            max_age: 126,
            k: TopK::Count(20),
            bootstrap_samples: 100,
            bootstrap_seed: 7,
            models: vec![ModelConfig {
                name: "m".into(),
                kind,
                params: params.as_object().cloned().unwrap_or_default().into_iter().collect(),
                seeds: vec![3],
            }],
            triggers: Default::default(),
            max_jobs: 1000,
            backtest: None,
            trainers: Default::default(),
        };
        let plan = plan_panel(&config, &panel, &wf_shared::dataset::PanelDigests::of(&panel)).expect("plan");
        for job in plan.jobs.iter().filter(|j| j.score_days.end + 5 <= first_break) {
            let out = wf_worker::job::run_job(&panel, &config, job, &Device::Cpu).expect("job");
            let d: Vec<f64> = out.ages.iter().filter_map(|a| a.map(|a| a.delta())).collect();
            let hist: Vec<String> = out.stats.history.iter().map(|(t, v)| format!("{t:.3}/{v:.3}")).collect();
            println!(
                "{arg_index} {kind:?} retrain {} ΔP@K {:.4} epochs {} best {} hist {}",
                job.retrain_day,
                d.iter().sum::<f64>() / d.len() as f64,
                out.stats.epochs,
                out.stats.best_epoch,
                hist.join(" ")
            );
        }
    }
}
