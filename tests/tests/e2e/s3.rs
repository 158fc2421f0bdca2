//! The `s3` artifact store against a real S3-compatible server: `moto` in server mode
//! (PyPI `moto[server]`, installed in the CI venv by `.ci/run`), on a loopback port.
//! Skipped with a printed reason where moto is not installed, failed in CI
//! (`WF_REQUIRE_TOOLS`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::testing::RedisServer;
use wf_shared::plan::JobKey;
use wf_tests::{free_port, http_request, required_tool, wait_until, wf_in_env};

use super::cluster::{Cluster, LIMIT, flush_redis_mid_sweep_and_finish, spec};

/// A `moto_server` process with one empty bucket, killed when dropped.
struct Moto {
    child: Child,
    address: String,
}

const BUCKET: &str = "wf-e2e";

impl Moto {
    fn start() -> Option<Self> {
        let program = required_tool("WF_MOTO_SERVER", "moto_server", ".ci/run installs moto[server] in its venv")?;
        let port = free_port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Self { child, address: format!("127.0.0.1:{port}") };
        wait_until("moto listens", Duration::from_secs(60), || http_request(&moto.address, "GET", "/").is_ok());
        let (code, body) = http_request(&moto.address, "PUT", &format!("/{BUCKET}")).expect("create the bucket");
        assert_eq!(code, 200, "bucket creation: {body}");
        Some(moto)
    }

    /// The settings a `wf` process reads from its environment to reach this server.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", format!("http://{}", self.address)),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Every key under `prefix` in the bucket (ListObjectsV2: these tests stay within
    /// its first page of 1,000 keys).
    fn keys(&self, prefix: &str) -> Vec<String> {
        let (code, body) =
            http_request(&self.address, "GET", &format!("/{BUCKET}?list-type=2&prefix={prefix}")).expect("list");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("<IsTruncated>false</IsTruncated>"), "more than one page: {body}");
        between(&body, "<Key>", "</Key>")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The texts between each `open` and the next `close`.
fn between(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open).skip(1).filter_map(|part| part.split_once(close).map(|(value, _)| value.to_string())).collect()
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// "N distinct trainings ..., R reused" of `wf run`'s summary line.
fn trainings_and_reused(stderr: &str) -> (usize, usize) {
    let number_before = |marker: &str| -> usize {
        let head = &stderr[..stderr.find(marker).unwrap_or_else(|| panic!("no {marker:?} in {stderr}"))];
        head.rsplit(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty()).and_then(|n| n.parse().ok()).expect("count")
    };
    (number_before(" distinct trainings"), number_before(" reused"))
}

/// `wf run --artifacts s3://…` writes the sweep's manifest, every result and the report
/// into the bucket, and a second run reads every result back from it.
#[test]
fn wf_run_keeps_manifests_results_and_reports_in_a_bucket() {
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("spec.toml"), spec("\"monthly\"", 3)).expect("spec");
    let env = moto.env();
    let store = format!("s3://{BUCKET}/team-a");
    let args = ["run", "spec.toml", "--workers", "2", "--artifacts", &store];
    let first = wf_in_env(dir.path(), &args, &borrowed(&env), LIMIT);
    assert!(first.succeeded(), "{first:?}");
    let (jobs, reused) = trainings_and_reused(&first.stderr);
    assert!(jobs >= 3 && reused == 0, "{}", first.stderr);
    assert!(first.stderr.contains(&format!("report: {store}/reports/")), "{}", first.stderr);

    let results: Vec<String> = moto.keys("team-a/results/").into_iter().filter(|k| k.ends_with(".pb")).collect();
    assert_eq!(results.len(), jobs, "one result object per training: {results:?}");
    let sweeps = moto.keys("team-a/sweeps/");
    assert!(sweeps.iter().any(|k| k.ends_with("/manifest.json")), "{sweeps:?}");
    let reports = moto.keys("team-a/reports/");
    for name in ["report.json", "report.html"] {
        assert!(reports.iter().any(|k| k.ends_with(&format!("/{name}"))), "{name} in {reports:?}");
    }
    assert!(!dir.path().join("out/run/artifacts").exists(), "nothing written locally");

    let second = wf_in_env(dir.path(), &args, &borrowed(&env), LIMIT);
    assert!(second.succeeded(), "{second:?}");
    assert_eq!(trainings_and_reused(&second.stderr), (jobs, jobs), "every result read back from the bucket");
    assert_eq!(moto.keys("team-a/results/").len(), results.len(), "nothing written twice");
    assert_eq!(second.stdout, first.stdout, "the same tables from the reused results");
}

/// A cluster whose artifact store is a bucket: Redis loses all its data mid-sweep, the
/// coordinator rebuilds the job states from the results in the bucket, and the sweep
/// completes with every result, none trained twice.
#[test]
fn a_cluster_on_a_bucket_is_reconciled_from_it_after_redis_loses_its_data() {
    let Some(moto) = Moto::start() else { return };
    let env = moto.env();
    let store = format!("s3://{BUCKET}/cluster");
    let options = ["--reconcile-seconds", "1"];
    let cluster =
        Cluster::start_on_store(RedisServer::start().expect("redis"), 5_000, &options, &store, &borrowed(&env));
    let _worker = cluster.worker(&[]);
    let id = cluster.submit(&spec("\"monthly\"", 30));
    let results = || moto.keys("cluster/results/").into_iter().filter(|k| k.ends_with(".pb")).count();
    flush_redis_mid_sweep_and_finish(&cluster, &id, results);
    assert!(moto.keys(&format!("cluster/sweeps/{id}/")).iter().any(|k| k.ends_with("manifest.json")));
}

/// The store's guarantees on a bucket: a create-only write never replaces what is there
/// (conditional put, `If-None-Match: *`), lease epochs only grow, and a refused result is
/// moved aside.
#[test]
fn create_only_writes_hold_on_a_bucket() {
    let Some(moto) = Moto::start() else { return };
    let store =
        ArtifactStore::open_with(&format!("s3://{BUCKET}/store"), moto.env()).expect("the bucket opens as a store");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let first = bytes::Bytes::from_static(b"first");
        assert!(store.put_live_file("d1", "versions/1.bin", first.clone(), true).await.expect("put"));
        let second = bytes::Bytes::from_static(b"second");
        assert!(!store.put_live_file("d1", "versions/1.bin", second, true).await.expect("put"), "refused");
        assert_eq!(store.live_file("d1", "versions/1.bin").await.expect("get"), Some(first), "kept");

        let epochs = [store.next_epoch().await.expect("epoch"), store.next_epoch().await.expect("epoch")];
        assert_eq!(epochs[1], epochs[0] + 1, "{epochs:?}");

        let key = JobKey::try_from("0123456789abcdef".repeat(4)).expect("a key");
        store.put_result(&key, bytes::Bytes::from_static(b"result")).await.expect("put result");
        assert!(store.has_result(&key).await.expect("head"));
        let moved = store.set_aside_result(&key, 42).await.expect("set aside");
        assert_eq!(moved.as_deref(), Some(format!("store/refused/{key}.42.pb").as_str()));
        assert!(!store.has_result(&key).await.expect("head"));
    });
    assert_eq!(moto.keys("store/refused/").len(), 1);
}
