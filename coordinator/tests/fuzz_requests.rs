//! Random and mutated bytes into every request of both services, through the real
//! handlers (decode, convert, validate, call the scheduler): never a panic, every answer
//! within 100 ms, nothing queued and no sweep created.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message;
use tonic::Request;
use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::quota::{Quota, TenantLimits};
use wf_coordinator::scheduler::{JobLimit, Scheduler, SchedulerConfig, SystemClock};
use wf_coordinator::service::{Sweeps, Workers};
use wf_coordinator::store::{JobStore, MemoryJobStore, QueueDepth};
use wf_proto::v1;
use wf_proto::v1::sweep_service_server::SweepService;
use wf_proto::v1::worker_service_server::WorkerService;

struct Harness {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn JobStore>,
    sweeps: Sweeps,
    workers: Workers,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new(Default::default()));
    let artifacts = ArtifactStore::open(&dir.path().display().to_string()).expect("artifacts");
    let config =
        SchedulerConfig { reconcile_every: None, job_limit: JobLimit::Unlimited, ..SchedulerConfig::default() };
    let scheduler = Arc::new(Scheduler::new(store.clone(), artifacts, Arc::new(SystemClock), config));
    let limits = TenantLimits { streams: 1_000, submits_per_minute: 1_000_000 };
    Harness {
        runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
        store,
        sweeps: Sweeps(scheduler.clone(), Quota::new(limits)),
        workers: Workers(scheduler),
        _dir: dir,
    }
}

/// Decodes `bytes` as each request type and calls its handler; the time of the slowest.
fn call_every_rpc(h: &Harness, bytes: &[u8]) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut time = |started: Instant| slowest = slowest.max(started.elapsed());
    h.runtime.block_on(async {
        macro_rules! call {
            ($service:expr, $method:ident, $message:ty) => {
                if let Ok(message) = <$message>::decode(bytes) {
                    let started = Instant::now();
                    let _ = $service.$method(Request::new(message)).await;
                    time(started);
                }
            };
        }
        call!(h.sweeps, submit_sweep, v1::SubmitSweepRequest);
        call!(h.sweeps, get_sweep, v1::GetSweepRequest);
        call!(h.sweeps, list_sweeps, v1::ListSweepsRequest);
        call!(h.sweeps, cancel_sweep, v1::CancelSweepRequest);
        call!(h.sweeps, watch_sweep, v1::WatchSweepRequest);
        call!(h.sweeps, get_report, v1::GetReportRequest);
        call!(h.workers, register_worker, v1::RegisterWorkerRequest);
        call!(h.workers, heartbeat, v1::HeartbeatRequest);
        call!(h.workers, report_result, v1::ReportResultRequest);
        call!(h.workers, report_failure, v1::ReportFailureRequest);
        if let Ok(mut message) = v1::LeaseJobRequest::decode(bytes) {
            // Do not wait for work that will never come.
            message.wait_ms = 0;
            let started = Instant::now();
            let _ = h.workers.lease_job(Request::new(message)).await;
            time(started);
        }
    });
    slowest
}

fn untouched(h: &Harness) -> bool {
    h.runtime.block_on(async {
        h.store.depth().await.expect("depth") == QueueDepth::default()
            && h.store.sweeps().await.expect("sweeps").is_empty()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_into_every_rpc_never_panic_or_queue_anything(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let h = harness();
        let slowest = call_every_rpc(&h, &bytes);
        prop_assert!(slowest < Duration::from_millis(100), "{slowest:?}");
        prop_assert!(untouched(&h));
    }

    /// Real requests with a byte flipped and a slice repeated.
    #[test]
    fn mutated_requests_never_panic_or_queue_anything(which in 0usize..4, at in any::<usize>(), flip in 1u8.., cut in 0usize..32) {
        let mut bytes = match which {
            0 => v1::SubmitSweepRequest { spec_toml: include_str!("../../configs/quickstart.toml").replace("synth:", "synth:x") }.encode_to_vec(),
            1 => v1::ReportResultRequest { worker_id: "w".into(), job_key: "a".repeat(64), attempt: 1, epoch: 1, result: Some(wf_coordinator::testing::noop_result()), lease_next: true }.encode_to_vec(),
            2 => v1::HeartbeatRequest { worker_id: "w".into(), job_key: "a".repeat(64), attempt: 1, epoch: 1 }.encode_to_vec(),
            _ => v1::RegisterWorkerRequest { protocol_version: wf_proto::PROTOCOL_VERSION, trainer_version: 2, name: "n".into(), device: "cpu".into(), capacity: 1 }.encode_to_vec(),
        };
        let at = at % bytes.len().max(1);
        if let Some(byte) = bytes.get_mut(at) {
            *byte ^= flip;
        }
        let end = (at + cut).min(bytes.len());
        let copy = bytes[at..end].to_vec();
        bytes.extend_from_slice(&copy);
        let h = harness();
        let slowest = call_every_rpc(&h, &bytes);
        prop_assert!(slowest < Duration::from_millis(100), "{slowest:?}");
        prop_assert!(untouched(&h));
    }
}
