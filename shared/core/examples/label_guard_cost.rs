//! How long the label guard takes on a panel the size of jp_tse1000 (1.65 M rows, 29
//! features, 4 targets): `cargo run --release -p wf-shared --example label_guard_cost`.

fn main() {
    let synth = wf_shared::synth::generate(&wf_shared::synth::SynthSpec {
        stocks: 1000,
        days: 1650,
        ..wf_shared::synth::SynthSpec::default()
    })
    .expect("synth");
    let bars = wf_shared::Bars::new(synth.bars).expect("bars");
    let panel = wf_shared::build_panel(&bars, &wf_shared::PanelSpec { horizons: vec![1, 5, 10, 20] });
    let started = std::time::Instant::now();
    let checked = wf_shared::label_guard::check_panel(&panel);
    println!(
        "label guard on {} rows x {} features x {} targets: {:.3} s ({})",
        panel.rows(),
        panel.features().len(),
        panel.horizons().len(),
        started.elapsed().as_secs_f64(),
        if checked.is_ok() { "passed" } else { "refused" }
    );
}
