//! Benchmark: `prepare`, `ingest` (the last day, into the panel of the days before) and
//! `check` on a real OHLCV file (default: the jp_tse1000 data
//! beside the repository, `../shared/data/jp_tse1000/jp_tse1000_daily.parquet`; set
//! `WF_BENCH_OHLCV` to use another), and reading the panel's metadata summary (what
//! planning reads) and one job's days (what a worker reads for a job of window 504)
//! against reading the whole panel. Not a timed test: it prints figures.
//!
//! ```text
//! cargo bench -p wf-data --bench data_pipeline
//! WF_BENCH_SYNTH=4000x2500 cargo bench -p wf-data --bench data_pipeline   # whole market: 10 M rows
//! ```
//!
//! `WF_BENCH_SYNTH=STOCKSxDAYS` runs it on the synthetic market of that size (written
//! to a temporary directory first) instead of a file.
//!
//! Each phase runs in a child process (this same executable with `--phase`), so the
//! peak resident memory reported is that phase's alone (`VmHWM` of the child). On the
//! synthetic market the memory targets of issue 21 are asserted: preparing within 2.5 GB
//! and planning from the summary within 200 MB, else the bench exits with status 1 (time
//! targets are printed, not asserted: they depend on the machine).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use wf_data::check::{CheckOptions, check_file};
use wf_data::dataset::DataRoots;
use wf_data::ingest::{ingest, state_path};
use wf_data::ohlcv::{read_ohlcv, write_ohlcv};
use wf_data::panel_file::read_panel;
use wf_data::prepare::{Stage, prepare};
use wf_shared::PanelSpec;
use wf_shared::dataset::content_hash;

const RUNS: usize = 3;

/// As `wf`'s: mimalloc, returning freed memory (the data commands' setting), so the
/// figures are those of `wf data …`; on glibc's malloc prepare ran slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `wf data prepare` does as each stage after the first starts
/// (`wf_worker::allocator::release_freed_memory`, which this crate cannot call): the last
/// stage's freed data returned before the next allocates.
#[allow(unsafe_code)]
fn at_stage(stage: Stage) {
    if stage != Stage::Read {
        // SAFETY: `mi_collect` frees mimalloc's cached, unused memory; callable any time.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// The inputs of the ingest phase beside `panel`: the panel prepared without the last
/// day (and its state) and the last day's OHLCV.
fn ingest_files(panel: &Path) -> (PathBuf, PathBuf) {
    (panel.with_extension("head.parquet"), panel.with_extension("day.parquet"))
}

/// Writes [`ingest_files`] from `input`.
fn prepare_ingest(input: &Path, panel: &Path) -> Result<(), String> {
    let bars = read_ohlcv(input).map_err(|e| e.to_string())?;
    let last = bars.date.iter().max().copied().ok_or("no rows")?;
    let (head, day) = ingest_files(panel);
    let head_input = panel.with_extension("head-ohlcv.parquet");
    write_ohlcv(&head_input, &bars.rows_where(|d, _| d < last)).map_err(|e| e.to_string())?;
    write_ohlcv(&day, &bars.rows_where(|d, _| d == last)).map_err(|e| e.to_string())?;
    prepare(&head_input, &head, &PanelSpec::default(), |_| {}).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(head_input);
    Ok(())
}

/// Runs one phase in this process and prints `seconds peak_mib detail`.
fn run_phase(phase: &str, input: &Path, panel: &Path) -> Result<(), String> {
    // The ingest phase works on a copy of the head panel (copied before the clock starts).
    let grown = panel.with_extension("grown.parquet");
    if phase == "ingest-last-day" {
        let (head, _) = ingest_files(panel);
        std::fs::copy(&head, &grown).map_err(|e| e.to_string())?;
        std::fs::copy(state_path(&head), state_path(&grown)).map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let detail = match phase {
        "prepare" => {
            let prepared = prepare(input, panel, &PanelSpec::default(), at_stage).map_err(|e| e.to_string())?;
            let stages: Vec<String> =
                prepared.timings.iter().map(|(s, d)| format!("{} {:.2}s", s.label(), d.as_secs_f64())).collect();
            format!("{} rows x {} features; {}", prepared.rows, prepared.features, stages.join(", "))
        }
        "ingest-last-day" => {
            let (_, day) = ingest_files(panel);
            let ingested = ingest(&grown, &day, &[], None, |_| {}).map_err(|e| e.to_string())?;
            let stages: Vec<String> =
                ingested.timings.iter().map(|(s, d)| format!("{} {:.2}s", s.label(), d.as_secs_f64())).collect();
            let _ = std::fs::remove_file(state_path(&grown));
            let _ = std::fs::remove_file(&grown);
            format!("{} rows added to {}; {}", ingested.rows_added, ingested.rows, stages.join(", "))
        }
        "check-ohlcv" => {
            let report = check_file(input, CheckOptions::default()).map_err(|e| e.to_string())?;
            format!("{} rows, {} gates failed", report.rows, report.failed_gates().count())
        }
        "check-panel" => {
            let report = check_file(panel, CheckOptions::default()).map_err(|e| e.to_string())?;
            format!("{} columns, {} gates failed", report.columns.len(), report.failed_gates().count())
        }
        "read-and-hash-panel" => {
            let loaded = read_panel(panel, None).map_err(|e| e.to_string())?;
            content_hash(&loaded).short()
        }
        "read-job-days" => {
            // What a worker loads for one job of window 504 scoring 63 days (the
            // panel's last 567 days), checked against the summary's digests.
            let uri = panel.display().to_string();
            let roots = DataRoots::Any;
            let summary = wf_data::dataset::open(&uri, &[], None, &roots)
                .and_then(|source| source.days_summary())
                .map_err(|e| e.to_string())?
                .ok_or("no summary")?;
            let days = summary.calendar.len();
            let read = days.saturating_sub(567)..days;
            let loaded = wf_data::dataset::open(&uri, &[], None, &roots)
                .and_then(|source| source.days(read.clone(), &summary))
                .map_err(|e| e.to_string())?;
            format!("{} rows of {} days (of {days}), checked against the metadata", loaded.rows(), read.len())
        }
        "plan-summary" => {
            let uri = panel.display().to_string();
            let summary = wf_data::dataset::open(&uri, &[], None, &wf_data::dataset::DataRoots::Any)
                .and_then(|source| source.summary())
                .map_err(|e| e.to_string())?;
            format!("{} (from the metadata), {} dates", summary.content_hash.short(), summary.calendar.len())
        }
        other => return Err(format!("unknown phase {other}")),
    };
    println!("{:.3} {:.0} {detail}", started.elapsed().as_secs_f64(), peak_rss_mib());
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let synth_dir =
        std::env::temp_dir().join(format!("wf-bench-synth-{}", std::env::var("WF_BENCH_SYNTH").unwrap_or_default()));
    let input = match (std::env::var("WF_BENCH_OHLCV"), std::env::var("WF_BENCH_SYNTH")) {
        (Ok(path), _) => PathBuf::from(path),
        (Err(_), Ok(_)) => synth_dir.join("ohlcv.parquet"),
        _ => root.join("../shared/data/jp_tse1000/jp_tse1000_daily.parquet"),
    };
    let panel = std::env::temp_dir().join(format!("wf-bench-panel-{}.parquet", std::process::id()));

    if let Some(position) = args.iter().position(|a| a == "--phase") {
        let phase = &args[position + 1];
        let panel = PathBuf::from(&args[position + 2]);
        if let Err(error) = run_phase(phase, &input, &panel) {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
        return;
    }
    if let Ok(size) = std::env::var("WF_BENCH_SYNTH")
        && !input.exists()
    {
        let Some((stocks, days)) = size.split_once('x').and_then(|(s, d)| Some((s.parse().ok()?, d.parse().ok()?)))
        else {
            println!("WF_BENCH_SYNTH must be STOCKSxDAYS, e.g. 4000x2500");
            return;
        };
        let spec = wf_shared::synth::SynthSpec { stocks, days, ..Default::default() };
        let market = wf_shared::synth::generate(&spec).expect("a synthetic market of that size");
        wf_data::synth_file::write_synth(&synth_dir, &market).expect("synthetic OHLCV written");
    }
    if !input.exists() {
        println!("skipped: {} not found (set WF_BENCH_OHLCV or WF_BENCH_SYNTH)", input.display());
        return;
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("data pipeline benchmark: {} ({threads} threads, best and median of {RUNS} runs)", input.display());
    println!("{:<22} {:>8} {:>8} {:>10}  detail", "phase", "best s", "median s", "peak MiB");
    if let Err(error) = prepare_ingest(&input, &panel) {
        println!("cannot prepare the ingest phase's files: {error}");
        std::process::exit(1);
    }
    let exe = std::env::current_exe().expect("benchmark executable");
    let whole_market = std::env::var_os("WF_BENCH_SYNTH").is_some();
    // Issue 21's memory targets on the whole market, in MiB (2.5 GB and 200 MB).
    let memory_target = |phase: &str| match phase {
        "prepare" if whole_market => Some(2.5e9 / 1_048_576.0),
        "plan-summary" if whole_market => Some(200e6 / 1_048_576.0),
        _ => None,
    };
    let mut targets = wf_shared::targets::Targets::default();
    for (phase, target) in [
        // The jp_tse1000 target, and issue 21's for the 10 M-row synthetic market.
        ("prepare", Some(if std::env::var_os("WF_BENCH_SYNTH").is_some() { 15.0 } else { 3.0 })),
        // The daily loop's step: the whole history but its last day prepared, that day added.
        ("ingest-last-day", None),
        ("check-ohlcv", if std::env::var_os("WF_BENCH_SYNTH").is_some() { None } else { Some(1.0) }),
        ("check-panel", None),
        ("read-and-hash-panel", None),
        // Against the line above: what a worker reads for one job instead of the panel.
        ("read-job-days", None),
        ("plan-summary", Some(1.0)),
    ] {
        let mut results: Vec<(f64, f64, String)> = Vec::new();
        for _ in 0..RUNS {
            let output = Command::new(&exe).arg("--phase").arg(phase).arg(&panel).output().expect("child runs");
            let text = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                // A failed or killed phase (an out-of-memory kill included) fails the bench.
                println!("{phase}: failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
                targets.failed(phase);
                break;
            }
            let mut parts = text.trim().splitn(3, ' ');
            let seconds: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
            let mib: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
            results.push((seconds, mib, parts.next().unwrap_or_default().to_string()));
        }
        if results.len() < RUNS {
            continue;
        }
        results.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (best, median) = (results[0].0, results[RUNS / 2].0);
        let peak = results.iter().map(|r| r.1).fold(0.0, f64::max);
        let verdict = target.map_or(String::new(), |t: f64| {
            format!(" (target <= {t:.0} s: {})", targets.at_most(&format!("{phase} (s)"), best, t))
        });
        println!("{phase:<22} {best:>8.3} {median:>8.3} {peak:>10.0}  {}{verdict}", results[0].2);
        if let Some(limit) = memory_target(phase) {
            let verdict = targets.at_most(&format!("{phase} peak (MiB)"), peak, limit);
            println!("{:<22} peak {peak:.0} MiB, target <= {limit:.0} MiB: {verdict}", "");
        }
    }
    let (head, day) = ingest_files(&panel);
    for file in [state_path(&panel), panel.clone(), state_path(&head), head, day] {
        let _ = std::fs::remove_file(file);
    }
    let _ = std::fs::remove_dir_all(&synth_dir);
    println!("{}", targets.summary());
    std::process::exit(targets.exit_code());
}
