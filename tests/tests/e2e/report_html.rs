//! The decay report end to end: `wf run` on a small synthetic sweep writes the report
//! files, `wf report DIR --out` rebuilds them offline from the artifacts alone, and
//! headless Chromium (Debian's `chromium`, installed by `.ci/run`) renders the page.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wf_tests::wf_in;

const LIMIT: Duration = Duration::from_secs(180);

const SPEC: &str = r#"name = "report-e2e"
[dataset]
panel = "synth:stocks=60,days=500,seed=5"
[evaluation]
start = 2021-08-02
end = 2022-09-30
[plan]
train_windows = [126]
cadences = ["monthly", "quarterly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 63
embargo = 0
[metrics]
k = 10
bootstrap_samples = 100
bootstrap_seed = 1
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = { epochs = 5 }
[[models]]
name = "mlp"
kind = "mlp"
seeds = [0]
params = { hidden = [16], epochs = 5 }
[triggers.performance]
metric = "delta_p_at_k"
tau = [0.0, 0.02]
lookback = [10, 21]
[triggers.age]
max_age = [21, 42]
[backtest]
k = [5, 10]
rebalance = ["weekly", 21]
buffer = [0, 5]
impact = 0.1
capital = 1e7
"#;

/// Portfolio settings of SPEC's `[backtest]` grid.
const SETTINGS: usize = 8;

fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    let binary = std::env::var("WF_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    Command::new(&binary)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {binary} (install Debian's chromium, as .ci/run does): {e}"))
}

/// Share of pixels that are not (nearly) white, and how many distinct colours there are.
fn ink(png_path: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).expect("screenshot")));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut pixels).expect("a frame");
    let channels = frame.color_type.samples();
    let bytes = &pixels[..frame.buffer_size()];
    let mut inked = 0;
    let mut colours = std::collections::BTreeSet::new();
    for pixel in bytes.chunks_exact(channels) {
        if pixel.iter().take(3).any(|c| *c < 235) {
            inked += 1;
        }
        colours.insert(pixel.iter().take(3).map(|c| c / 32).collect::<Vec<u8>>());
    }
    (inked as f64 / (bytes.len() / channels) as f64, colours.len())
}

#[test]
fn wf_run_writes_a_report_that_chromium_renders_with_every_plot_and_no_console_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("spec.toml"), SPEC).expect("spec");
    let run = wf_in(dir.path(), &["run", "spec.toml", "--out", "out", "--workers", "2"], LIMIT);
    assert!(run.succeeded(), "wf run failed: {}", run.stderr);
    let html_path = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .map(|p| Path::new(p.trim()).to_path_buf())
        .expect("wf run prints the report's path");
    assert!(html_path.ends_with("report.html") && html_path.exists(), "{}", html_path.display());
    let report_dir = html_path.parent().expect("report folder");
    let svgs = std::fs::read_dir(report_dir)
        .expect("report folder")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "svg")))
        .count();
    assert_eq!(
        svgs, 25,
        "3 decay plots, 6 per line (ΔP@K and RankIC over time, frontier; equity, cost drag, backtest \
         frontier) for 2 lines, and 5 per trained model (exposure by age and by retrain date, ΔP@K and RankIC \
         by horizon and age, importance drift)"
    );
    for file in [
        "report.json",
        "verdict.csv",
        "verdict.parquet",
        "schedules.csv",
        "decay.csv",
        "series.csv",
        "schedules.parquet",
        "series.parquet",
        "backtest.csv",
        "backtest.parquet",
        "equity.csv",
        "equity.parquet",
        "exposures.csv",
        "exposures.parquet",
        "horizons.csv",
        "horizons.parquet",
        "importance.csv",
        "importance.parquet",
    ] {
        assert!(report_dir.join(file).exists(), "{file} missing");
    }
    assert!(run.stdout.contains("Backtest: annualised net returns"), "wf run prints the backtest: {}", run.stdout);
    assert!(run.stdout.starts_with("Verdict"), "wf run prints the verdict first: {}", run.stdout);
    // The synthetic market's trained models read alike on both bases.
    assert!(!run.stdout.contains("warning: the bases disagree"), "{}", run.stdout);
    println!("{}", run.stdout.lines().take_while(|l| !l.starts_with("out-of-sample")).collect::<Vec<_>>().join("\n"));
    backtest_files_agree_with_the_report(report_dir);

    // The same report, offline, from the artifact directory alone.
    let offline = wf_in(dir.path(), &["report", "out", "--out", "again"], LIMIT);
    assert!(offline.succeeded(), "wf report DIR failed: {}", offline.stderr);
    let read = |path: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(path).expect("report.json")).expect("report JSON")
    };
    let (online, rebuilt) = (read(&report_dir.join("report.json")), read(&dir.path().join("again/report.json")));
    assert_eq!(online["lines"], rebuilt["lines"]);
    assert_eq!(online["decay"], rebuilt["decay"]);
    assert_eq!(online["backtest"], rebuilt["backtest"], "the backtest rebuilt offline is the same");
    assert_eq!(online["diagnostics"], rebuilt["diagnostics"], "the diagnostics rebuilt offline are the same");

    // Chromium renders the page: every plot in the DOM, no console message, not blank.
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("file://{}", html_path.display());
    let dom = chromium(&["--dump-dom", &url], profile.path());
    assert!(dom.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom_text.matches("<svg").count(), svgs, "plots in the rendered DOM");
    assert!(dom_text.contains("<h1>report-e2e</h1>"));
    assert!(dom_text.contains("<h2 id=\"backtest\">"), "the backtest section is rendered");
    for prefix in ["equity_126_linear_0", "cost_drag_126_mlp_0", "backtest_frontier_126_mlp_0"] {
        assert!(dom_text.contains(&format!("<figure id=\"{prefix}\">")), "{prefix} is on the page");
    }
    assert_eq!(dom_text.matches("<table class=\"backtest\"").count(), 2 * SETTINGS, "a table per line and setting");
    diagnostics_agree_with_the_report(report_dir, &dom_text);
    verdict_agrees_with_the_report_and_opens_the_page(report_dir, &dom_text);
    for prefix in ["exposure_age_126_mlp", "exposure_dates_126_linear", "horizons_delta_126_mlp", "importance_126_mlp"]
    {
        assert!(dom_text.contains(&format!("<figure id=\"{prefix}\">")), "{prefix} is on the page");
    }
    let shot = dir.path().join("shot.png");
    let screenshot = chromium(
        &["--window-size=1200,2400", "--hide-scrollbars", &format!("--screenshot={}", shot.display()), &url],
        profile.path(),
    );
    let log = String::from_utf8_lossy(&screenshot.stderr);
    assert!(screenshot.status.success() && shot.exists(), "no screenshot: {log}");
    let dom_log = String::from_utf8_lossy(&dom.stderr);
    let console: Vec<&str> = log.lines().chain(dom_log.lines()).filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let (share, colours) = ink(&shot);
    assert!(share > 0.03, "the screenshot is nearly blank: {:.1}% inked", share * 100.0);
    assert!(colours >= 8, "the screenshot has only {colours} colours: no plots drawn?");
}

/// The verdict opens the page, above the first plot, one block per trained line with
/// report.json's SPA p-value and number tried; `verdict.csv` has a row per line and selector.
fn verdict_agrees_with_the_report_and_opens_the_page(report_dir: &Path, page: &str) {
    let report: Value = serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).expect("report.json"))
        .expect("report JSON");
    let verdict_at = page.find("<h2 id=\"verdict\">").expect("a verdict section");
    let first_plot = page.find("<svg").expect("plots");
    assert!(verdict_at < first_plot, "the verdict comes before the first plot");
    assert_eq!(Some(verdict_at), page.find("<h2"), "the verdict is the first section");
    let lines = report["lines"].as_array().expect("lines");
    assert_eq!(page.matches("<div class=\"verdict\"").count(), lines.len(), "a verdict per trained line");
    let csv = std::fs::read_to_string(report_dir.join("verdict.csv")).expect("verdict.csv");
    let mut rows = 0;
    for line in lines {
        let verdict = &line["verdict"];
        let policies = verdict["policies"].as_u64().expect("policies");
        let selectors = verdict["selectors"].as_u64().expect("selectors");
        // A selector per default lookback (63 and 126 days), choosing among the adaptive
        // policies that cover the period: none without such a policy.
        assert_eq!(selectors, if policies > 0 { 2 } else { 0 }, "{verdict}");
        let spa_p = match verdict["superiority"]["spa_p"].as_f64() {
            Some(p) => p,
            None => {
                assert_eq!(policies + selectors, 0, "SPA runs whenever something was tried: {verdict}");
                rows += 1;
                continue;
            }
        };
        assert!((0.0..=1.0).contains(&spa_p));
        let block = format!(
            "data-window=\"{}\" data-model=\"{}\" data-seed=\"{}\"",
            line["window"],
            line["model"].as_str().expect("model"),
            line["seed"]
        );
        let at = page.find(&block).expect("the line's verdict block");
        let tag = &page[at..at + page[at..].find('>').expect("tag end")];
        assert!(tag.contains(&format!("data-spa-p=\"{spa_p}\"")), "{tag} vs {spa_p}");
        assert!(tag.contains(&format!("data-tried=\"{}\"", policies + selectors)), "{tag}");
        rows += selectors as usize;
    }
    assert_eq!(csv.lines().filter(|l| l.starts_with("delta,")).count(), rows, "{csv}");
    // The backtest's part: per line and setting, the best net schedule's DSR and the PBO.
    let backtest_rows: Vec<&str> = csv.lines().filter(|l| l.starts_with("backtest,")).collect();
    assert_eq!(backtest_rows.len(), lines.len() * SETTINGS, "{csv}");
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    assert!(csv.lines().all(|l| l.split(',').count() == header.len()), "every row has every column: {csv}");
    for line in report["backtest"]["lines"].as_array().expect("backtest lines") {
        let overfitting = line["overfitting"].as_array().expect("overfitting per setting");
        assert_eq!(overfitting.len(), SETTINGS);
        for setting in overfitting {
            let index = setting["setting"].as_u64().expect("setting");
            let schedules =
                line["outcomes"].as_array().expect("outcomes").iter().filter(|o| o["setting"] == index).count();
            let dsr = setting["deflated"]["dsr"].as_f64().expect("a DSR");
            assert!((0.0..=1.0).contains(&dsr), "{setting}");
            assert_eq!(setting["deflated"]["trials"].as_u64(), Some(schedules as u64));
            // PBO ranks schedules against each other: it needs two.
            match setting["pbo"]["pbo"].as_f64() {
                Some(pbo) => {
                    assert!(schedules >= 2 && (0.0..=1.0).contains(&pbo), "{setting}");
                    assert!(page.contains(&format!("PBO {pbo:.2}")), "the page shows the PBO {pbo:.2}");
                }
                None => assert!(schedules < 2, "{setting}"),
            }
        }
    }
}

/// The per-horizon tables of `horizons.csv` and of the page hold report.json's figures,
/// one row per trained horizon of each model; every exposure is a correlation, and a model
/// scoring by a factor is not among these (no warning is due).
fn diagnostics_agree_with_the_report(report_dir: &Path, page: &str) {
    let report: Value = serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).expect("report.json"))
        .expect("report JSON");
    let diagnostics = &report["diagnostics"];
    let csv = std::fs::read_to_string(report_dir.join("horizons.csv")).expect("horizons.csv");
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let models = diagnostics["horizons"].as_array().expect("horizons");
    assert_eq!(models.len(), 2, "linear and mlp");
    let mut checked = 0;
    for model in models {
        let (window, name) = (model["window"].as_u64().expect("window"), model["model"].as_str().expect("model"));
        let table_start =
            page.find(&format!("<table class=\"horizons\" data-model=\"{window}|{name}\"")).expect("table");
        let table = &page[table_start..table_start + page[table_start..].find("</table>").expect("end")];
        let horizons = model["rows"].as_array().expect("rows");
        assert_eq!(horizons.len(), 2, "{name}: horizons 1 and 5");
        for row in horizons {
            let horizon = row["horizon"].as_u64().expect("horizon");
            assert_eq!(row["primary"].as_bool(), Some(horizon == 5));
            let line = rows
                .iter()
                .find(|r| r[0] == window.to_string() && r[1] == name && r[2] == horizon.to_string())
                .unwrap_or_else(|| panic!("no horizons.csv row for {name} at {horizon}"));
            let html_start = table.find(&format!("<tr data-horizon=\"{horizon}\">")).expect("row");
            let html_row = &table[html_start..html_start + table[html_start..].find("</tr>").expect("row end")];
            for (column, key, field) in [
                (5, "p_at_k", "p_at_k"),
                (6, "base_rate", "base_rate"),
                (7, "delta", "delta"),
                (8, "rank_ic", "rank_ic"),
            ] {
                let json = row[key].as_f64().expect("a figure");
                assert_eq!(line[column].parse::<f64>().expect("number"), json, "{name} h{horizon} {key} in the CSV");
                let marker = format!("data-field=\"{field}\" data-v=\"");
                let at = html_row.find(&marker).unwrap_or_else(|| panic!("no {field} cell")) + marker.len();
                let shown: f64 = html_row[at..at + html_row[at..].find('"').expect("quote")].parse().expect("number");
                assert_eq!(shown, json, "{name} h{horizon} {key} on the page");
                checked += 1;
            }
            assert_eq!(line[4].parse::<u64>().ok(), row["cells"].as_u64());
        }
    }
    assert_eq!(checked, 16);
    // Importance: every feature of each trained model, most important first, the top ones on
    // the page with report.json's figures.
    let importance = diagnostics["importance"].as_array().expect("importance");
    assert_eq!(importance.len(), 2, "linear and mlp");
    for model in importance {
        let (window, name) = (model["window"].as_u64().expect("window"), model["model"].as_str().expect("model"));
        let features = model["features"].as_array().expect("features");
        let losses: Vec<f64> = features.iter().map(|f| f["loss"].as_f64().expect("loss")).collect();
        assert!(losses.windows(2).all(|w| w[0] >= w[1]), "{name}: sorted by the loss rise");
        let table_start =
            page.find(&format!("<table class=\"importance\" data-model=\"{window}|{name}\"")).expect("table");
        let table = &page[table_start..table_start + page[table_start..].find("</table>").expect("end")];
        let top = &features[0];
        let row = format!("<tr data-feature=\"{}\">", top["feature"].as_str().expect("name"));
        let at = table.find(&row).expect("the top feature's row") + row.len();
        let marker = "data-field=\"loss\" data-v=\"";
        let start = at + table[at..].find(marker).expect("loss cell") + marker.len();
        let shown: f64 = table[start..start + table[start..].find('"').expect("quote")].parse().expect("number");
        assert_eq!(shown, losses[0], "{name}: the top feature's loss on the page");
    }
    for model in diagnostics["exposures"].as_array().expect("exposures") {
        let factors = model["factors"].as_array().expect("factors");
        assert_eq!(factors.len(), 8, "the 8 style factors");
        for factor in factors {
            let mean = factor["mean"].as_f64().expect("mean");
            assert!((-1.0..=1.0).contains(&mean) && mean != 0.0, "{factor}");
        }
    }
}

/// `backtest.csv` has the benchmark and every fully covered schedule under every setting
/// of each line, with the figures of report.json; every schedule pays costs, which make
/// its net return lower than its gross; `equity.csv` ends where the annual net return says.
fn backtest_files_agree_with_the_report(report_dir: &Path) {
    let report: Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).expect("report.json")).expect("JSON");
    let backtest = &report["backtest"];
    assert_eq!(backtest["settings"].as_array().map(Vec::len), Some(SETTINGS));
    let lines = backtest["lines"].as_array().expect("backtest lines");
    assert_eq!(lines.len(), 2);
    let csv = std::fs::read_to_string(report_dir.join("backtest.csv")).expect("backtest.csv");
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let mut expected_rows = 0;
    for line in lines {
        let outcomes = line["outcomes"].as_array().expect("outcomes");
        expected_rows += outcomes.len() + SETTINGS;
        // Every schedule with a live model row on every day of the line's period (its
        // coverage in the report) is backtested under every setting.
        let covering = report["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter(|l| l["window"] == line["window"] && l["model"] == line["model"] && l["seed"] == line["seed"])
            .flat_map(|l| l["schedules"].as_array().expect("schedules"))
            .filter(|s| s["covered_days"] == s["period_days"])
            .count();
        assert!(covering >= 1, "a schedule covers the period: {line}");
        assert_eq!(outcomes.len(), covering * SETTINGS, "every covering schedule under every setting");
        for outcome in outcomes {
            let m = &outcome["metrics"];
            let (gross, net, costs) = (m["annual_gross"].as_f64(), m["annual_net"].as_f64(), m["costs"].as_f64());
            assert!(costs.is_some_and(|c| c > 0.0), "costs charged: {outcome}");
            assert!(net < gross, "costs lower the net return: {outcome}");
            let window = line["window"].as_u64().expect("window").to_string();
            let setting = &backtest["settings"][outcome["setting"].as_u64().expect("setting") as usize];
            let row = rows
                .iter()
                .find(|r| {
                    r[column("window")] == window
                        && r[column("model")] == line["model"].as_str().unwrap_or_default()
                        && r[column("schedule")] == outcome["schedule"].as_str().unwrap_or_default()
                        && r[column("k")].parse::<u64>().ok() == setting["k"].as_u64()
                        && r[column("buffer")].parse::<u64>().ok() == setting["buffer"].as_u64()
                        && r[column("rebalance")]
                            == match &setting["rebalance"] {
                                Value::Object(days) => format!("{}d", days["Days"]),
                                other => other.as_str().unwrap_or_default().to_lowercase(),
                            }
                })
                .unwrap_or_else(|| panic!("no backtest.csv row for {outcome}"));
            assert_eq!(row[column("annual_net")].parse::<f64>().ok(), net);
        }
        let dates = line["dates"].as_array().expect("dates").len();
        for curve in line["curves"].as_array().expect("curves") {
            assert_eq!(curve["net"].as_array().map(Vec::len), Some(dates), "a value per day");
        }
    }
    assert_eq!(rows.len(), expected_rows, "a row per benchmark and outcome");
    let equity = std::fs::read_to_string(report_dir.join("equity.csv")).expect("equity.csv");
    assert!(equity.lines().count() > 1000, "equity curves: {} lines", equity.lines().count());
}

/// Ctrl-C during `wf run`: the sweep is cancelled, the report of the finished jobs is
/// still written, the exit code is 130, nothing is logged as a warning, and running the
/// same spec again on the same `--out` reuses the finished jobs.
#[test]
fn an_interrupted_wf_run_saves_its_report_exits_130_and_its_jobs_are_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec =
        SPEC.replace(r#"cadences = ["monthly", "quarterly"]"#, r#"cadences = ["weekly", "monthly", "quarterly"]"#);
    std::fs::write(dir.path().join("spec.toml"), spec).expect("spec");
    let args = ["run", "spec.toml", "--out", "out", "--workers", "1"];
    let mut run = wf_tests::Process::start(dir.path(), &args, &[]);
    wf_tests::wait_until("a first job is done", LIMIT, || run.stderr().contains("job done"));
    run.signal("INT");
    let code = run.wait(LIMIT);
    let stderr = run.stderr();
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(stderr.contains("interrupted: the sweep was cancelled"), "{stderr}");
    assert!(!stderr.contains("WARN"), "an interrupt is not a fault:\n{stderr}");
    let html = stderr.lines().find_map(|l| l.strip_prefix("report: ")).expect("the report's path");
    assert!(Path::new(html.trim()).exists(), "{html}");

    let again = wf_in(dir.path(), &args, LIMIT);
    assert!(again.succeeded(), "{}", again.stderr);
    let reused: usize = again
        .stderr
        .split(" reused")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reuse count in:\n{}", again.stderr));
    assert!(reused >= 1, "the interrupted run's jobs are reused: {}", again.stderr);
}
