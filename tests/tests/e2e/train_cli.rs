//! `wf train` on the shipped quickstart spec: one job trained, scored and saved.

use std::path::Path;

use wf_tests::wf;

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn one_quickstart_job_trains_scores_and_saves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("job.safetensors");
    let model_arg = model.to_str().expect("utf-8 path");
    let run = wf(
        repository(),
        &["train", "configs/quickstart.toml", "--job", "40", "--device", "cpu", "--json", "--save", model_arg],
    );
    assert!(run.succeeded(), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    assert!(report["stats"]["epochs"].as_u64().expect("epochs") >= 1);
    assert_eq!(report["stats"]["device"], "cpu");
    // Where the time went: one step per training day and epoch, and the parts of the
    // training fit in its total.
    let (stats, time) = (&report["stats"], &report["stats"]["time"]);
    let number = |value: &serde_json::Value| value.as_f64().expect("a number");
    assert_eq!(
        time["step_count"].as_u64(),
        Some(number(&stats["epochs"]) as u64 * number(&stats["training_days"]) as u64)
    );
    let parts = number(&time["inputs"]) + number(&time["steps"]) + number(&time["validation"]);
    assert!(
        number(&time["steps"]) > 0.0 && parts <= number(&stats["seconds"]) + 1e-6,
        "{time} of {}",
        stats["seconds"]
    );
    assert!(number(&report["time"]["scoring_and_diagnostics"]) > 0.0, "{}", report["time"]);
    let scored = report["days_scored"].as_u64().expect("days");
    assert!(scored > 100, "{scored} days scored");
    assert!(report["delta_p_at_k"]["mean"].as_f64().expect("mean").is_finite());
    assert!(report["train_last"].as_str() < report["retrain_date"].as_str());
    assert!(std::fs::metadata(&model).expect("model file").len() > 100);
}

#[test]
fn a_missing_device_or_job_is_one_clear_line() {
    let run = wf(repository(), &["train", "configs/quickstart.toml", "--device", "cuda:0"]);
    assert_eq!(run.code, Some(2));
    // Without the cuda feature, or with it on a machine without a GPU: one line either way.
    let line = run.stderr.trim();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line == "error: cuda:0 requested, but this build has no CUDA support (rebuild with --features cuda)"
            || line.starts_with("error: cuda:0 is not available"),
        "{line}"
    );
    let run = wf(repository(), &["train", "configs/quickstart.toml", "--job", "100000"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.trim().starts_with("error: --job: the plan has 1940 jobs"), "{}", run.stderr);
}
