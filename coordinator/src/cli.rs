//! Command-line arguments (clap derive). Every option also reads `WF_…` from the
//! environment where that makes sense for servers; data commands take explicit paths.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "wf", version, about = "walk-forward retraining of stock-ranking models")]
pub struct Args {
    /// Log format on stderr (`WF_LOG` sets the filter, e.g. `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WF_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Market data: synthesise, prepare panels, check quality, hash.
    #[command(subcommand)]
    Data(DataCommand),
    /// Plan a sweep: jobs per window and cadence, distinct trainings, the split audit.
    Plan(PlanArgs),
    /// Train and score one job of a sweep locally, and print its metrics.
    Train(TrainArgs),
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Sweep spec (TOML).
    pub spec: PathBuf,
    /// Index of the job in the plan (as `wf plan --json` lists them).
    #[arg(long, default_value_t = 0)]
    pub job: usize,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto", env = "WF_DEVICE")]
    pub device: String,
    /// Write the trained model (safetensors) here.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Sweep spec (TOML).
    pub spec: PathBuf,
    /// Print the plan and its split manifest as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the split manifest (JSON) to this file.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Build a panel (features and forward-return targets) from daily OHLCV.
    Prepare(PrepareArgs),
    /// Check an OHLCV file or a panel; exit 1 when a gate fails.
    Check(CheckArgs),
    /// Generate the synthetic market with planted regime breaks.
    Synth(SynthArgs),
    /// Print the content hash of a panel.
    Hash(HashArgs),
}

#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// OHLCV file: .parquet, .csv or .csv.gz with date, code, open, high, low, close,
    /// volume and optionally turnover.
    #[arg(long)]
    pub input: PathBuf,
    /// Panel file to write (.parquet).
    #[arg(long)]
    pub out: PathBuf,
    /// Forward-return horizons in trading days.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,20")]
    pub horizons: Vec<u32>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// OHLCV file or panel.
    pub file: PathBuf,
    /// Largest acceptable null share of any column, between 0 and 1.
    #[arg(long, default_value_t = 0.10)]
    pub max_null_share: f64,
    /// Fail on warnings too (extreme moves, volume level shifts, gaps).
    #[arg(long)]
    pub strict: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Directory to write ohlcv.parquet and truth.json into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub stocks: usize,
    /// Trading days (weekdays).
    #[arg(long, default_value_t = 1000)]
    pub days: usize,
    #[arg(long, default_value = "2021-01-04")]
    pub start: NaiveDate,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// Panel file.
    pub file: PathBuf,
}
