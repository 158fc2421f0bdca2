//! Reading some days of a prepared panel file: what a worker loads for one job. The rows
//! read equal the whole panel's rows of those days (same day and stock indices, same
//! values); a file whose values were edited after it was written (its metadata kept) is
//! refused on the days it changed, naming the date, and read on the others; a file
//! written again with other values is refused by its content hash.

use std::path::Path;

use polars::prelude::*;
use wf_data::dataset::DataRoots;
use wf_data::ohlcv::write_ohlcv;
use wf_data::panel_file::{read_panel, write_panel};
use wf_data::prepare::prepare;
use wf_shared::dataset::PanelDigests;
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Panel, PanelSpec};

fn prepared(dir: &Path) -> std::path::PathBuf {
    let bars = generate(&SynthSpec { stocks: 24, days: 400, seed: 4, ..SynthSpec::default() }).expect("spec").bars;
    let input = dir.join("ohlcv.parquet");
    write_ohlcv(&input, &bars).expect("OHLCV");
    let panel = dir.join("panel.parquet");
    prepare(&input, &panel, &PanelSpec::default(), |_| {}).expect("prepare");
    panel
}

/// Everything of a panel, NaN-safe: its keys, its calendar and codes, and its values'
/// digests (bit patterns).
type Fingerprint = (Vec<u32>, Vec<u32>, Vec<String>, Vec<chrono::NaiveDate>, PanelDigests, Vec<u64>);

fn fingerprint(panel: &Panel) -> Fingerprint {
    let adv = panel.adv().unwrap_or_default().iter().map(|v| v.to_bits()).collect();
    (
        panel.day().to_vec(),
        panel.stock().to_vec(),
        panel.codes().to_vec(),
        panel.calendar().dates().to_vec(),
        PanelDigests::of(panel),
        adv,
    )
}

#[test]
fn some_days_of_a_panel_file_read_as_the_whole_panels_rows_of_those_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = prepared(dir.path());
    let uri = path.display().to_string();
    let whole = read_panel(&path, None).expect("whole");
    let summary = wf_data::dataset::open(&uri, &[], None, &DataRoots::Any)
        .and_then(|source| source.days_summary())
        .expect("readable")
        .expect("a summary with codes");
    let days = whole.calendar().len();
    for range in [0..40, 100..230, days - 30..days, 150..150] {
        let loaded = wf_data::dataset::open(&uri, &[], None, &DataRoots::Any)
            .and_then(|source| source.days(range.clone(), &summary))
            .expect("days read");
        assert_eq!(fingerprint(&loaded), fingerprint(&whole.days(range.clone())), "{range:?}");
        assert!(loaded.rows() < whole.rows() || range == (0..days));
    }
    // Confined to data roots like every dataset read.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let roots = DataRoots::Only(vec![elsewhere.path().canonicalize().expect("root")]);
    let refused = wf_data::dataset::open(&uri, &[], None, &roots)
        .and_then(|source| source.days(0..10, &summary))
        .expect_err("outside the roots");
    assert!(refused.to_string().contains("data roots"), "{refused}");
}

#[test]
fn a_file_edited_after_it_was_written_is_refused_on_the_days_it_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = prepared(dir.path());
    let uri = path.display().to_string();
    let summary = wf_data::dataset::open(&uri, &[], None, &DataRoots::Any)
        .and_then(|source| source.days_summary())
        .expect("readable")
        .expect("a summary");
    let whole = read_panel(&path, None).expect("whole");
    let edited_day = 200;

    // One feature value of day 200 changed, the file's metadata (summary, digests) kept.
    let mut parts = whole.into_parts();
    let row = parts.day.iter().position(|d| *d as usize == edited_day).expect("a row that day");
    parts.features[3][row] += 0.25;
    let edited = dir.path().join("edited.parquet");
    write_panel(&edited, &Panel::new(parts).expect("panel")).expect("written");
    let mut frame = LazyFrame::scan_parquet(PlRefPath::new(edited.to_string_lossy().as_ref()), Default::default())
        .expect("scan")
        .collect()
        .expect("frame");
    let metadata = {
        let mut reader = ParquetReader::new(std::fs::File::open(&path).expect("open"));
        let kv = reader.get_metadata().expect("metadata").key_value_metadata().clone().unwrap_or_default();
        kv.into_iter().filter_map(|kv| Some((kv.key, kv.value?))).collect::<Vec<_>>()
    };
    ParquetWriter::new(std::fs::File::create(&path).expect("create"))
        .with_key_value_metadata(Some(KeyValueMetadata::from_static(metadata)))
        .finish(&mut frame)
        .expect("rewritten");

    let refused = wf_data::dataset::open(&uri, &[], None, &DataRoots::Any)
        .and_then(|source| source.days(150..250, &summary))
        .expect_err("an edited day");
    let date = summary.calendar.date(edited_day).expect("date").to_string();
    assert!(refused.to_string().contains(&format!("its values of {date} are not")), "{refused}");
    // Days the edit did not touch still read.
    wf_data::dataset::open(&uri, &[], None, &DataRoots::Any)
        .and_then(|source| source.days(0..edited_day, &summary))
        .expect("days before the edit");

    // Written again (new metadata): another content hash, refused whatever the days.
    std::fs::copy(&edited, &path).expect("copied");
    let refused = wf_data::dataset::open(&uri, &[], None, &DataRoots::Any)
        .and_then(|source| source.days(0..10, &summary))
        .expect_err("another panel");
    assert!(refused.to_string().contains("the file changed"), "{refused}");
}
