//! Measures Parquet write settings on a panel: `cargo run --release -p wf-data --example write_speed -- PANEL`.
use std::time::Instant;

use polars::prelude::*;

fn main() -> PolarsResult<()> {
    let path = std::env::args().nth(1).expect("panel path");
    if !std::path::Path::new(&path).exists() {
        let input = std::path::Path::new("../shared/data/jp_tse1000/jp_tse1000_daily.parquet");
        wf_data::prepare::prepare(input, std::path::Path::new(&path), &wf_shared::PanelSpec::default(), |_| {})
            .map_err(|e| polars::prelude::polars_err!(ComputeError: "{e}"))?;
    }
    let mut frame = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), ScanArgsParquet::default())?.collect()?;
    let variants: Vec<(&str, ParquetCompression, bool)> = vec![
        ("zstd default", ParquetCompression::Zstd(None), true),
        ("lz4", ParquetCompression::Lz4Raw, true),
        ("snappy", ParquetCompression::Snappy, true),
        ("uncompressed", ParquetCompression::Uncompressed, true),
        ("lz4 no stats", ParquetCompression::Lz4Raw, false),
    ];
    for (name, compression, stats) in variants {
        let out = std::env::temp_dir().join("wf-write-speed.parquet");
        let started = Instant::now();
        let file = std::fs::File::create(&out)?;
        let mut writer = ParquetWriter::new(file).with_compression(compression);
        if !stats {
            writer = writer.with_statistics(StatisticsOptions::empty());
        }
        writer.finish(&mut frame)?;
        let size = std::fs::metadata(&out)?.len() as f64 / 1e6;
        println!("{name:<14} {:.3}s {size:.0} MB", started.elapsed().as_secs_f64());
    }
    Ok(())
}
