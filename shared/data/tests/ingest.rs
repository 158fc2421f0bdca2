//! `wf data ingest` against real files: a panel prepared on a prefix of the history and
//! continued with the rest equals, byte for byte, the panel prepared on the whole; bad
//! days are refused and change nothing.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use wf_data::DataError;
use wf_data::ingest::{ingest, state_path};
use wf_data::ohlcv::write_ohlcv;
use wf_data::prepare::prepare;
use wf_shared::PanelSpec;
use wf_shared::bars::BarsColumns;
use wf_shared::synth::{SynthSpec, generate};

fn market() -> BarsColumns {
    generate(&SynthSpec { stocks: 24, days: 400, seed: 9, ..SynthSpec::default() }).expect("valid spec").bars
}

fn dates(bars: &BarsColumns) -> Vec<NaiveDate> {
    let mut dates = bars.date.clone();
    dates.sort_unstable();
    dates.dedup();
    dates
}

fn ohlcv(dir: &Path, name: &str, bars: &BarsColumns) -> PathBuf {
    let path = dir.join(name);
    write_ohlcv(&path, bars).expect("write OHLCV");
    path
}

fn files(panel: &Path) -> (Vec<u8>, Vec<u8>) {
    (std::fs::read(panel).expect("panel"), std::fs::read(state_path(panel)).expect("state"))
}

#[test]
fn a_panel_prepared_on_a_prefix_and_ingested_day_by_day_is_the_whole_prepare_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bars = market();
    let days = dates(&bars);
    let spec = PanelSpec::default();
    let whole = dir.path().join("whole.parquet");
    let prepared = prepare(&ohlcv(dir.path(), "all.parquet", &bars), &whole, &spec, |_| {}).expect("prepare");

    let panel = dir.path().join("panel.parquet");
    let cut = days[330];
    prepare(&ohlcv(dir.path(), "head.parquet", &bars.rows_where(|d, _| d <= cut)), &panel, &spec, |_| {})
        .expect("prepare the head");
    // One day, then a week, then the rest.
    let mut last = cut;
    for (index, next) in [days[331], days[336], days[days.len() - 1]].into_iter().enumerate() {
        let batch = bars.rows_where(|d, _| d > last && d <= next);
        let input = ohlcv(dir.path(), &format!("batch{index}.parquet"), &batch);
        let ingested = ingest(&panel, &input, &[], None, |_| {}).expect("ingest");
        assert_eq!(ingested.days.first().copied(), days.iter().copied().find(|d| *d > last));
        assert_eq!(ingested.days.last().copied(), Some(next));
        last = next;
    }
    let (panel_bytes, state_bytes) = files(&panel);
    let (whole_bytes, whole_state) = files(&whole);
    assert!(panel_bytes == whole_bytes, "the ingested panel file differs from the whole prepare's");
    assert!(state_bytes == whole_state, "the feature state differs from the whole prepare's");
    let hash = wf_data::dataset::load_dataset(&panel.display().to_string(), &[], None).expect("load").content_hash;
    assert_eq!(hash, prepared.content_hash);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.contains(".ingest-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn duplicated_missing_or_out_of_order_days_are_refused_with_the_day_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bars = market();
    let days = dates(&bars);
    let panel = dir.path().join("panel.parquet");
    prepare(
        &ohlcv(dir.path(), "head.parquet", &bars.rows_where(|d, _| d <= days[200])),
        &panel,
        &PanelSpec::default(),
        |_| {},
    )
    .expect("prepare");
    let before = files(&panel);
    let refused = |name: &str, batch: BarsColumns, closed: &[NaiveDate]| -> String {
        let input = ohlcv(dir.path(), name, &batch);
        let error = ingest(&panel, &input, closed, None, |_| {}).expect_err("refused");
        assert!(matches!(error, DataError::Invalid { .. }), "{error}");
        assert!(files(&panel) == before, "{name}: a refused ingest changed the panel or its state");
        error.to_string()
    };

    let duplicate = refused("duplicate.parquet", bars.rows_where(|d, _| d >= days[200] && d <= days[202]), &[]);
    assert!(duplicate.contains(&format!("{} is already in the panel", days[200])), "{duplicate}");

    let mut early = bars.rows_where(|d, _| d == days[201]);
    early.date.iter_mut().for_each(|d| *d = days[100].pred_opt().expect("date"));
    let backfill = refused("backfill.parquet", early, &[]);
    assert!(backfill.contains("out-of-order"), "{backfill}");

    // Day 201 skipped: a weekday without data.
    let skipped = bars.rows_where(|d, _| d > days[201] && d <= days[203]);
    let missing = refused("missing.parquet", skipped.clone(), &[]);
    assert!(missing.contains(&format!("no data for {}", days[201])), "{missing}");
    assert!(missing.contains(&format!("--closed {}", days[201])), "{missing}");

    // A panel without its state (prepared before ingest existed).
    std::fs::rename(state_path(&panel), dir.path().join("aside")).expect("move the state");
    let input = ohlcv(dir.path(), "next.parquet", &bars.rows_where(|d, _| d > days[200] && d <= days[201]));
    let error = ingest(&panel, &input, &[], None, |_| {}).expect_err("no state").to_string();
    assert!(error.contains("no feature state") && error.contains("prepare it again"), "{error}");
    std::fs::rename(dir.path().join("aside"), state_path(&panel)).expect("restore the state");

    // Declared closed, the skipped day is accepted.
    let ingested = ingest(&panel, &ohlcv(dir.path(), "closed.parquet", &skipped), &[days[201]], None, |_| {});
    assert_eq!(ingested.expect("ingest").days, vec![days[202], days[203]]);
}

#[test]
fn a_panel_changed_after_it_was_prepared_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bars = market();
    let days = dates(&bars);
    let panel = dir.path().join("panel.parquet");
    let other = dir.path().join("other.parquet");
    let head = ohlcv(dir.path(), "head.parquet", &bars.rows_where(|d, _| d <= days[200]));
    prepare(&head, &panel, &PanelSpec::default(), |_| {}).expect("prepare");
    prepare(&head, &other, &PanelSpec { horizons: vec![1, 5] }, |_| {}).expect("prepare");
    // The other panel's file in place of this one, with this one's state.
    std::fs::copy(&other, &panel).expect("copy");
    let before = files(&panel);
    let input = ohlcv(dir.path(), "next.parquet", &bars.rows_where(|d, _| d > days[200] && d <= days[201]));
    let error = ingest(&panel, &input, &[], None, |_| {}).expect_err("refused").to_string();
    assert!(error.contains("the panel changed after it was prepared"), "{error}");
    assert!(files(&panel) == before);
}
