//! The coordinator's side of the live deployments (`wf_live`): the artifact store keeps
//! their files (under `live/<id>/`), and [`QueueTrainer`] has the workers train their
//! retrains through the scheduler's queue.

use std::sync::Arc;

use bytes::Bytes;
use wf_live::{DeploymentError, FilesError, LiveFiles, Opened, Retrainer};
use wf_shared::plan::{Job, JobKey};

use crate::artifact::ArtifactStore;
use crate::scheduler::{Retrain, RetrainRequest, Scheduler};

#[async_trait::async_trait]
impl LiveFiles for ArtifactStore {
    async fn ids(&self) -> Result<Vec<String>, FilesError> {
        self.live_ids().await.map_err(FilesError::new)
    }

    async fn get(&self, id: &str, name: &str) -> Result<Option<Bytes>, FilesError> {
        self.live_file(id, name).await.map_err(FilesError::new)
    }

    async fn put(&self, id: &str, name: &str, bytes: Bytes, create_only: bool) -> Result<bool, FilesError> {
        self.put_live_file(id, name, bytes, create_only).await.map_err(FilesError::new)
    }
}

/// Trains on the workers: each retrain is queued through the coordinator's scheduler as
/// a training-only job ([`Scheduler::retrain`]), on the queue and workers of the sweeps,
/// and its committed model is returned once a worker reported it. A coordinator's
/// advance loop uses it unless started with `--live-retrain local`.
#[derive(Debug)]
pub struct QueueTrainer {
    scheduler: Arc<Scheduler>,
}

impl QueueTrainer {
    pub fn new(scheduler: Arc<Scheduler>) -> Self {
        Self { scheduler }
    }
}

#[async_trait::async_trait]
impl Retrainer for QueueTrainer {
    async fn model_file(&self, opened: &Opened, job: &Job) -> Result<Option<Vec<u8>>, DeploymentError> {
        let date = opened.dataset.panel.calendar().date(job.retrain_day).ok_or_else(|| {
            DeploymentError::Invalid(format!("the retrain of day {} is past the panel", job.retrain_day))
        })?;
        let request = RetrainRequest {
            name: format!("live {} retrain {date}", opened.record.id),
            spec_toml: opened.record.spec.clone(),
            tenant: opened.record.tenant.clone(),
            dataset: wf_shared::DatasetRef {
                uri: opened.config.panel.clone(),
                content_hash: opened.dataset.content_hash,
            },
            line: wf_shared::plan::TrainingLine {
                model: job.model as u32,
                seed: job.seed,
                window: job.window,
                retrain: date,
            },
            key: job.key,
            identity: job.identity.clone(),
            stocks: opened.dataset.panel.codes().len(),
        };
        match self.scheduler.retrain(&request).await {
            Ok(Retrain::Trained(model)) => Ok(Some(model)),
            Ok(Retrain::Pending) => Ok(None),
            Ok(Retrain::Failed(error)) => Err(DeploymentError::Invalid(format!(
                "retrain job {} failed on the workers: {error} (queued again)",
                job.key.short()
            ))),
            Err(error) => Err(DeploymentError::Other(anyhow::anyhow!("cannot queue the retrain: {error}"))),
        }
    }

    async fn still_training(&self, key: &JobKey) -> bool {
        self.scheduler.still_training(key).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::Device;
    use wf_live::{DeploymentRecord, Deployments, LiveFiles, Predictor};

    use super::ArtifactStore;

    /// The artifact store keeps deployments' files as every `LiveFiles` adapter must,
    /// also when it holds a sweep's files and reports beside them (none is a deployment).
    #[tokio::test]
    async fn the_artifact_store_conforms_to_live_files() {
        let dir = tempfile::tempdir().expect("dir");
        let store = ArtifactStore::open(&dir.path().display().to_string()).expect("store");
        let sweep = wf_shared::job::SweepId::from_entropy(7);
        store.put_sweep_file(&sweep, "manifest.json", bytes::Bytes::from_static(b"{}")).await.expect("written");
        store.put_report(&sweep, "report.json", bytes::Bytes::from_static(b"{}")).await.expect("written");
        wf_live::conformance(&store).await;
    }

    /// A deployment made and advanced over the artifact store in one process is served by
    /// a predictor over another store on the same folder (a coordinator beside `wf live`):
    /// the files, their names and their bytes are the ones the other wrote.
    #[tokio::test]
    async fn a_deployment_in_the_artifact_store_is_served_from_another_process_view() {
        const SPEC: &str = r#"name = "artifact-deployment"
[dataset]
panel = "synth:stocks=20,days=400,seed=5"
[evaluation]
start = 2021-08-02
end = 2022-02-28
[plan]
train_windows = [126]
cadences = ["monthly"]
horizons = [5]
primary_horizon = 5
max_age = 42
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
        let dir = tempfile::tempdir().expect("dir");
        let open = || -> Arc<dyn LiveFiles> {
            Arc::new(ArtifactStore::open(&dir.path().display().to_string()).expect("store"))
        };
        let writer = Deployments::new(open());
        let record = DeploymentRecord {
            id: "art".into(),
            spec: SPEC.into(),
            model: "linear".into(),
            window: 126,
            seed: 0,
            policy: "monthly".into(),
            from: chrono::NaiveDate::from_ymd_opt(2021, 8, 2).expect("date"),
            shadow_days: 0,
            tenant: wf_shared::LOCAL_TENANT.into(),
        };
        writer.deploy(record, &Device::Cpu).await.expect("deployed");
        let trainer = writer.local_trainer(Device::Cpu);
        let advanced = writer.advance("art", None, &Device::Cpu, &trainer, &mut |_, _, _| {}).await.expect("advanced");
        assert!(advanced.days > 50, "{} days advanced", advanced.days);
        let versions = advanced.opened.state.as_ref().expect("state").versions.len();
        assert!(versions > 2, "{versions} versions");
        for number in 1..=versions {
            let file = dir.path().join(format!("live/art/versions/{number}.safetensors"));
            assert!(file.is_file(), "{} is missing", file.display());
        }

        let reader = Predictor::new(Deployments::new(open()), Device::Cpu);
        assert_eq!(reader.deployments().ids().await.expect("ids"), ["art"]);
        let prediction = reader.predict("art", None, Some(3)).await.expect("a prediction");
        let state = writer.state("art").await.expect("read").expect("state");
        assert_eq!(prediction.version, state.version_on(state.next_day - 1).expect("a version").number);
        assert_eq!((prediction.top.len(), prediction.stocks), (3, 20));
        let written =
            dir.path().join(format!("live/art/predictions/{}-v{}.parquet", prediction.date, prediction.version));
        assert!(std::fs::metadata(&written).expect("the predictions file").len() > 0);
    }
}
