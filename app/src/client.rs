//! Client-side helpers shared by `wf submit/status/run`: watching a sweep and fetching
//! its report through `SweepService`.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wf_proto::auth::BearerToken;
use wf_proto::v1;
use wf_proto::v1::sweep_service_client::SweepServiceClient;

/// A `SweepService` client that sends its token (if any) with every call.
pub type SweepClient = SweepServiceClient<InterceptedService<Channel, BearerToken>>;

/// Connects to the coordinator at `url` with `token`, over TLS for `https://` (see
/// [`wf_proto::tls`]).
pub async fn connect(url: &str, token: BearerToken, tls: &wf_proto::tls::ClientTls) -> anyhow::Result<SweepClient> {
    Ok(SweepServiceClient::with_interceptor(channel(url, tls).await?, token)
        .max_decoding_message_size(256 * 1024 * 1024))
}

/// A channel to the coordinator at `url`, over TLS for `https://`.
pub async fn channel(url: &str, tls: &wf_proto::tls::ClientTls) -> anyhow::Result<Channel> {
    wf_proto::tls::endpoint(url, tls)
        .map_err(|e| anyhow::anyhow!(e))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))
}

use wf_coordinator::report::SweepReport;

/// Follows `WatchSweep` until the sweep ends; cancels it if `interrupt` fires first.
/// Returns the last progress seen.
pub async fn watch(
    client: &mut SweepClient,
    sweep_id: &str,
    interrupt: &CancellationToken,
    on_progress: &mut impl FnMut(&v1::SweepProgress),
) -> anyhow::Result<v1::SweepProgress> {
    let mut stream = client
        .watch_sweep(v1::WatchSweepRequest { sweep_id: sweep_id.to_string() })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    let mut last = None;
    loop {
        let message = tokio::select! {
            () = interrupt.cancelled() => {
                let cancelled = client
                    .cancel_sweep(v1::CancelSweepRequest { sweep_id: sweep_id.to_string() })
                    .await
                    .map_err(|status| anyhow::anyhow!("{}", status.message()))?
                    .into_inner();
                let progress = cancelled.progress.unwrap_or_default();
                on_progress(&progress);
                return Ok(progress);
            }
            message = stream.message() => message.map_err(|status| anyhow::anyhow!("{}", status.message()))?,
        };
        let Some(progress) = message else { break };
        on_progress(&progress);
        last = Some(progress);
    }
    last.context("the coordinator closed the progress stream without an event")
}

/// The sweep's report.
pub async fn report(client: &mut SweepClient, sweep_id: &str) -> anyhow::Result<SweepReport> {
    let response = client
        .get_report(v1::GetReportRequest { sweep_id: sweep_id.to_string(), tables: false })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    SweepReport::from_json(&response.report_json).context("the coordinator sent an unreadable report")
}
