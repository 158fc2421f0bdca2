//! A hostile worker against a real coordinator process: a 64 MiB `ReportResult` (the
//! largest message the coordinator accepts, less its framing) built to decode into
//! gigabytes is refused before it is materialised, and the coordinator's peak resident
//! memory (VmHWM) grows by less than 256 MiB. One is 33 million empty ages; the other a
//! well-formed result of a real job identity whose drift claims 64 MiB of day counts.

use std::time::{Duration, Instant};

use prost::Message;
use wf_proto::v1;
use wf_tests::{Process, free_port, wait_until};

const LIMIT: Duration = Duration::from_secs(120);

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in proc status")
}

fn length_delimited(field: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![field << 3 | 2];
    let mut length = payload.len() as u64;
    while length >= 0x80 {
        out.push((length as u8) | 0x80);
        length >>= 7;
    }
    out.push(length as u8);
    out.extend_from_slice(payload);
    out
}

/// Raw bytes sent as a `ReportResultRequest` (so the test can build what prost would not).
#[derive(Clone, Debug, Default)]
struct Raw(Vec<u8>);

impl Message for Raw {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, _tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

async fn report(url: &str, body: Vec<u8>) -> tonic::Status {
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_string()).expect("url").connect().await.expect("connect");
    let mut client = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    client.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/walkforward.v1.WorkerService/ReportResult");
    let codec = raw_codec();
    client
        .unary::<Raw, v1::ReportResultResponse, _>(tonic::Request::new(Raw(body)), path, codec)
        .await
        .expect_err("the hostile report is refused")
}

fn raw_codec() -> wf_proto::budget::BudgetCodec<Raw, v1::ReportResultResponse> {
    wf_proto::budget::BudgetCodec::default()
}

/// The identity of a quickstart job reading one feature and scoring 30 calendar days.
fn one_feature_identity() -> String {
    let config = wf_shared::spec::SweepConfig::from_toml(include_str!("../../../configs/quickstart.toml"))
        .expect("quickstart spec");
    let first: chrono::NaiveDate = "2022-01-03".parse().expect("date");
    wf_shared::plan::JobIdentity {
        format: wf_shared::plan::JOB_FORMAT.into(),
        trainer: wf_shared::model::TRAINER_VERSION,
        data: wf_shared::plan::DataRead { days: [first, first], digest: wf_shared::DatasetHash::from_bytes([7; 32]) },
        features: vec!["ret_1".into()],
        model: wf_shared::model::ModelSpec::resolve(0, &config).expect("model"),
        seed: 1,
        train: [first, first],
        horizons: config.horizons.clone(),
        primary_horizon: config.primary_horizon,
        k: config.k,
        embargo: 0,
        score: Some([first, first + chrono::Days::new(29)]),
        ranks: None,
    }
    .to_canonical()
}

#[test]
fn a_64_mib_report_built_to_decode_into_gigabytes_is_refused_within_a_256_mib_memory_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let coordinator = Process::start(dir.path(), &["coordinator", "--listen", &listen, "--artifacts", "a"], &[]);
    wait_until("the coordinator listens", LIMIT, || coordinator.stdout().contains("listening on"));
    let url = format!("http://{listen}");
    let pid = coordinator.pid();

    // 33 million empty AgeMetrics (two bytes each): ~2.7 GB once decoded. The message is
    // 64 MiB less a few bytes of its own headers, the server's limit.
    let size = (64 << 20) - 16;
    let mut ages = Vec::with_capacity(size);
    while ages.len() < size - 16 {
        ages.extend_from_slice(&[0x12, 0x00]);
    }
    let empty_ages = length_delimited(4, &ages);
    drop(ages);
    // Then one age and a drift of one feature whose day counts claim 64 MiB, from a job
    // (a real identity) whose shape allows 10 bytes of them.
    let drift = [
        vec![0x18, 0x01, 0x20, 0x01, 0x38, 0x01],
        length_delimited(5, &[1; 10]),
        length_delimited(8, &vec![0u8; size - 2_048]),
    ]
    .concat();
    let huge_drift = length_delimited(
        4,
        &[vec![0x12, 0x00], length_delimited(3, &drift), length_delimited(4, one_feature_identity().as_bytes())]
            .concat(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let before = status_kb(pid, "VmHWM:");
    for (body, field) in [(empty_ages, "result.ages"), (huge_drift, "result.drift.day_counts_fixed")] {
        let started = Instant::now();
        let status = runtime.block_on(report(&url, body));
        eprintln!("refused in {:?}: {} {}", started.elapsed(), status.code(), status.message());
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let after = status_kb(pid, "VmHWM:");
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("coordinator peak RSS: {before} kB before, {after} kB after: +{growth_mib:.0} MiB");
    assert!(growth_mib < 256.0, "peak resident memory grew by {growth_mib:.0} MiB");
    // Still serving.
    let health = wf_tests::wf(dir.path(), &["list", "--coordinator", &url]);
    assert!(health.succeeded(), "{health:?}");
}
