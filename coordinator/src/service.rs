//! The gRPC handlers: convert and validate each wire message once, call the scheduler,
//! convert back. Errors become `Status` in one place ([`From<SchedulerError>`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use wf_proto::v1::sweep_service_server::SweepService;
use wf_proto::v1::worker_service_server::WorkerService;
use wf_proto::{ConversionError, PROTOCOL_VERSION, v1};
use wf_shared::job::{FailureKind, SweepId, Token, TransitionError};
use wf_shared::model::TRAINER_VERSION;
use wf_shared::plan::JobKey;

use crate::auth::{Caller, caller};
use crate::scheduler::{HeartbeatAction, Progress, Scheduler, SchedulerError, SweepStatus};

/// The longest a `LeaseJob` call may wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The most job keys a LeaseJob call may say its worker is running.
const MAX_HOLDING: usize = 4_096;

impl From<SchedulerError> for Status {
    fn from(error: SchedulerError) -> Self {
        let message = error.to_string();
        match error {
            SchedulerError::InvalidSpec(_) | SchedulerError::InvalidArgument(_) => Status::invalid_argument(message),
            SchedulerError::UnknownSweep(_) | SchedulerError::UnknownJob(_) => Status::not_found(message),
            SchedulerError::LeaseLost(TransitionError::NotHolder { .. }) => Status::permission_denied(message),
            SchedulerError::LeaseLost(_) => Status::failed_precondition(message),
            SchedulerError::Dataset { .. } => Status::failed_precondition(message),
            SchedulerError::Store(_) => Status::unavailable(message),
            SchedulerError::Artifact(_) | SchedulerError::Internal(_) => Status::internal(message),
        }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidArgument(ConversionError { field: field.into(), reason: reason.into() })
}

fn sweep_id(text: &str) -> Result<SweepId, SchedulerError> {
    text.parse().map_err(|reason: String| invalid("sweep_id", reason))
}

fn job_key(text: &str) -> Result<JobKey, SchedulerError> {
    JobKey::try_from(text.to_string()).map_err(|e| invalid("job_key", e.to_string()))
}

fn worker_id(text: &str) -> Result<&str, SchedulerError> {
    if text.is_empty() || text.len() > 200 {
        return Err(invalid("worker_id", "must be 1 to 200 characters"));
    }
    Ok(text)
}

pub fn progress_message(progress: Progress) -> v1::SweepProgress {
    let status = match progress.status {
        SweepStatus::Running => v1::SweepStatus::Running,
        SweepStatus::Finished => v1::SweepStatus::Finished,
        SweepStatus::Cancelled => v1::SweepStatus::Cancelled,
    };
    v1::SweepProgress {
        sweep_id: progress.sweep_id,
        name: progress.name,
        status: status.into(),
        total: progress.total,
        succeeded: progress.succeeded,
        running: progress.running,
        queued: progress.queued,
        dead_lettered: progress.dead_lettered,
        cancelled: progress.cancelled,
        failures: progress.failures,
        expiries: progress.expiries,
        preemptions: progress.preemptions,
        submitted_at_ms: progress.submitted_at,
    }
}

/// `SweepService` over the scheduler. A caller sees only its tenant's sweeps (an admin,
/// every tenant's): another tenant's sweep id answers NOT_FOUND, as an unknown one does.
/// Every call that acts on a sweep is recorded in the audit log (target `wf_audit`).
#[derive(Debug, Clone)]
pub struct Sweeps(pub Arc<Scheduler>, pub Arc<crate::quota::Quota>);

impl Sweeps {
    /// The sweep `text` names, if `caller` may see it.
    async fn visible(&self, caller: &Caller, text: &str) -> Result<SweepId, Status> {
        let id = sweep_id(text)?;
        let tenant = self.0.tenant_of(&id).await?;
        if caller.sees(&tenant) { Ok(id) } else { Err(SchedulerError::UnknownSweep(id.to_string()).into()) }
    }
}

/// Records who did what to which sweep.
fn audit(caller: &Caller, action: &str, sweep: &str) {
    tracing::info!(target: "wf_audit", tenant = %caller.tenant, role = caller.role.name(), action, sweep, "audit");
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<v1::SweepProgress, Status>> + Send>>;

#[tonic::async_trait]
impl SweepService for Sweeps {
    async fn submit_sweep(
        &self,
        request: Request<v1::SubmitSweepRequest>,
    ) -> Result<Response<v1::SubmitSweepResponse>, Status> {
        let caller = caller(&request);
        // Before the spec is read: a refused flood costs no parsing.
        self.1.submit(&caller.tenant)?;
        let request = request.into_inner();
        if request.spec_toml.trim().is_empty() {
            return Err(invalid("spec_toml", "must not be empty").into());
        }
        let submitted = self.0.submit_as(&request.spec_toml, &caller.tenant).await?;
        audit(&caller, "submit", &submitted.progress.sweep_id);
        Ok(Response::new(v1::SubmitSweepResponse {
            sweep_id: submitted.progress.sweep_id.clone(),
            progress: Some(progress_message(submitted.progress)),
            jobs_before_dedup: submitted.jobs_before_dedup,
            jobs: submitted.jobs,
            reused: submitted.reused,
        }))
    }

    async fn get_sweep(&self, request: Request<v1::GetSweepRequest>) -> Result<Response<v1::GetSweepResponse>, Status> {
        let caller = caller(&request);
        let id = self.visible(&caller, &request.into_inner().sweep_id).await?;
        let progress = self.0.progress(&id).await?;
        Ok(Response::new(v1::GetSweepResponse { progress: Some(progress_message(progress)) }))
    }

    async fn list_sweeps(
        &self,
        request: Request<v1::ListSweepsRequest>,
    ) -> Result<Response<v1::ListSweepsResponse>, Status> {
        let caller = caller(&request);
        let sweeps =
            self.0.list().await?.into_iter().filter(|p| caller.sees(&p.tenant)).map(progress_message).collect();
        Ok(Response::new(v1::ListSweepsResponse { sweeps }))
    }

    async fn cancel_sweep(
        &self,
        request: Request<v1::CancelSweepRequest>,
    ) -> Result<Response<v1::CancelSweepResponse>, Status> {
        let caller = caller(&request);
        let id = self.visible(&caller, &request.into_inner().sweep_id).await?;
        let progress = self.0.cancel(&id).await?;
        audit(&caller, "cancel", id.as_str());
        Ok(Response::new(v1::CancelSweepResponse { progress: Some(progress_message(progress)) }))
    }

    type WatchSweepStream = ProgressStream;

    async fn watch_sweep(
        &self,
        request: Request<v1::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        let caller = caller(&request);
        let id = self.visible(&caller, &request.into_inner().sweep_id).await?;
        let scheduler = self.0.clone();
        // Fails now, as a status, when the sweep does not exist.
        let first = scheduler.progress(&id).await?;
        // Held by the task that feeds the stream, so it is given back when the stream ends
        // or the client goes away.
        let slot = self.1.open_stream(&caller.tenant)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _slot = slot;
            let mut changes = scheduler.subscribe();
            let mut last = first;
            if sender.send(Ok(progress_message(last.clone()))).await.is_err() {
                return;
            }
            while last.status == SweepStatus::Running {
                // Changes in this process wake the watcher at once; the tick catches
                // changes made by other coordinators sharing the store.
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = sender.closed() => return,
                }
                let progress = match scheduler.progress(&id).await {
                    Ok(progress) => progress,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                if progress != last {
                    if sender.send(Ok(progress_message(progress.clone()))).await.is_err() {
                        return;
                    }
                    last = progress;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::GetReportResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let id = self.visible(&caller, &request.sweep_id).await?;
        let report = self.0.report(&id).await?;
        audit(&caller, "report", id.as_str());
        let report_json = serde_json::to_string(&report).map_err(|e| Status::internal(e.to_string()))?;
        let tables = if request.tables {
            // The same tables as the CSV files, rendered off the threads that answer calls.
            let files = tokio::task::spawn_blocking(move || {
                crate::report::files::render(&report, &[crate::report::files::Format::Parquet])
            })
            .await
            .map_err(|e| Status::internal(format!("rendering the tables panicked: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
            files
                .into_iter()
                .filter_map(|(name, parquet)| {
                    Some(v1::ReportTable { name: name.strip_suffix(".parquet")?.to_string(), parquet })
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(v1::GetReportResponse { report_json, tables }))
    }
}

/// `WorkerService` over the scheduler.
#[derive(Debug, Clone)]
pub struct Workers(pub Arc<Scheduler>);

#[tonic::async_trait]
impl WorkerService for Workers {
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        let request = request.into_inner();
        if request.protocol_version != PROTOCOL_VERSION {
            return Err(invalid(
                "protocol_version",
                format!("this coordinator speaks protocol {PROTOCOL_VERSION}, the worker {}", request.protocol_version),
            )
            .into());
        }
        if request.trainer_version != TRAINER_VERSION {
            return Err(invalid(
                "trainer_version",
                format!(
                    "this coordinator plans jobs for trainer version {TRAINER_VERSION}, the worker trains version {} (run the same release on both)",
                    request.trainer_version
                ),
            )
            .into());
        }
        if request.name.is_empty() || request.name.len() > 100 {
            return Err(invalid("name", "must be 1 to 100 characters").into());
        }
        // Worker ids are not stored: a coordinator restart keeps every worker valid.
        let suffix = blake3::hash(format!("{}{:?}", request.name, std::time::SystemTime::now()).as_bytes());
        let worker_id = format!("{}-{}", request.name, &suffix.to_hex()[..6]);
        tracing::info!(%worker_id, device = %request.device, capacity = request.capacity, "worker registered");
        let lease_ms = u32::try_from(self.0.config().lease_ms).unwrap_or(u32::MAX);
        Ok(Response::new(v1::RegisterWorkerResponse { worker_id, lease_ms }))
    }

    async fn lease_job(&self, request: Request<v1::LeaseJobRequest>) -> Result<Response<v1::LeaseJobResponse>, Status> {
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        let wait = Duration::from_millis(u64::from(request.wait_ms)).min(MAX_WAIT);
        if request.holding.len() > MAX_HOLDING {
            return Err(
                invalid("holding", format!("at most {MAX_HOLDING} job keys, got {}", request.holding.len())).into()
            );
        }
        let holding = request
            .holding
            .iter()
            .map(|key| JobKey::try_from(key.clone()).map_err(|e| Status::from(invalid("holding", e.to_string()))))
            .collect::<Result<Vec<_>, Status>>()?;
        // An older worker says nothing of what it runs: none of its leases is handed again.
        let holding = request.reports_holding.then_some(holding);
        let lease = self.0.lease_holding(worker, wait, holding.as_deref()).await?.map(v1::JobLease::from);
        Ok(Response::new(v1::LeaseJobResponse { lease }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        let key = job_key(&request.job_key)?;
        let token = Token { epoch: request.epoch, attempt: request.attempt };
        let action = match self.0.heartbeat(&key, token, worker).await? {
            HeartbeatAction::Continue => v1::HeartbeatAction::Continue,
            HeartbeatAction::Cancel => v1::HeartbeatAction::Cancel,
        };
        Ok(Response::new(v1::HeartbeatResponse { action: action.into() }))
    }

    async fn report_result(
        &self,
        request: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        let key = job_key(&request.job_key)?;
        let result = request.result.ok_or_else(|| invalid("result", "missing"))?;
        let token = Token { epoch: request.epoch, attempt: request.attempt };
        self.0.report_result(&key, token, worker, result).await?;
        let next = if request.lease_next {
            // The result is committed: a failed lease must not make the worker report
            // it again, so it is logged and the worker falls back to LeaseJob.
            match self.0.lease(worker, Duration::ZERO).await {
                Ok(next) => next.map(v1::JobLease::from),
                Err(error) => {
                    tracing::warn!(%error, "leasing the next job with a result failed");
                    None
                }
            }
        } else {
            None
        };
        Ok(Response::new(v1::ReportResultResponse { next }))
    }

    async fn report_failure(
        &self,
        request: Request<v1::ReportFailureRequest>,
    ) -> Result<Response<v1::ReportFailureResponse>, Status> {
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?.to_string();
        let key = job_key(&request.job_key)?;
        let token = Token { epoch: request.epoch, attempt: request.attempt };
        let kind = match v1::FailureKind::try_from(request.kind) {
            Ok(v1::FailureKind::Retryable) => FailureKind::Retryable,
            Ok(v1::FailureKind::Permanent) => FailureKind::Permanent,
            Ok(v1::FailureKind::Preempted) => FailureKind::Preempted,
            _ => {
                return Err(invalid(
                    "kind",
                    format!("must be retryable, permanent or preempted, got {}", request.kind),
                )
                .into());
            }
        };
        let error: String = request.error.chars().take(2_000).collect();
        self.0.report_failure(&key, token, &worker, kind, &error).await?;
        Ok(Response::new(v1::ReportFailureResponse {}))
    }
}

/// `LiveService` over the deployments a coordinator serves (`--live-artifacts`). A user
/// sees only its tenant's deployments (`wf live deploy --tenant`), an admin every
/// tenant's; another tenant's deployment answers NOT_FOUND, as an unknown one does.
#[derive(Debug, Clone)]
pub struct Predictions(pub Arc<wf_live::Predictor>);

/// The status a deployment's error answers with.
fn deployment_status(error: wf_live::DeploymentError) -> Status {
    use wf_live::DeploymentError;
    let message = error.to_string();
    match error {
        DeploymentError::Unknown(_) => Status::not_found(message),
        DeploymentError::NotProcessed(_) => Status::failed_precondition(message),
        DeploymentError::Conflict(_) => Status::aborted(message),
        DeploymentError::Invalid(_) | DeploymentError::Exists(_) | DeploymentError::Live(_) => {
            Status::invalid_argument(message)
        }
        DeploymentError::Files(_) | DeploymentError::Planning(_) | DeploymentError::Other(_) => {
            Status::internal(message)
        }
    }
}

#[tonic::async_trait]
impl wf_proto::v1::live_service_server::LiveService for Predictions {
    async fn predict(&self, request: Request<v1::PredictRequest>) -> Result<Response<v1::PredictResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let id = request.deployment;
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(invalid("deployment", "1 to 64 of a-z, A-Z, 0-9, - and _").into());
        }
        let date = match request.date.as_str() {
            "" => None,
            text => Some(
                text.parse::<chrono::NaiveDate>()
                    .map_err(|e| Status::from(invalid("date", format!("{text:?} is not YYYY-MM-DD: {e}"))))?,
            ),
        };
        let k = (request.k > 0).then_some(request.k as usize);
        let started = std::time::Instant::now();
        // A task of its own: a caller that gives up does not cancel it, so the panel it
        // is reading is still kept for the next call; a panic answers INTERNAL.
        let (predictor, deployment, asking) = (self.0.clone(), id.clone(), caller.clone());
        let prediction = tokio::spawn(async move {
            // Another tenant's deployment answers as an unknown one does.
            let tenant = predictor.tenant_of(&deployment).await?;
            if !asking.sees(&tenant) {
                return Err(wf_live::DeploymentError::Unknown(deployment));
            }
            predictor.predict(&deployment, date, k).await
        })
        .await
        .map_err(|e| Status::internal(format!("prediction panicked: {e}")))?
        .map_err(deployment_status)?;
        metrics::counter!("wf_predictions_total", "deployment" => id.clone()).increment(1);
        metrics::histogram!("wf_prediction_seconds", "deployment" => id.clone())
            .record(started.elapsed().as_secs_f64());
        audit(&caller, "predict", &id);
        Ok(Response::new(v1::PredictResponse {
            deployment: prediction.deployment,
            date: prediction.date,
            version: prediction.version,
            job_key: prediction.job_key,
            stocks: prediction.stocks as u32,
            top: prediction
                .top
                .into_iter()
                .map(|r| v1::RankedCode { rank: r.rank as u32, code: r.code, score: r.score })
                .collect(),
        }))
    }
}
