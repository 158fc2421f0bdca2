//! The thread settings a process that trains must make before any thread starts.

/// The environment variables a `main` must set before any thread starts, for a process
/// that runs `concurrent` jobs at once; only those not set already:
///
/// - `RAYON_NUM_THREADS` = the CPUs this process may use, shared among the jobs it runs at
///   once (`wf run --workers`, `wf worker --capacity`). Without it candle asks for its
///   thread count on every matrix product by parsing `/proc/cpuinfo` (measured with `perf`
///   on `wf run configs/quickstart.toml`: 43% of all CPU time, nearly all of it kernel
///   time), and counts the host's physical cores rather than the CPUs a container is
///   limited to (`available_parallelism` honours cgroup quotas and affinity masks).
///   Sharing the CPUs among concurrent jobs matters too: on 2 cores, 2 jobs each using 2
///   threads ran the jp_tse1000 grid at 5.35 s per job, 2 jobs with 1 thread each at 2.5 s.
/// - `CANDLE_BARRIER_POOL_SPIN_LIMIT` = 1000 (candle's default: 25,000). Candle's pool for
///   element-wise ops and rayon's pool for matrix products each have a thread per CPU;
///   after every op candle's threads spin, taking the cores the next matrix product needs.
///   With the shorter spin PatchTST trained ~25% faster on 2 threads
///   (`cargo bench -p wf-worker --bench train_throughput`).
///
/// A bench sets what the command it measures would.
pub fn env_for(concurrent: usize) -> Vec<(&'static str, String)> {
    let mut settings = Vec::new();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        settings.push(("RAYON_NUM_THREADS", (cpus / concurrent.max(1)).max(1).to_string()));
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        settings.push(("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000".to_string()));
    }
    settings
}
