//! Test support shared by this crate's tests, benchmarks and the end-to-end tests: a
//! real `redis-server` started for the test, on a unix socket in a temporary directory,
//! persistence off, killed when dropped; and a result of realistic size for benchmarks
//! that measure everything but training.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// For the benchmarks on real data: the jp_tse1000 panel prepared into `dir` from
/// `../shared/data/jp_tse1000/jp_tse1000_daily.parquet` (or `WF_BENCH_OHLCV`), and the
/// text of the spec `configs/…` (`spec`, relative to the repository) reading it; `None`,
/// said on stdout, without the data.
pub fn jp_bench_spec(
    dir: &std::path::Path,
    spec: &str,
) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let input = std::env::var("WF_BENCH_OHLCV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data/jp_tse1000/jp_tse1000_daily.parquet"));
    if !input.exists() {
        println!("skipped: no jp_tse1000 data at {} (set WF_BENCH_OHLCV)", input.display());
        return Ok(None);
    }
    let panel = dir.join("jp_panel.parquet");
    let started = Instant::now();
    let horizons = wf_shared::PanelSpec { horizons: vec![1, 5, 10, 20] };
    wf_data::prepare::prepare(&input, &panel, &horizons, |_| {})?;
    println!("panel prepared in {:.1} s (not part of the figures)", started.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(root.join(spec))?;
    Ok(Some(text.replace("panel = \"out/jp_panel.parquet\"", &format!("panel = {:?}", panel.display().to_string()))))
}

/// A private `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    socket: PathBuf,
    /// With an append-only file (`appendfsync everysec`), kept across [`Self::restart`].
    aof: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`, or `WF_REDIS_SERVER`), persistence off, and
    /// waits until it answers, at most 10 seconds.
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// [`Self::start`] with an append-only file fsynced every second, as production
    /// runs it: a restart ([`Self::kill`], [`Self::restart`]) loads it back, and may
    /// lose the writes of the last second.
    pub fn start_persistent() -> Result<Self, String> {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("failed to create a temporary directory: {e}"))?;
        let socket = dir.path().join("redis.sock");
        let child = Self::spawn(&socket, dir.path(), aof)?;
        let server = Self { child, socket, aof, dir };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(socket: &std::path::Path, dir: &std::path::Path, aof: bool) -> Result<Child, String> {
        let binary = std::env::var("WF_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let persistence: &[&str] =
            if aof { &["--appendonly", "yes", "--appendfsync", "everysec"] } else { &["--appendonly", "no"] };
        Command::new(&binary)
            .args(["--port", "0", "--save", "", "--unixsocketperm", "700"])
            .args(persistence)
            .arg("--unixsocket")
            .arg(socket)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("failed to start {binary} (install redis-server): {e}"))
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.socket.exists() && self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no shutdown save).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts the server again on the same socket and directory (with its AOF, if
    /// persistent), and waits until it answers.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.child = Self::spawn(&self.socket, self.dir.path(), self.aof)?;
        self.wait_ready()
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else { return false };
        let Ok(mut connection) = client.get_connection() else { return false };
        redis::cmd("PING").query::<String>(&mut connection).is_ok()
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A result as a worker would report it, with metrics at 63 ages (at two horizons), drift
/// of 12 features, the top 128 of 1,000 stocks ranked and the 8 style exposures at each age, the importance
/// of each feature, converted to the wire as
/// `wf-worker` converts its results (no identity).
pub fn noop_result() -> wf_proto::v1::JobResult {
    use wf_shared::age::{JobResult, TrainingSummary};
    use wf_shared::drift::DriftPath;
    use wf_shared::metric::DayMetrics;
    let bins = |offset: u32| std::array::from_fn(|b| 90 + (b as u32 * 7 + offset) % 23);
    let day = DayMetrics {
        p_at_k: 0.1,
        base_rate: 0.1,
        median_p_at_k: 0.5,
        median_base_rate: 0.5,
        rank_ic: Some(0.02),
        spread: 0.001,
        top_k_mean: 0.002,
        stocks: 1000,
        k: 100,
    };
    wf_proto::v1::JobResult::from(JobResult {
        training: TrainingSummary {
            epochs: 1,
            best_epoch: 1,
            best_validation_loss: 0.5,
            seconds: 0.0,
            device: "noop".into(),
            training_days: 252,
            validation_days: 25,
        },
        ages: (0..63).map(|age| Some(DayMetrics { p_at_k: 0.1 + f64::from(age % 7) * 0.01, ..day })).collect(),
        drift: DriftPath {
            training: (0..12).map(bins).collect(),
            days: (0..63).map(|day| (0..12).map(|f| bins(f + day)).collect()).collect(),
        },
        rankings: (0..63u32).map(|age| (0..128u32).map(|rank| (rank * 7 + age * 13) % 1000).collect()).collect(),
        exposures: wf_shared::exposure::Exposures {
            factors: wf_shared::exposure::STYLE_FACTORS.iter().map(|f| f.to_string()).collect(),
            values: (0..63 * 8).map(|i| (i * 37 % 2001) as i16 - 1000).collect(),
        },
        // The quickstart's other horizon (its identities train horizons 1 and 5).
        horizons: vec![wf_shared::age::HorizonAges {
            horizon: 1,
            ages: (0..63).map(|age| Some(DayMetrics { p_at_k: 0.1 + f64::from(age % 5) * 0.01, ..day })).collect(),
        }],
        importance: wf_shared::importance::Importance {
            days: 21,
            base_loss: 1.25,
            base_rank_ic: 0.03,
            loss: (0..12).map(|f| f as f32 * 0.001).collect(),
            rank_ic: (0..12).map(|f| f as f32 * 0.0001).collect(),
        },
    })
}
