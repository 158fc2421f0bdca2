//! The scheduler's reports: every table row in the files, the HTML showing the JSON's
//! numbers, and a damaged result requeued by the report that found it.

use super::*;

/// The value of `field` in the HTML table row that starts at `row`.
fn html_value(row: &str, field: &str) -> Option<f64> {
    let start = row.find(&format!("data-field=\"{field}\" data-v=\""))? + field.len() + 22;
    row[start..].split('"').next()?.parse().ok()
}

#[tokio::test]
async fn report_files_hold_every_table_row_and_the_html_shows_the_json_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scheduler = scheduler(dir.path(), Arc::new(ManualClock(AtomicI64::new(1_000_000))));
    let spec = format!(
        "{SPEC}\n[triggers.performance]\nmetric = \"delta_p_at_k\"\ntau = [0.0, 0.02]\nlookback = [10]\n\
         [triggers.age]\nmax_age = [15]\n"
    );
    let submitted = scheduler.submit(&spec).await.expect("submit");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    // All but one job commit: the report must say what is missing.
    let mut left = None;
    while let Some(lease) = scheduler.lease("w", Duration::ZERO).await.expect("lease") {
        if left.is_none() {
            left = Some(lease.lease.key);
            continue;
        }
        scheduler.report_result(&lease.lease.key, lease.lease.token, "w", compute(&lease)).await.expect("commit");
    }
    let report = scheduler.report(&id).await.expect("report");
    assert_eq!(report.missing, vec![left.expect("a job").to_string()]);
    assert_eq!(report.results as u64, submitted.jobs - 1);

    // One line (window 126, linear, seed 0): 2 fixed cadences and 2 x 1 + 1 policies,
    // plus their combinations (the grid's `or` of one performance and one age trigger).
    let policies = wf_shared::replay::expand_policies(&SweepConfig::from_toml(&spec).expect("spec").triggers).len();
    assert_eq!(report.lines.len(), 1);
    let line = &report.lines[0];
    assert_eq!(line.schedules.len(), 2 + policies);
    assert_eq!(report.decay.len(), 3, "ΔP@K, P@K and RankIC curves of the one (window, model)");
    let fixed_series = report.series.iter().filter(|s| !s.adaptive).count();
    assert_eq!(fixed_series, 2);
    assert!(report.series.len() <= 3);
    let audit = report.audit.as_ref().expect("audit");
    assert_eq!((audit.jobs as u64, audit.leaking_jobs), (submitted.jobs, 0));
    let dataset = report.dataset.as_ref().expect("dataset summary");
    assert_eq!(dataset.stocks, 40);
    assert!(report.base_rate.is_some_and(|b| b > 0.0 && b < 1.0));

    let formats = [
        report::files::Format::Json,
        report::files::Format::Csv,
        report::files::Format::Parquet,
        report::files::Format::Png,
        report::files::Format::Html,
    ];
    let files = report::files::render(&report, &formats).expect("render");
    let file = |name: &str| {
        let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing"));
        String::from_utf8(bytes.clone()).expect("utf-8")
    };
    let back: report::SweepReport = serde_json::from_str(&file("report.json")).expect("report.json parses");
    assert_eq!(back.lines.len(), report.lines.len());
    assert_eq!(file("schedules.csv").lines().count(), 1 + line.schedules.len());
    let points: usize = report.decay.iter().map(|c| c.points.len()).sum();
    assert_eq!(file("decay.csv").lines().count(), 1 + points);
    let days: usize = report.series.iter().map(|s| s.dates.len()).sum();
    assert_eq!(file("series.csv").lines().count(), 1 + days);

    for table in ["schedules", "decay", "series", "exposures", "horizons", "importance"] {
        let (_, bytes) = files.iter().find(|(n, _)| *n == format!("{table}.parquet")).expect("parquet table");
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "{table}.parquet is not Parquet");
    }
    let html = file("report.html");
    let svgs = files.iter().filter(|(n, _)| n.ends_with(".svg")).count();
    let pngs: Vec<&Vec<u8>> = files.iter().filter(|(n, _)| n.ends_with(".png")).map(|(_, b)| b).collect();
    assert_eq!(pngs.len(), svgs, "every plot as PNG too");
    assert!(pngs.iter().all(|png| png.starts_with(b"\x89PNG") && png.len() > 10_000), "PNG plots look empty");
    assert_eq!(html.matches("<svg").count(), svgs, "every plot is inline");
    assert_eq!(
        svgs, 9,
        "3 decay plots; ΔP@K and RankIC over calendar time and the frontier of the line; the model's exposure by age \
         and by retrain date, and its importance drift (one horizon: no horizon heatmaps)"
    );
    for fetch in ["src=", "<link", "<script", "url(", "@import"] {
        assert!(!html.contains(fetch), "the page fetches something ({fetch})");
    }
    assert!(html.contains("1 of") && html.contains("jobs have no result"), "the missing job is stated");
    assert!(html.contains("data-field=\"leaking_jobs\" data-v=\"0\""));
    let table_start = html.find("data-line=\"126|linear|0\"").expect("the line's table");
    let table = &html[table_start..html[table_start..].find("</table>").map_or(html.len(), |e| table_start + e)];
    let mut compared = 0;
    for schedule in &line.schedules {
        let marker = format!("data-schedule=\"{}\"", report::html::escape(&schedule.name));
        let Some(at) = table.find(&marker) else {
            assert!(schedule.adaptive, "fixed cadence {} is not in the table", schedule.name);
            continue;
        };
        let row = &table[at..table[at..].find("</tr>").map_or(table.len(), |e| at + e)];
        assert_eq!(html_value(row, "delta_mean"), Some(schedule.delta.mean), "{}", schedule.name);
        assert_eq!(html_value(row, "rank_ic"), Some(schedule.rank_ic.mean), "{}", schedule.name);
        assert_eq!(html_value(row, "retrains"), Some(schedule.retrains() as f64), "{}", schedule.name);
        if let Some(interval) = schedule.delta_interval {
            assert_eq!(html_value(row, "delta_low"), Some(interval.low), "{}", schedule.name);
        }
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} rows compared");
}

#[tokio::test]
async fn a_damaged_result_is_requeued_by_the_report_which_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let scheduler = scheduler(dir.path(), clock.clone());
    let submitted = scheduler.submit(SPEC).await.expect("submit");
    let id: SweepId = submitted.progress.sweep_id.parse().expect("id");
    run_all(&scheduler).await;
    let before = scheduler.report(&id).await.expect("report");
    let key =
        scheduler.planned(&scheduler.sweep_record(&id).await.expect("record")).await.expect("plan").plan.jobs[0].key;
    let path = dir.path().join(format!("results/{key}.pb"));
    let bytes = std::fs::read(&path).expect("result");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    // Within a lease period of the commit it could still be publishing: left alone.
    let early = scheduler.report(&id).await.expect("report");
    assert_eq!((early.missing.len(), early.requeued.len()), (1, 0));
    clock.0.fetch_add(2_000, Ordering::SeqCst);
    let report = scheduler.report(&id).await.expect("report");
    assert_eq!(report.missing, vec![key.to_string()]);
    // The early report set the damaged file aside already; the job completed but has no
    // result, which this report finds and queues again.
    assert_eq!(report.requeued, vec![key.to_string()]);
    assert!(report.summary_table().contains("being trained again"), "{}", report.summary_table());
    assert_eq!(run_all(&scheduler).await, 1, "exactly the damaged job ran again");
    let whole = scheduler.report(&id).await.expect("report");
    assert!(whole.missing.is_empty() && whole.requeued.is_empty());
    let timeless = |lines: &[crate::report::LineReport]| {
        let mut value = serde_json::to_value(lines).expect("JSON");
        for line in value.as_array_mut().into_iter().flatten() {
            for schedule in line["schedules"].as_array_mut().into_iter().flatten() {
                // Wall-clock training time: the one figure a retraining changes.
                schedule.as_object_mut().map(|s| s.remove("train_seconds"));
            }
        }
        value
    };
    assert_eq!(timeless(&whole.lines), timeless(&before.lines));
}
