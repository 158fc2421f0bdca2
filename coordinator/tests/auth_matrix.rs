//! The authentication matrix: every RPC of the coordinator (a real gRPC server on a
//! loopback socket, with a tokens file) called with no token, a malformed one, a wrong
//! one, a revoked one, a user of tenant A, a user of tenant B, a worker and an admin.
//! Each call gets the status its caller deserves, and a refused call changes nothing:
//! the sweeps, the job states and the artifacts are compared before and after.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wf_coordinator::artifact::ArtifactStore;
use wf_coordinator::auth::{Auth, Role, add_token};
use wf_coordinator::scheduler::{JobLimit, Scheduler, SchedulerConfig, SystemClock};
use wf_coordinator::store::{JobStore, MemoryJobStore};
use wf_proto::auth::BearerToken;
use wf_proto::v1;
use wf_proto::v1::sweep_service_client::SweepServiceClient;
use wf_proto::v1::worker_service_client::WorkerServiceClient;

const SPEC: &str = r#"
name = "auth"
[dataset]
panel = "synth:stocks=30,days=400,seed=5"
[evaluation]
start = 2021-08-02
end = 2021-10-29
[plan]
train_windows = [126]
cadences = ["monthly"]
horizons = [5]
primary_horizon = 5
max_age = 10
embargo = 0
[metrics]
k = 5
bootstrap_samples = 20
bootstrap_seed = 1
[[models]]
name = "linear"
kind = "linear"
seeds = [0]
params = { epochs = 1 }
"#;

/// A request's token as a client sends it: none, or a header value as given.
#[derive(Debug, Clone)]
enum Credential {
    Token(Option<String>),
    Raw(&'static str),
}

/// Sends `authorization` exactly as the credential says (a malformed one too).
#[derive(Debug, Clone)]
struct RawHeader(Credential);

impl tonic::service::Interceptor for RawHeader {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match &self.0 {
            Credential::Token(token) => BearerToken::new(token.as_deref()).expect("token").call(request),
            Credential::Raw(header) => {
                let mut request = request;
                request.metadata_mut().insert("authorization", header.parse().expect("ascii"));
                Ok(request)
            }
        }
    }
}

struct Server {
    scheduler: Arc<Scheduler>,
    store: Arc<dyn JobStore>,
    dir: tempfile::TempDir,
}

async fn clients(
    url: &str,
    credential: Credential,
) -> (
    SweepServiceClient<InterceptedService<Channel, RawHeader>>,
    WorkerServiceClient<InterceptedService<Channel, RawHeader>>,
) {
    let channel = Channel::from_shared(url.to_string()).expect("url").connect().await.expect("connect");
    (
        SweepServiceClient::with_interceptor(channel.clone(), RawHeader(credential.clone())),
        WorkerServiceClient::with_interceptor(channel, RawHeader(credential)),
    )
}

/// A coordinator on a loopback socket over an in-memory store, behind `security`: the
/// server's parts, its URL, the token that stops it and its task.
async fn start(
    security: wf_coordinator::server::Security,
) -> (Server, String, tokio_util::sync::CancellationToken, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>)
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new(Default::default()));
    let artifacts = ArtifactStore::open(&dir.path().display().to_string()).expect("artifacts");
    let config =
        SchedulerConfig { reconcile_every: None, job_limit: JobLimit::Unlimited, ..SchedulerConfig::default() };
    let scheduler = Arc::new(Scheduler::new(store.clone(), artifacts, Arc::new(SystemClock), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving =
        tokio::spawn(wf_coordinator::server::serve_with(scheduler.clone(), listener, shutdown.clone(), security));
    (Server { scheduler, store, dir }, url, shutdown, serving)
}

/// What must not change after a refused call: sweeps (with their cancel flag), job
/// states, and every file under the artifact store.
async fn snapshot(server: &Server) -> String {
    let mut sweeps: Vec<String> = server
        .store
        .sweeps()
        .await
        .expect("sweeps")
        .iter()
        .map(|s| format!("{} {} {}", s.id, s.tenant, s.cancelled))
        .collect();
    sweeps.sort();
    let mut states = Vec::new();
    for sweep in server.store.sweeps().await.expect("sweeps") {
        states.push(format!("{:?}", server.store.states(&sweep.jobs).await.expect("states")));
    }
    let mut files = Vec::new();
    let mut stack = vec![server.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.components().any(|c| c.as_os_str() == "epochs") {
                files.push(format!(
                    "{} {}",
                    path.display(),
                    std::fs::read(&path).map(|b| blake3::hash(&b).to_hex().to_string()).unwrap_or_default()
                ));
            }
        }
    }
    files.sort();
    format!("{sweeps:?}\n{states:?}\n{files:?}")
}

/// Calls every RPC once with `credential`; returns each one's status code (Ok for a
/// success), in a fixed order.
async fn every_rpc(url: &str, credential: Credential, sweep: &str, job: &v1::JobLease) -> Vec<(&'static str, Code)> {
    let (mut sweeps, mut workers) = clients(url, credential).await;
    let code = |result: Result<(), tonic::Status>| result.map_or_else(|s| s.code(), |()| Code::Ok);
    let mut codes = Vec::new();
    codes.push((
        "SubmitSweep",
        code(
            sweeps.submit_sweep(v1::SubmitSweepRequest { spec_toml: SPEC.replace("auth", "other") }).await.map(|_| ()),
        ),
    ));
    codes.push(("GetSweep", code(sweeps.get_sweep(v1::GetSweepRequest { sweep_id: sweep.into() }).await.map(|_| ()))));
    codes.push(("ListSweeps", code(sweeps.list_sweeps(v1::ListSweepsRequest {}).await.map(|_| ()))));
    codes.push((
        "WatchSweep",
        code(sweeps.watch_sweep(v1::WatchSweepRequest { sweep_id: sweep.into() }).await.map(|_| ())),
    ));
    codes.push((
        "GetReport",
        code(sweeps.get_report(v1::GetReportRequest { sweep_id: sweep.into(), tables: false }).await.map(|_| ())),
    ));
    let register = v1::RegisterWorkerRequest {
        protocol_version: wf_proto::PROTOCOL_VERSION,
        trainer_version: wf_shared::model::TRAINER_VERSION,
        name: "matrix".into(),
        device: "cpu".into(),
        capacity: 1,
    };
    codes.push(("RegisterWorker", code(workers.register_worker(register).await.map(|_| ()))));
    codes.push((
        "LeaseJob",
        code(
            workers
                .lease_job(v1::LeaseJobRequest {
                    worker_id: "intruder".into(),
                    wait_ms: 0,
                    holding: Vec::new(),
                    reports_holding: false,
                })
                .await
                .map(|_| ()),
        ),
    ));
    let heartbeat = v1::HeartbeatRequest {
        worker_id: "intruder".into(),
        job_key: job.job_key.clone(),
        attempt: job.attempt,
        epoch: job.epoch,
    };
    codes.push(("Heartbeat", code(workers.heartbeat(heartbeat).await.map(|_| ()))));
    let result = v1::ReportResultRequest {
        worker_id: "intruder".into(),
        job_key: job.job_key.clone(),
        attempt: job.attempt,
        epoch: job.epoch,
        result: Some(v1::JobResult { identity: "{}".into(), ..wf_coordinator::testing::noop_result() }),
        lease_next: false,
    };
    codes.push(("ReportResult", code(workers.report_result(result).await.map(|_| ()))));
    let failure = v1::ReportFailureRequest {
        worker_id: "intruder".into(),
        job_key: job.job_key.clone(),
        attempt: job.attempt,
        epoch: job.epoch,
        kind: v1::FailureKind::Permanent.into(),
        error: "forged".into(),
    };
    codes.push(("ReportFailure", code(workers.report_failure(failure).await.map(|_| ()))));
    codes.push((
        "CancelSweep",
        code(sweeps.cancel_sweep(v1::CancelSweepRequest { sweep_id: sweep.into() }).await.map(|_| ())),
    ));
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_caller_as_its_role_and_tenant_allow_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let user_a = add_token(&tokens, "team-a", Role::User).expect("token");
    let user_b = add_token(&tokens, "team-b", Role::User).expect("token");
    let worker = add_token(&tokens, "pool", Role::Worker).expect("token");
    let admin = add_token(&tokens, "ops", Role::Admin).expect("token");
    let revoked = add_token(&tokens, "team-a", Role::User).expect("token");
    let auth = Auth::open(&tokens).expect("tokens");

    let security = wf_coordinator::server::Security { auth: Some(auth.clone()), ..Default::default() };
    let (server, url, shutdown, serving) = start(security).await;

    // Tenant A's sweep, and a lease the worker holds.
    let (mut a_sweeps, _) = clients(&url, Credential::Token(Some(user_a.clone()))).await;
    let sweep = a_sweeps
        .submit_sweep(v1::SubmitSweepRequest { spec_toml: SPEC.into() })
        .await
        .expect("A submits")
        .into_inner()
        .sweep_id;
    let (_, mut pool) = clients(&url, Credential::Token(Some(worker.clone()))).await;
    let register = v1::RegisterWorkerRequest {
        protocol_version: wf_proto::PROTOCOL_VERSION,
        trainer_version: wf_shared::model::TRAINER_VERSION,
        name: "pool".into(),
        device: "cpu".into(),
        capacity: 1,
    };
    let worker_id = pool.register_worker(register).await.expect("register").into_inner().worker_id;
    let job = pool
        .lease_job(v1::LeaseJobRequest { worker_id, wait_ms: 0, holding: Vec::new(), reports_holding: false })
        .await
        .expect("lease")
        .into_inner()
        .lease
        .expect("a job");

    // Revoked: removed from the file and the file read again.
    let kept: String = std::fs::read_to_string(&tokens)
        .expect("tokens")
        .lines()
        .filter(|line| !line.starts_with(&wf_proto::auth::token_hash(&revoked)))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&tokens, kept).expect("revoke");
    auth.reload().expect("reload");

    use Code::*;
    let unauthenticated = vec![Unauthenticated; 11];
    let refused: Vec<(&str, Credential, Vec<Code>)> = vec![
        ("no token", Credential::Token(None), unauthenticated.clone()),
        ("malformed", Credential::Raw("Basic dXNlcg=="), unauthenticated.clone()),
        ("empty bearer", Credential::Raw("Bearer "), unauthenticated.clone()),
        ("wrong", Credential::Token(Some("wf_0123".into())), unauthenticated.clone()),
        ("revoked", Credential::Token(Some(revoked.clone())), unauthenticated),
        // A worker may not touch sweeps; the sweep RPCs refuse it before anything runs.
        (
            "worker on sweeps",
            Credential::Token(Some(worker.clone())),
            vec![
                PermissionDenied,
                PermissionDenied,
                PermissionDenied,
                PermissionDenied,
                PermissionDenied,
                Ok,
                Ok,
                PermissionDenied,
                InvalidArgument,
                PermissionDenied,
                PermissionDenied,
            ],
        ),
    ];
    for (name, credential, expected) in refused {
        let before = snapshot(&server).await;
        let codes = every_rpc(&url, credential, &sweep, &job).await;
        let got: Vec<Code> = codes.iter().map(|(_, c)| *c).collect();
        assert_eq!(got, expected, "{name}: {codes:?}");
        if name != "worker on sweeps" {
            assert_eq!(snapshot(&server).await, before, "{name}: a refused call changed state");
        }
    }
    // The worker's own calls with the wrong worker id are refused by the lease check,
    // not by authentication (Heartbeat, ReportResult, ReportFailure above: PermissionDenied
    // for another worker's lease), and it registered and leased (Ok): nothing else changed.

    // Tenant B: its own submit works; A's sweep does not exist for it; its list lacks A's.
    let before = snapshot(&server).await;
    let (mut b_sweeps, mut b_workers) = clients(&url, Credential::Token(Some(user_b.clone()))).await;
    for (name, status) in [
        ("get", b_sweeps.get_sweep(v1::GetSweepRequest { sweep_id: sweep.clone() }).await.map(|_| ()).err()),
        ("watch", b_sweeps.watch_sweep(v1::WatchSweepRequest { sweep_id: sweep.clone() }).await.map(|_| ()).err()),
        (
            "report",
            b_sweeps
                .get_report(v1::GetReportRequest { sweep_id: sweep.clone(), tables: false })
                .await
                .map(|_| ())
                .err(),
        ),
        ("cancel", b_sweeps.cancel_sweep(v1::CancelSweepRequest { sweep_id: sweep.clone() }).await.map(|_| ()).err()),
    ] {
        let status = status.unwrap_or_else(|| panic!("tenant B could {name} tenant A's sweep"));
        assert_eq!(status.code(), NotFound, "{name}: {status:?}");
        let unknown =
            b_sweeps.get_sweep(v1::GetSweepRequest { sweep_id: "sw-000000000000".into() }).await.expect_err("unknown");
        assert_eq!(
            status.message().replace(&sweep, "ID"),
            unknown.message().replace("sw-000000000000", "ID"),
            "no existence oracle"
        );
    }
    let lease = b_workers
        .lease_job(v1::LeaseJobRequest {
            worker_id: "b".into(),
            wait_ms: 0,
            holding: Vec::new(),
            reports_holding: false,
        })
        .await
        .expect_err("a user may not lease");
    assert_eq!(lease.code(), PermissionDenied);
    assert_eq!(snapshot(&server).await, before, "tenant B's refused calls changed state");
    let listed = b_sweeps.list_sweeps(v1::ListSweepsRequest {}).await.expect("list").into_inner().sweeps;
    assert!(listed.is_empty(), "tenant B sees {listed:?}");
    b_sweeps
        .submit_sweep(v1::SubmitSweepRequest { spec_toml: SPEC.replace("auth", "b") })
        .await
        .expect("B submits its own");
    let listed = b_sweeps.list_sweeps(v1::ListSweepsRequest {}).await.expect("list").into_inner().sweeps;
    assert_eq!(listed.len(), 1);
    assert_ne!(listed[0].sweep_id, sweep);

    // Tenant A sees its sweep, the admin sees both and may cancel A's.
    let (mut admin_sweeps, _) = clients(&url, Credential::Token(Some(admin.clone()))).await;
    a_sweeps.get_sweep(v1::GetSweepRequest { sweep_id: sweep.clone() }).await.expect("A reads its sweep");
    let mine = a_sweeps.list_sweeps(v1::ListSweepsRequest {}).await.expect("list").into_inner().sweeps;
    assert_eq!(mine.iter().map(|s| s.sweep_id.as_str()).collect::<Vec<_>>(), vec![sweep.as_str()], "{mine:?}");
    let all = admin_sweeps.list_sweeps(v1::ListSweepsRequest {}).await.expect("list").into_inner().sweeps;
    let names: std::collections::BTreeSet<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, std::collections::BTreeSet::from(["auth", "b"]), "the admin sees every tenant: {all:?}");
    admin_sweeps.cancel_sweep(v1::CancelSweepRequest { sweep_id: sweep.clone() }).await.expect("the admin cancels");

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    let _ = server.scheduler;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_hold_every_stream_or_flood_submits_and_others_keep_their_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let user_a = add_token(&tokens, "team-a", Role::User).expect("token");
    let user_b = add_token(&tokens, "team-b", Role::User).expect("token");
    let auth = Auth::open(&tokens).expect("tokens");
    let limits = wf_coordinator::quota::TenantLimits { streams: 2, submits_per_minute: 3 };
    let security = wf_coordinator::server::Security { auth: Some(auth), tls: None, limits };
    let (server, url, shutdown, serving) = start(security).await;
    let store = server.store.clone();
    let (mut a, _) = clients(&url, Credential::Token(Some(user_a))).await;
    let (mut b, _) = clients(&url, Credential::Token(Some(user_b))).await;
    let submit = |name: &str| v1::SubmitSweepRequest { spec_toml: SPEC.replace("\"auth\"", &format!("\"{name}\"")) };

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(a.submit_sweep(submit(&format!("a{n}"))).await.expect("within the rate").into_inner().sweep_id);
    }
    let flood = a.submit_sweep(submit("a3")).await.expect_err("the fourth in a minute");
    assert_eq!(flood.code(), Code::ResourceExhausted, "{flood:?}");
    assert!(flood.message().contains("--max-submits-per-minute"), "{}", flood.message());
    assert_eq!(store.sweeps().await.expect("sweeps").len(), 3, "the refused submit queued nothing");
    let b_sweep = b.submit_sweep(submit("b0")).await.expect("tenant B has its own rate").into_inner().sweep_id;

    let watch = |id: &str| v1::WatchSweepRequest { sweep_id: id.to_string() };
    let first = a.watch_sweep(watch(&ids[0])).await.expect("first stream").into_inner();
    let second = a.watch_sweep(watch(&ids[1])).await.expect("second stream").into_inner();
    let third = a.watch_sweep(watch(&ids[2])).await.expect_err("a third stream");
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("--max-streams-per-tenant 2"), "{}", third.message());
    let theirs = b.watch_sweep(watch(&b_sweep)).await.expect("tenant B still gets a stream").into_inner();
    // Closing a stream gives its slot back (once the server notices the client left).
    drop(first);
    let started = std::time::Instant::now();
    loop {
        match a.watch_sweep(watch(&ids[2])).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(started.elapsed() < Duration::from_secs(10), "the closed stream's slot never came back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    drop((second, theirs));
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
}
