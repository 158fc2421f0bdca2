//! Loading the dataset a sweep names: a panel file, or the embedded synthetic market.
//!
//! - a path (relative to the working directory) to a panel written by `wf data prepare`;
//! - `synth:default`, or `synth:stocks=N,days=N,seed=S,start=YYYY-MM-DD` with any subset
//!   of those keys: the synthetic market generated in memory and prepared with the
//!   requested horizons. No file or server is needed: the embedded default dataset.
//!
//! Every read goes through [`open`], which tells `synth:` from files and confines a file
//! to the data roots once, and gives a [`DatasetSource`]; the call site says what it
//! needs of it: the summary (planning), a job's days, or the whole panel.
//!
//! A shared coordinator and its workers read files only under their data roots
//! ([`DataRoots::Only`]; none configured: `synth:` only). The file is opened once, then
//! checked through its handle (its real path, from `/proc/self/fd`, must lie under a
//! root, and it must be a regular file: not a FIFO, not a device) and read through that
//! same handle, so a symlink swapped between the check and the read changes nothing. A
//! path outside the roots gets one answer whether or not it exists.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use wf_shared::dataset::{DatasetHash, PanelDigests};
use wf_shared::synth::{SynthSpec, generate};
use wf_shared::{Bars, Panel, PanelSpec, build_panel};

use crate::DataError;
use crate::panel_file::read_panel;

/// A loaded panel with its content hash and the digests it is combined from.
#[derive(Debug)]
pub struct Dataset {
    pub panel: Panel,
    pub content_hash: DatasetHash,
    pub digests: PanelDigests,
}

impl Dataset {
    /// `panel` with its digests computed from its values.
    pub fn of(panel: Panel) -> Self {
        let digests = PanelDigests::of(&panel);
        Self { panel, content_hash: digests.hash(), digests }
    }
}

/// What planning needs of a dataset: its calendar, daily universe, features, horizons
/// and content hash; read from a panel file's metadata where it records them
/// ([`DatasetSource::summary`]), so a plan reads no value.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    pub stocks: usize,
    pub calendar: wf_shared::TradingCalendar,
    pub daily_universe: Vec<usize>,
    pub feature_names: Vec<String>,
    pub horizons: Vec<u32>,
    pub content_hash: DatasetHash,
    pub digests: PanelDigests,
    /// Look-ahead suspects among the features (`wf_shared::label_guard`); `None` where
    /// a panel file's metadata predates the check.
    pub lookahead: Option<Vec<wf_shared::label_guard::LookaheadSuspect>>,
}

impl DatasetSummary {
    pub fn of(dataset: &Dataset) -> Self {
        let panel = &dataset.panel;
        Self {
            stocks: panel.codes().len(),
            calendar: panel.calendar().clone(),
            daily_universe: panel.daily_universe(),
            feature_names: panel.feature_names().to_vec(),
            horizons: panel.horizons().to_vec(),
            content_hash: dataset.content_hash,
            digests: dataset.digests.clone(),
            lookahead: Some(wf_shared::label_guard::lookahead_suspects(panel)),
        }
    }

    pub fn plan_input(&self) -> wf_shared::plan::PlanInput<'_> {
        wf_shared::plan::PlanInput {
            calendar: &self.calendar,
            digests: &self.digests,
            feature_names: &self.feature_names,
            daily_universe: &self.daily_universe,
            horizons: &self.horizons,
        }
    }
}

fn from_metadata(uri: &str, summary: crate::panel_file::PanelSummary) -> Result<DatasetSummary, DataError> {
    let horizons = summary
        .digests
        .targets
        .iter()
        .map(|(name, _)| {
            name.strip_prefix(crate::panel_file::TARGET_PREFIX).and_then(|h| h.parse().ok()).ok_or_else(|| {
                DataError::Invalid { path: uri.into(), reason: format!("target column {name} names no horizon") }
            })
        })
        .collect::<Result<Vec<u32>, DataError>>()?;
    // Of the features and targets read (a spec may declare subsets).
    let lookahead = summary.lookahead.map(|all| {
        let features = &summary.digests.features;
        let targets = &summary.digests.targets;
        all.into_iter()
            .filter(|s| features.iter().any(|(name, _)| *name == s.feature))
            .filter(|s| targets.iter().any(|(name, _)| *name == s.target))
            .collect()
    });
    Ok(DatasetSummary {
        stocks: summary.stocks,
        content_hash: summary.digests.hash(),
        calendar: wf_shared::TradingCalendar::from_dates(summary.dates),
        daily_universe: summary.daily_universe,
        feature_names: summary.digests.features.iter().map(|(name, _)| name.clone()).collect(),
        horizons,
        digests: summary.digests,
        lookahead,
    })
}

/// Parses a `synth:` dataset name into a spec.
pub fn synth_spec(uri: &str) -> Option<Result<SynthSpec, String>> {
    let options = uri.strip_prefix("synth:")?;
    let mut spec = SynthSpec::default();
    if options == "default" || options.is_empty() {
        return Some(Ok(spec));
    }
    for option in options.split(',') {
        // `null` (first or anywhere): the null market.
        if option.trim() == "null" {
            spec.null = true;
            continue;
        }
        let Some((key, value)) = option.split_once('=') else {
            return Some(Err(format!("{option:?} is not key=value (or null)")));
        };
        let parsed = match key.trim() {
            "stocks" => value.trim().parse().map(|v| spec.stocks = v).map_err(|e| e.to_string()),
            "days" => value.trim().parse().map(|v| spec.days = v).map_err(|e| e.to_string()),
            "seed" => value.trim().parse().map(|v| spec.seed = v).map_err(|e| e.to_string()),
            "start" => value.trim().parse().map(|v| spec.start = v).map_err(|e| e.to_string()),
            other => Err(format!("unknown option {other:?} (expected stocks, days, seed, start)")),
        };
        if let Err(reason) = parsed {
            return Some(Err(format!("{key}: {reason}")));
        }
    }
    Some(Ok(spec))
}

/// Where dataset files may be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRoots {
    /// Anywhere (`wf run`, the local tools: the user's own files).
    Any,
    /// Only under these directories (canonical paths); none: `synth:` only.
    Only(Vec<PathBuf>),
}

/// `path` made absolute (against the working directory) with `.` and `..` resolved
/// lexically (symlinks are resolved later, through the opened file).
fn lexical(path: &Path) -> PathBuf {
    let absolute =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let mut clean = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

/// Opens `uri` if it lies under one of `roots`; the file stays open, and is read
/// through the returned `/proc/self/fd` path.
fn open_confined(uri: &str, roots: &[PathBuf]) -> Result<(std::fs::File, PathBuf), DataError> {
    let path = Path::new(uri);
    let invalid = |reason: String| DataError::Invalid { path: path.to_path_buf(), reason };
    if roots.is_empty() {
        return Err(invalid(
            "no data roots are configured here (--data-root): only synth: datasets are allowed".into(),
        ));
    }
    let listed = roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
    // One answer for every path outside the roots, existing or not.
    let outside = || invalid(format!("is not a file under the data roots ({listed})"));
    let inside = |candidate: &Path| roots.iter().any(|root| candidate.starts_with(root));
    let file = match std::fs::OpenOptions::new()
        .read(true)
        // A FIFO would block the open until a writer came; a terminal must not become ours.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if inside(&lexical(path)) => return Err(DataError::unreadable(path, error)),
        Err(_) => return Err(outside()),
    };
    let handle = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let real = std::fs::read_link(&handle).map_err(|error| DataError::unreadable(path, error))?;
    if !inside(&real) {
        return Err(outside());
    }
    let metadata = file.metadata().map_err(|error| DataError::unreadable(path, error))?;
    if !metadata.is_file() {
        return Err(invalid("is not a regular file".into()));
    }
    Ok((file, handle))
}

/// A dataset opened once: the `synth:` market it names, or its file, checked against the
/// data roots and kept open (pinned) for every read that follows. Call sites say what
/// they need of it: the [`summary`](Self::summary) for planning, a job's
/// [`days`](Self::days) (after [`days_summary`](Self::days_summary)), or the
/// [`whole`](Self::whole) panel.
#[derive(Debug)]
pub struct DatasetSource {
    uri: String,
    horizons: Vec<u32>,
    features: Option<Vec<String>>,
    kind: SourceKind,
}

#[derive(Debug)]
enum SourceKind {
    /// A `synth:` name and its spec (an invalid one is reported when the market is built).
    Synth(Result<SynthSpec, String>),
    /// A file, read through `path` (its `/proc/self/fd` handle under data roots; the path
    /// itself with [`DataRoots::Any`]); `pin` keeps the checked file open.
    File { path: PathBuf, _pin: Option<std::fs::File> },
}

/// Opens dataset `uri` (a `synth:` name, or a file confined to `roots`): `horizons` are
/// the targets a synthetic panel is built with; `features`, when given, the only feature
/// columns read (in that order), else the panel's declared ones.
pub fn open(
    uri: &str,
    horizons: &[u32],
    features: Option<&[String]>,
    roots: &DataRoots,
) -> Result<DatasetSource, DataError> {
    let kind = match synth_spec(uri) {
        Some(spec) => SourceKind::Synth(spec),
        None => match roots {
            DataRoots::Only(roots) => {
                let (file, handle) = open_confined(uri, roots)?;
                SourceKind::File { path: handle, _pin: Some(file) }
            }
            DataRoots::Any => SourceKind::File { path: PathBuf::from(uri), _pin: None },
        },
    };
    Ok(DatasetSource {
        uri: uri.to_string(),
        horizons: horizons.to_vec(),
        features: features.map(<[String]>::to_vec),
        kind,
    })
}

impl DatasetSource {
    /// An error about the file, naming the dataset as given rather than its handle.
    fn within(&self) -> impl Fn(DataError) -> DataError + '_ {
        |error: DataError| error.with_path(Path::new(&self.uri))
    }

    /// The summary planning needs: from the panel file's metadata when it records one
    /// (no value is read), else from the whole dataset (`synth:`, or a file written
    /// before summaries). Equal either way.
    pub fn summary(&self) -> Result<DatasetSummary, DataError> {
        if let SourceKind::File { path, .. } = &self.kind
            && let Some(summary) =
                crate::panel_file::read_summary(path, self.features.as_deref()).map_err(self.within())?
        {
            return from_metadata(&self.uri, summary);
        }
        self.whole().map(|dataset| DatasetSummary::of(&dataset))
    }

    /// The summary when jobs can read this dataset by days ([`Self::days`]): a prepared
    /// panel file whose metadata records its summary with the stock codes. `None` for a
    /// synthetic dataset or a file to be read whole.
    pub fn days_summary(&self) -> Result<Option<DatasetSummary>, DataError> {
        let SourceKind::File { path, .. } = &self.kind else { return Ok(None) };
        match crate::panel_file::read_summary(path, self.features.as_deref()).map_err(self.within())? {
            Some(summary) if !summary.codes.is_empty() => from_metadata(&self.uri, summary).map(Some),
            _ => Ok(None),
        }
    }

    /// The panel of days `days`, for a job that reads only those days
    /// (`wf_shared::plan::read_days`); `expected` is [`Self::days_summary`] as the job
    /// was planned on. The file must still have `expected`'s content hash and each of the
    /// days' values must digest as `expected` records, or it is refused (the file changed
    /// since, or its values were edited after it was written).
    pub fn days(&self, days: std::ops::Range<usize>, expected: &DatasetSummary) -> Result<Panel, DataError> {
        let invalid = |reason: String| DataError::Invalid { path: PathBuf::from(&self.uri), reason };
        let SourceKind::File { path, .. } = &self.kind else {
            return Err(invalid("a synthetic dataset is read whole, not by days".into()));
        };
        let (panel, summary) = crate::panel_file::read_panel_days(path, self.features.as_deref(), days.clone())
            .map_err(self.within())?
            .ok_or_else(|| invalid("its metadata no longer records the summary it was planned on".into()))?;
        let found = summary.digests.hash();
        if found != expected.content_hash {
            return Err(invalid(format!(
                "its content hash is {}, not {} as planned: the file changed",
                found.short(),
                expected.content_hash.short()
            )));
        }
        let end = days.end.min(panel.calendar().len());
        if let Some(day) = PanelDigests::of(&panel).first_difference(&expected.digests, days.start.min(end)..end) {
            let date = panel.calendar().date(day).map_or_else(|| format!("day {day}"), |d| d.to_string());
            return Err(invalid(format!(
                "its values of {date} are not the ones its metadata records: the file was edited after it was written"
            )));
        }
        Ok(panel)
    }

    /// The whole dataset: the synthetic market built and prepared, or the file read.
    pub fn whole(&self) -> Result<Dataset, DataError> {
        let invalid = |reason: String| DataError::Invalid { path: self.uri.clone().into(), reason };
        let panel = match &self.kind {
            SourceKind::Synth(spec) => {
                let spec = spec.clone().map_err(invalid)?;
                let market = generate(&spec).map_err(|e| invalid(e.to_string()))?;
                let bars = Bars::new(market.bars)
                    .map_err(|source| DataError::Bars { path: self.uri.clone().into(), source })?;
                let panel = build_panel(&bars, &PanelSpec { horizons: self.horizons.clone() });
                match &self.features {
                    Some(names) => panel
                        .select_features(names)
                        .map_err(|name| invalid(format!("the synthetic panel has no feature {name:?}")))?,
                    None => panel,
                }
            }
            SourceKind::File { path, .. } => read_panel(path, self.features.as_deref()).map_err(self.within())?,
        };
        Ok(Dataset::of(panel))
    }
}

/// [`open`] anywhere, whole: the tools', tests' and benches' one-liner.
pub fn load_dataset(uri: &str, horizons: &[u32], features: Option<&[String]>) -> Result<Dataset, DataError> {
    open(uri, horizons, features, &DataRoots::Any)?.whole()
}

/// The market a backtest of `grid` trades in, for the dataset `uri` already loaded as
/// `panel`: read from the panel; a synthetic panel built without the 1-day target is built
/// again with it (a file without one is refused, as is one without traded value when
/// the grid charges impact).
pub fn backtest_market(
    uri: &str,
    panel: &Panel,
    grid: &wf_shared::backtest::BacktestGrid,
) -> Result<wf_shared::backtest::portfolio::Market, String> {
    use wf_shared::backtest::portfolio::Market;
    let needs_adv = grid.impact.iter().any(|impact| *impact > 0.0);
    if panel.target(1).is_none() && synth_spec(uri).is_some() {
        let daily = load_dataset(uri, &[1], Some(&[])).map_err(|e| e.to_string())?;
        return Market::from_panel(&daily.panel, needs_adv).map_err(|e| e.to_string());
    }
    Market::from_panel(panel, needs_adv).map_err(|e| e.to_string())
}

#[cfg(test)]
mod synth_name_tests {
    use super::*;

    #[test]
    fn a_synth_name_selects_the_null_market_anywhere_in_its_options() {
        let parse = |uri: &str| synth_spec(uri).expect("a synth name");
        assert_eq!(parse("synth:null"), Ok(SynthSpec { null: true, ..SynthSpec::default() }));
        assert_eq!(
            parse("synth:stocks=40,null,seed=3"),
            Ok(SynthSpec { stocks: 40, seed: 3, null: true, ..SynthSpec::default() })
        );
        assert_eq!(parse("synth:default"), Ok(SynthSpec::default()));
        assert_eq!(parse("synth:nul"), Err("\"nul\" is not key=value (or null)".to_string()));
        assert!(synth_spec("data/panel.parquet").is_none());
    }
}

#[cfg(test)]
mod confinement_tests {
    use super::*;

    fn message(result: Result<Dataset, DataError>) -> String {
        result.map(|_| ()).expect_err("refused").to_string()
    }

    #[test]
    fn files_outside_the_roots_are_refused_alike_and_only_regular_files_inside_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside_dir = dir.path().join("outside");
        std::fs::create_dir_all(&root).expect("root");
        std::fs::create_dir_all(&outside_dir).expect("outside");
        let root = std::fs::canonicalize(&root).expect("canonical");
        let panel = load_dataset("synth:stocks=20,days=400,seed=1", &[5], None).expect("synth").panel;
        crate::panel_file::write_panel(&root.join("panel.parquet"), &panel).expect("write");
        crate::panel_file::write_panel(&outside_dir.join("secret.parquet"), &panel).expect("write");
        std::os::unix::fs::symlink(outside_dir.join("secret.parquet"), root.join("link.parquet")).expect("symlink");
        let roots = DataRoots::Only(vec![root.clone()]);
        let load = |uri: &str| open(uri, &[5], None, &roots).and_then(|source| source.whole());

        let inside = load(&root.join("panel.parquet").display().to_string()).expect("a panel under the root");
        assert_eq!(inside.panel.codes().len(), 20);
        let existing = message(load(&outside_dir.join("secret.parquet").display().to_string()));
        let missing = message(load(&outside_dir.join("nothing.parquet").display().to_string()));
        assert!(existing.contains("not a file under the data roots"), "{existing}");
        assert_eq!(
            existing.replace("secret", "X"),
            missing.replace("nothing", "X"),
            "an existing file outside the roots is told apart from a missing one"
        );
        let escape = format!("{}/../outside/secret.parquet", root.display());
        assert!(message(load(&escape)).contains("not a file under the data roots"));
        assert!(
            message(load(&root.join("link.parquet").display().to_string())).contains("not a file under the data roots")
        );
        assert!(message(load("/etc/passwd")).contains("not a file under the data roots"));
        // Not regular files, even inside a root: a FIFO (the open must not block) and a
        // device node linked in.
        let fifo = root.join("fifo.parquet");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        assert!(message(load(&fifo.display().to_string())).contains("not a regular file"));
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.parquet")).expect("symlink");
        assert!(
            message(load(&root.join("zero.parquet").display().to_string())).contains("not a file under the data roots")
        );
        // No roots: synth only.
        let none = DataRoots::Only(Vec::new());
        assert!(
            message(
                open(&root.join("panel.parquet").display().to_string(), &[5], None, &none)
                    .and_then(|source| source.whole())
            )
            .contains("only synth:")
        );
        assert!(open("synth:stocks=20,days=400,seed=1", &[5], None, &none).and_then(|source| source.whole()).is_ok());
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn a_refusal_by_the_roots_is_permanent_and_an_io_error_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let roots = DataRoots::Only(vec![root.clone()]);
        let outside = open("/etc/hostname", &[5], None, &roots)
            .and_then(|source| source.whole())
            .map(|_| ())
            .expect_err("outside");
        assert!(!outside.retryable(), "{outside}");
        let missing = open(&root.join("gone.parquet").display().to_string(), &[5], None, &roots)
            .and_then(|source| source.whole())
            .map(|_| ())
            .expect_err("missing inside the root");
        assert!(missing.retryable(), "a file that may yet appear: {missing}");
    }
}

#[cfg(test)]
mod market_tests {
    use wf_shared::backtest::{BacktestGrid, PortfolioSetting, Rebalance};

    use wf_shared::backtest::portfolio::Market;

    use super::*;
    use crate::panel_file::{read_panel, write_panel};

    fn grid(impact: f64) -> BacktestGrid {
        BacktestGrid::single(&PortfolioSetting { impact, ..PortfolioSetting::new(10, Rebalance::Weekly) })
    }

    #[test]
    fn a_synthetic_panel_without_daily_returns_is_built_again_with_them() {
        let uri = "synth:stocks=20,days=400,seed=3";
        let weekly = load_dataset(uri, &[5], None).expect("synth");
        assert!(weekly.panel.target(1).is_none());
        let market = backtest_market(uri, &weekly.panel, &grid(0.1)).expect("market");
        let daily = load_dataset(uri, &[1], None).expect("synth");
        let expected = Market::from_panel(&daily.panel, true).expect("market");
        let bits = |rows: &[Vec<f64>]| rows.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&market.returns), bits(&expected.returns));
        assert_eq!(bits(&market.adv), bits(&expected.adv));
    }

    #[test]
    fn a_panel_file_without_daily_returns_or_traded_value_is_refused_and_adv_survives_a_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uri = "synth:stocks=20,days=400,seed=3";
        let weekly = load_dataset(uri, &[5], None).expect("synth");
        let path = dir.path().join("weekly.parquet");
        write_panel(&path, &weekly.panel).expect("write");
        let file = path.display().to_string();
        let reread = read_panel(&path, None).expect("read");
        let error = backtest_market(&file, &reread, &grid(0.0)).expect_err("no 1-day target");
        assert!(error.contains("fwd_ret_1"), "{error}");

        let daily = load_dataset(uri, &[1, 5], None).expect("synth");
        let path = dir.path().join("daily.parquet");
        write_panel(&path, &daily.panel).expect("write");
        let reread = read_panel(&path, None).expect("read");
        let bits = |values: Option<&[f64]>| values.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        assert_eq!(bits(reread.adv()), bits(daily.panel.adv()), "adv_20 is written and read back");
        assert_eq!(wf_shared::dataset::content_hash(&reread), daily.content_hash);
        assert!(backtest_market(&path.display().to_string(), &reread, &grid(0.1)).is_ok());

        // A panel written before adv_20 existed: fine without impact, refused with it.
        let mut parts = daily.panel.into_parts();
        parts.adv = None;
        let old = Panel::new(parts).expect("panel");
        let path = dir.path().join("old.parquet");
        write_panel(&path, &old).expect("write");
        let reread = read_panel(&path, None).expect("read");
        assert!(reread.adv().is_none());
        let file = path.display().to_string();
        assert!(backtest_market(&file, &reread, &grid(0.0)).is_ok());
        let error = backtest_market(&file, &reread, &grid(0.1)).expect_err("impact needs traded value");
        assert!(error.contains("backtest.impact") && error.contains("adv_20"), "{error}");
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use crate::column;
    use crate::panel_file::write_panel;

    /// A panel file of the synthetic market, and its fully loaded dataset.
    fn written(dir: &Path) -> (String, Dataset) {
        let dataset = load_dataset("synth:stocks=30,days=400,seed=2", &[1, 5], None).expect("synth");
        let path = dir.join("panel.parquet");
        write_panel(&path, &dataset.panel).expect("write");
        (path.display().to_string(), dataset)
    }

    #[test]
    fn the_metadata_summary_equals_the_summary_of_the_whole_panel_for_any_features() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (uri, _) = written(dir.path());
        let subset = ["vol_20".to_string(), "ret_5".to_string(), "beta_60".to_string()];
        for features in [None, Some(&subset[..])] {
            let from_metadata = crate::panel_file::read_summary(Path::new(&uri), features).expect("read");
            assert!(from_metadata.is_some(), "prepare records a summary");
            let summary =
                open(&uri, &[1, 5], features, &DataRoots::Any).and_then(|source| source.summary()).expect("summary");
            let whole = DatasetSummary::of(&load_dataset(&uri, &[1, 5], features).expect("whole"));
            assert_eq!(summary, whole, "features {features:?}");
        }
        // So the plans are the same, job keys included.
        let spec = format!(
            "name = \"s\"\n[dataset]\npanel = {uri:?}\n[evaluation]\nstart = 2021-08-02\nend = 2021-12-30\n\
             [plan]\ntrain_windows = [126]\ncadences = [\"monthly\"]\nhorizons = [1, 5]\nprimary_horizon = 5\n\
             [metrics]\nk = 5\nbootstrap_samples = 10\nbootstrap_seed = 1\n[[models]]\nname = \"l\"\nkind = \"linear\"\nseeds = [0]\n"
        );
        let config = wf_shared::spec::SweepConfig::from_toml(&spec).expect("spec");
        let summary = open(&uri, &[1, 5], None, &DataRoots::Any).and_then(|source| source.summary()).expect("summary");
        let whole = load_dataset(&uri, &[1, 5], None).expect("whole");
        let planned = wf_shared::plan::plan(&config, &summary.plan_input()).expect("plan");
        let read = wf_shared::plan::plan_panel(&config, &whole.panel, &whole.digests).expect("plan");
        let keys = |plan: &wf_shared::plan::Plan| plan.jobs.iter().map(|j| j.key).collect::<Vec<_>>();
        assert!(!planned.jobs.is_empty());
        assert_eq!(keys(&planned), keys(&read));
        assert_eq!(format!("{:?}", planned.cells), format!("{:?}", read.cells));
        // A feature the file lacks: read whole, which names it.
        let missing = ["no_such".to_string()];
        assert_eq!(crate::panel_file::read_summary(Path::new(&uri), Some(&missing)).expect("read"), None);
        let error = open(&uri, &[1, 5], Some(&missing), &DataRoots::Any)
            .and_then(|source| source.summary())
            .expect_err("missing")
            .to_string();
        assert!(error.contains("no_such"), "{error}");
    }

    /// A file whose values changed after it was written (its metadata kept) plans with the
    /// recorded hash, and loading its values gives another hash, which workers refuse
    /// (`runtime.rs`: the loaded hash must be the job's).
    #[test]
    fn a_file_changed_after_it_was_written_no_longer_hashes_as_its_summary_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (uri, dataset) = written(dir.path());
        let path = Path::new(&uri);
        let metadata = column::key_value_metadata(path).expect("metadata");
        let mut frame = column::scan(path).expect("scan").collect().expect("frame");
        let mut values: Vec<f32> =
            column::f64s(&frame, "vol_20", path).expect("vol_20").iter().map(|v| *v as f32).collect();
        let row = values.iter().position(|v| v.is_finite()).expect("a value");
        values[row] += 0.25;
        frame.with_column(column::f32_column("vol_20", &values)).expect("replace");
        column::write_parquet(path, &mut frame, metadata).expect("rewrite");

        let planned = open(&uri, &[1, 5], None, &DataRoots::Any).and_then(|source| source.summary()).expect("summary");
        assert_eq!(planned.content_hash, dataset.content_hash, "the summary is what was written");
        let loaded = load_dataset(&uri, &[1, 5], None).expect("values");
        assert_ne!(loaded.content_hash, planned.content_hash, "the changed value changes the hash");
    }
}
