//! `wf plan` as a user runs it on the shipped quickstart spec and on broken specs.

use std::path::Path;

use wf_tests::wf;

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn quickstart_plans_with_dedup_and_no_leaking_job() {
    let run = wf(repository(), &["plan", "configs/quickstart.toml"]);
    assert!(run.succeeded(), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("split audit: 0 leaking jobs"), "{}", run.stdout);
    assert!(run.stdout.contains("    126  weekly "), "{}", run.stdout);

    let run = wf(repository(), &["plan", "configs/quickstart.toml", "--json"]);
    assert!(run.succeeded(), "{}", run.stderr);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON plan");
    let before = plan["jobs_before_dedup"].as_u64().expect("count");
    let distinct = plan["distinct_trainings"].as_u64().expect("count");
    assert!(distinct < before, "dedup saves trainings: {distinct} of {before}");
    assert_eq!(plan["leaking_jobs"], 0);
    let jobs = plan["manifest"]["jobs"].as_array().expect("manifest jobs");
    assert_eq!(jobs.len() as u64, distinct);
    for job in jobs {
        let (label, retrain) =
            (job["last_label_date"].as_str().expect("date"), job["retrain_date"].as_str().expect("date"));
        assert!(label < retrain, "label {label} reaches retrain date {retrain}");
    }
}

#[test]
fn an_invalid_spec_is_refused_naming_each_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repository().join("configs/quickstart.toml")).expect("quickstart spec");
    let broken = text.replace("train_windows = [126, 252]", "train_windows = [126, -3]").replace("k = 20", "k = 0");
    std::fs::write(dir.path().join("broken.toml"), broken).expect("write");
    let run = wf(dir.path(), &["plan", "broken.toml"]);
    assert_eq!(run.code, Some(2));
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("plan.train_windows[1]: must be > 0"), "{line}");
    assert!(line.contains("metrics.k: must be > 0, got 0"), "{line}");

    let too_long = text.replace("train_windows = [126, 252]", "train_windows = [126, 900]");
    std::fs::write(dir.path().join("long.toml"), too_long).expect("write");
    let run = wf(dir.path(), &["plan", "long.toml"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("plan.train_windows[1]: 900 trading days plus horizon 5 and embargo 0 need 905"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_label_named_as_a_feature_is_refused_and_named_features_plan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(repository().join("configs/quickstart.toml")).expect("quickstart spec");
    let named = |features: &str| {
        text.replace("panel = \"synth:default\"", &format!("panel = \"synth:default\"\nfeatures = {features}"))
    };
    std::fs::write(dir.path().join("label.toml"), named(r#"["ret_5", "label5"]"#)).expect("write");
    let run = wf(dir.path(), &["plan", "label.toml"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("dataset.features[1]: column \"label5\" reads like a label"), "{}", run.stderr);

    // The quickstart's baselines rank by mom_60_5, ret_5 and vol_60: a subset must keep them.
    std::fs::write(dir.path().join("missing.toml"), named(r#"["ret_5", "vol_20"]"#)).expect("write");
    let run = wf(dir.path(), &["plan", "missing.toml"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("models[2].params.feature: \"mom_60_5\" ranks by \"mom_60_5\""), "{}", run.stderr);
    std::fs::write(dir.path().join("subset.toml"), named(r#"["ret_5", "vol_20", "mom_60_5", "vol_60"]"#))
        .expect("write");
    let run = wf(dir.path(), &["plan", "subset.toml", "--json"]);
    assert!(run.succeeded(), "{}", run.stderr);
    let all = wf(repository(), &["plan", "configs/quickstart.toml", "--json"]);
    let keys = |stdout: &str| -> Vec<String> {
        let plan: serde_json::Value = serde_json::from_str(stdout).expect("JSON plan");
        plan["manifest"]["jobs"].as_array().expect("jobs").iter().map(|j| j["key"].to_string()).collect()
    };
    let (subset, every) = (keys(&run.stdout), keys(&all.stdout));
    assert_eq!(subset.len(), every.len());
    assert!(subset.iter().all(|k| !every.contains(k)), "four features and all features share a job key");
}

/// A panel of the user's own (CSV) from the synthetic market, with `peek`: the 5-day
/// return ahead plus noise of its own, a feature computed from future prices.
fn panel_with_a_peek(dir: &Path) -> std::path::PathBuf {
    use wf_data::dataset::{DataRoots, open};
    let panel = open("synth:stocks=60,days=400,seed=3", &[5], None, &DataRoots::Any)
        .and_then(|source| source.whole())
        .expect("synthetic panel")
        .panel;
    let (ret, vol, target) =
        (panel.feature("ret_5").expect("ret_5"), panel.feature("vol_20").expect("vol_20"), panel.target(5).expect("t"));
    let number = |x: f64| if x.is_finite() { format!("{x}") } else { String::new() };
    let mut text = String::from("date,code,ret_5,vol_20,peek,fwd_ret_5\n");
    for row in 0..panel.rows() {
        let date = panel.calendar().date(panel.day()[row] as usize).expect("date");
        let code = &panel.codes()[panel.stock()[row] as usize];
        let peek = target[row] + 0.03 * (target[row] * 1e5).sin();
        text += &format!(
            "{date},{code},{},{},{},{}\n",
            number(f64::from(ret[row])),
            number(f64::from(vol[row])),
            number(peek),
            number(target[row])
        );
    }
    let path = dir.join("peek.csv");
    std::fs::write(&path, text).expect("write the panel");
    path
}

#[test]
fn a_feature_that_reads_future_prices_is_named_in_the_plan_and_the_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    panel_with_a_peek(dir.path());
    let spec = |features: &str| {
        format!(
            "name = \"peek\"\n[dataset]\npanel = \"peek.csv\"\nfeatures = {features}\n\
             [evaluation]\nstart = 2021-08-02\nend = 2021-10-29\n\
             [plan]\ntrain_windows = [63]\ncadences = [\"monthly\"]\nhorizons = [5]\nprimary_horizon = 5\n\
             embargo = 0\nmax_age = 21\n\
             [metrics]\nk = 10\nbootstrap_samples = 50\nbootstrap_seed = 1\n\
             [[models]]\nname = \"linear\"\nkind = \"linear\"\nseeds = [0]\nparams = {{ epochs = 3 }}\n"
        )
    };
    std::fs::write(dir.path().join("peek.toml"), spec(r#"["ret_5", "vol_20", "peek"]"#)).expect("spec");
    std::fs::write(dir.path().join("clean.toml"), spec(r#"["ret_5", "vol_20"]"#)).expect("spec");

    let plan = wf(dir.path(), &["plan", "peek.toml"]);
    assert!(plan.succeeded(), "a suspect is named, not refused: {}{}", plan.stdout, plan.stderr);
    let named: Vec<&str> = plan.stdout.lines().filter(|l| l.starts_with("look-ahead suspect: ")).collect();
    assert_eq!(named.len(), 1, "{}", plan.stdout);
    assert!(named[0].contains("feature \"peek\" has mean same-day RankIC +0.") && named[0].contains("fwd_ret_5"));
    let json = wf(dir.path(), &["plan", "peek.toml", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON plan");
    let suspect = &json["lookahead_suspects"][0];
    assert_eq!(suspect["feature"], "peek");
    assert!(suspect["rank_ic"].as_f64().expect("figure") >= wf_shared::label_guard::LOOKAHEAD_RANK_IC);

    let clean = wf(dir.path(), &["plan", "clean.toml"]);
    assert!(clean.succeeded(), "{}", clean.stderr);
    assert!(clean.stdout.contains("look-ahead check: no feature"), "{}", clean.stdout);
    assert!(!clean.stdout.contains("look-ahead suspect"), "{}", clean.stdout);

    // The report names it too: in the text wf run prints, and in the JSON beside the
    // HTML report it names.
    let run = wf(dir.path(), &["run", "peek.toml"]);
    assert!(run.succeeded(), "{}", run.stderr);
    assert!(run.stdout.contains("look-ahead suspect: feature \"peek\""), "{}", run.stdout);
    let html = run.stderr.lines().find_map(|l| l.strip_prefix("report: ")).expect("the report's path");
    let json = std::fs::read_to_string(Path::new(html.trim()).with_file_name("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report JSON");
    assert_eq!(report["dataset"]["lookahead_suspects"][0]["feature"], "peek", "{}", report["dataset"]);
}
