//! `wf data …`: synthesise, prepare, check and hash market data.

use anyhow::{Context, bail};
use wf_data::check::{CheckOptions, check_file, render_table};
use wf_data::panel_file::read_panel;
use wf_data::prepare::{Stage, prepare};
use wf_data::synth_file::write_synth;
use wf_shared::PanelSpec;
use wf_shared::dataset::content_hash;
use wf_shared::synth::{SynthSpec, generate};

use crate::cli::{CheckArgs, DataCommand, HashArgs, NewDaysArgs, PrepareArgs, SynthArgs};
use crate::outcome::Outcome;
use crate::progress::stage_spinner;

/// The longest horizon a panel may carry, in trading days (about a year).
const MAX_HORIZON: u32 = 252;

pub fn run(command: DataCommand) -> anyhow::Result<Outcome> {
    match command {
        DataCommand::Prepare(args) => run_prepare(args),
        DataCommand::Ingest(args) => {
            run_ingest(&args.panel, &args.days, args.out.as_deref())?;
            Ok(Outcome::Success)
        }
        DataCommand::Check(args) => run_check(args),
        DataCommand::Synth(args) => run_synth(args),
        DataCommand::Hash(args) => run_hash(args),
    }
}

fn panel_spec(horizons: &[u32]) -> anyhow::Result<PanelSpec> {
    if horizons.is_empty() {
        bail!("--horizons: must name at least one horizon");
    }
    let mut seen = horizons.to_vec();
    seen.sort_unstable();
    for (index, horizon) in horizons.iter().enumerate() {
        if *horizon == 0 || *horizon > MAX_HORIZON {
            bail!("--horizons[{index}]: must be between 1 and {MAX_HORIZON} trading days, got {horizon}");
        }
    }
    if let Some(pair) = seen.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!("--horizons: {} appears twice", pair[0]);
    }
    Ok(PanelSpec { horizons: horizons.to_vec() })
}

fn run_prepare(args: PrepareArgs) -> anyhow::Result<Outcome> {
    let spec = panel_spec(&args.horizons)?;
    let spinner = stage_spinner();
    let result = prepare(&args.input, &args.out, &spec, |stage| {
        if stage != Stage::Read {
            // The last stage's freed data (the read columns, the bars) back to the system
            // before this one allocates.
            wf_worker::allocator::release_freed_memory();
        }
        spinner.set_message(stage.label())
    });
    spinner.finish_and_clear();
    let prepared = result?;
    let total: f64 = prepared.timings.iter().map(|(_, d)| d.as_secs_f64()).sum();
    println!("wrote {}", args.out.display());
    println!(
        "  {} rows, {} stocks, {} dates, {} features, horizons {:?}",
        prepared.rows, prepared.stocks, prepared.dates, prepared.features, prepared.horizons
    );
    println!("  content hash {}", prepared.content_hash);
    let stages: Vec<String> =
        prepared.timings.iter().map(|(stage, d)| format!("{} {:.2}s", stage.label(), d.as_secs_f64())).collect();
    println!("  {total:.2}s: {}", stages.join(", "));
    println!("  feature state {} (for wf data ingest)", wf_data::ingest::state_path(&args.out).display());
    Ok(Outcome::Success)
}

/// Adds `days` to the panel at `panel` (in place, or into `out`) and prints what it did.
pub fn run_ingest(
    panel: &std::path::Path,
    days: &NewDaysArgs,
    out: Option<&std::path::Path>,
) -> anyhow::Result<wf_data::ingest::Ingested> {
    let spinner = stage_spinner();
    let result =
        wf_data::ingest::ingest(panel, &days.input, &days.closed, out, |stage| spinner.set_message(stage.label()));
    spinner.finish_and_clear();
    let ingested = result?;
    let (first, last) = (ingested.days.first(), ingested.days.last());
    println!("wrote {}", out.unwrap_or(panel).display());
    println!(
        "  added {} days ({} to {}), {} rows; {} new stocks{}",
        ingested.days.len(),
        first.map_or_else(String::new, ToString::to_string),
        last.map_or_else(String::new, ToString::to_string),
        ingested.rows_added,
        ingested.new_stocks.len(),
        if ingested.new_stocks.is_empty() { String::new() } else { format!(" ({})", ingested.new_stocks.join(", ")) }
    );
    println!("  now {} rows, {} stocks; content hash {}", ingested.rows, ingested.stocks, ingested.content_hash);
    let stages: Vec<String> =
        ingested.timings.iter().map(|(stage, d)| format!("{} {:.2}s", stage.label(), d.as_secs_f64())).collect();
    println!("  {}", stages.join(", "));
    Ok(ingested)
}

fn run_check(args: CheckArgs) -> anyhow::Result<Outcome> {
    if !(0.0..=1.0).contains(&args.max_null_share) {
        bail!("--max-null-share: must be between 0 and 1, got {}", args.max_null_share);
    }
    let options = CheckOptions { max_null_share: args.max_null_share, strict: args.strict };
    let report = check_file(&args.file, options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("failed to serialise the report")?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(if report.passed { Outcome::Success } else { Outcome::GateFailed })
}

fn run_synth(args: SynthArgs) -> anyhow::Result<Outcome> {
    let spec = SynthSpec { stocks: args.stocks, days: args.days, start: args.start, seed: args.seed, null: args.null };
    let spinner = stage_spinner();
    spinner.set_message("generating the synthetic market");
    let market = generate(&spec);
    let written = market.map_err(anyhow::Error::from).and_then(|market| {
        spinner.set_message("writing");
        let files = write_synth(&args.out, &market)?;
        Ok((market.truth, files))
    });
    spinner.finish_and_clear();
    let (truth, files) = written?;
    println!("wrote {} and {}", files.ohlcv.display(), files.truth.display());
    println!("  {} stocks, {} trading days, {} .. {}", spec.stocks, spec.days, truth.first_date, truth.last_date);
    if let Some(description) = &truth.description {
        println!("  {description}");
    } else {
        let breaks: Vec<String> = truth.breaks.iter().map(|d| d.to_string()).collect();
        println!("  planted regime breaks: {}", breaks.join(", "));
    }
    Ok(Outcome::Success)
}

fn run_hash(args: HashArgs) -> anyhow::Result<Outcome> {
    let panel = read_panel(&args.file, None)?;
    println!("{}", content_hash(&panel));
    Ok(Outcome::Success)
}
