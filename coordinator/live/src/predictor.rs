//! Serving predictions, and advancing the deployments whose panels grew.

use std::collections::HashMap;

use candle_core::Device;
use serde::Serialize;
use wf_data::dataset::Dataset;
use wf_shared::plan::JobKey;
use wf_shared::spec::SweepConfig;
use wf_worker::model::Ranker;

use crate::Boxed;
use crate::metrics::publish;
use crate::ranking::rank_day;
use crate::record::{DeploymentError, Result, file_stamp};
use crate::store::Deployments;
use crate::trainer::Retrainer;

/// One ranked code of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub rank: usize,
    pub code: String,
    pub score: f64,
}

/// A deployment's ranking of a day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub deployment: String,
    pub date: String,
    pub version: u32,
    pub job_key: String,
    /// Stocks ranked that day.
    pub stocks: usize,
    /// Scoring and ranking time (the model and panel in memory).
    pub milliseconds: f64,
    pub top: Vec<Ranked>,
}

/// What a [`Predictor`] keeps of a deployment between calls.
pub(crate) struct Loaded {
    /// The tenant of its record (fixed at deploy).
    tenant: String,
    config: SweepConfig,
    dataset: std::sync::Arc<Dataset>,
    /// The panel file's modification time and length when it was read (`None`: a
    /// synthetic panel): a file grown by `wf live ingest` or prepared again is read again.
    stamp: Option<(std::time::SystemTime, u64)>,
}

/// Serves predictions: each deployment's panel and each version's model are loaded once
/// and kept (weights never change; a deployment's state is read at every call, so a
/// promotion or rollback by another process shows at once; its panel is read again when
/// the file changed, so days ingested and advanced by another process show too).
///
/// Async, on the caller's runtime: a panel is read and a day ranked on its blocking
/// pool; [`Self::advance_pending`] scores days on the task that awaits it (see
/// [`Deployments`]).
pub struct Predictor {
    deployments: Deployments,
    device: Device,
    /// Trains what [`Self::advance_pending`] decides ([`LocalTrainer`] on `device`
    /// unless set).
    trainer: Box<dyn Retrainer>,
    /// Deployments whose advance waits for a retrain on the workers: since when, and its
    /// job.
    waiting: std::sync::Mutex<HashMap<String, (std::time::Instant, JobKey)>>,
    loaded: std::sync::Mutex<HashMap<String, std::sync::Arc<Loaded>>>,
    models: std::sync::Mutex<HashMap<(String, u32), std::sync::Arc<dyn Ranker>>>,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor").field("deployments", &self.deployments).finish_non_exhaustive()
    }
}

/// The largest `k` a prediction may ask for.
pub const MAX_PREDICTION_K: usize = 100_000;

impl Predictor {
    pub fn new(deployments: Deployments, device: Device) -> Self {
        Self {
            trainer: Box::new(deployments.local_trainer(device.clone())),
            deployments,
            device,
            waiting: Default::default(),
            loaded: Default::default(),
            models: Default::default(),
        }
    }

    /// Has `trainer` train the retrains [`Self::advance_pending`] decides.
    pub fn with_trainer(self, trainer: Box<dyn Retrainer>) -> Self {
        Self { trainer, ..self }
    }

    pub fn deployments(&self) -> &Deployments {
        &self.deployments
    }

    /// Publishes every deployment's `wf_live_*` metrics from its stored state (see
    /// `wf_coordinator::telemetry`); a deployment that cannot be read is logged and skipped.
    pub fn publish_metrics(&self) -> Boxed<'_, ()> {
        Box::pin(self.publishing_metrics())
    }

    async fn publishing_metrics(&self) {
        let ids = match self.deployments.ids().await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "cannot list the live deployments");
                return;
            }
        };
        for id in ids {
            match self.deployments.state(&id).await {
                Ok(Some(state)) => {
                    // Dates need the deployment's calendar: its panel, loaded once and kept.
                    let loaded = self.loaded(&id).await;
                    if let Err(error) = &loaded {
                        tracing::warn!(deployment = %id, %error, "cannot load the deployment's panel: no dates");
                    }
                    let calendar = loaded.as_ref().ok().map(|l| l.dataset.panel.calendar());
                    publish(&id, &state, calendar);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(deployment = %id, %error, "cannot read the deployment"),
            }
        }
    }

    /// Advances every deployment whose panel holds days after its last processed one, as
    /// `wf live advance` does, its retrains trained by this predictor's trainer (up to
    /// one the workers are still training: `wf_live_retrain_waiting_seconds`). Returns
    /// the days processed per deployment advanced. A deployment that cannot be advanced is
    /// logged and tried again at the next call (a failed retrain is also recorded in its
    /// state, which `wf_live_retrain_failing` reads).
    pub fn advance_pending(&self) -> Boxed<'_, Vec<(String, usize)>> {
        Box::pin(self.advancing_pending())
    }

    async fn advancing_pending(&self) -> Vec<(String, usize)> {
        let ids = match self.deployments.ids().await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "cannot list the live deployments");
                return Vec::new();
            }
        };
        let mut advanced = Vec::new();
        for id in ids {
            let pending = async {
                let days = self.loaded(&id).await?.dataset.panel.calendar().len();
                Ok::<_, DeploymentError>(
                    self.deployments.state(&id).await?.map_or(0, |state| days.saturating_sub(state.next_day)),
                )
            }
            .await;
            match pending {
                Ok(0) => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(deployment = %id, %error, "cannot read the deployment");
                    continue;
                }
            }
            // Still waiting for the same retrain: advancing again would read the panel and
            // score the days up to it only to stop there again.
            let waited = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied();
            if let Some((since, key)) = waited
                && self.trainer.still_training(&key).await
            {
                let gauge = metrics::gauge!("wf_live_retrain_waiting_seconds", "deployment" => id.clone());
                gauge.set(since.elapsed().as_secs_f64());
                continue;
            }
            match self.deployments.advance(&id, None, &self.device, self.trainer.as_ref(), &mut |_, _, _| {}).await {
                Ok(done) => {
                    let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let waited = match done.waiting {
                        Some((day, job)) => {
                            let since = waiting.entry(id.clone()).or_insert_with(|| (std::time::Instant::now(), job)).0;
                            tracing::info!(
                                deployment = %id,
                                days = done.days,
                                retrain = %done.opened.date(day),
                                job = %job.short(),
                                waited_seconds = since.elapsed().as_secs(),
                                "deployment advanced up to a retrain the workers are training; it continues once committed"
                            );
                            since.elapsed().as_secs_f64()
                        }
                        None => {
                            waiting.remove(&id);
                            tracing::info!(deployment = %id, days = done.days, "deployment advanced");
                            0.0
                        }
                    };
                    metrics::gauge!("wf_live_retrain_waiting_seconds", "deployment" => id.clone()).set(waited);
                    advanced.push((id, done.days));
                }
                Err(error) => {
                    tracing::warn!(deployment = %id, %error, "cannot advance the deployment; trying again next period");
                }
            }
        }
        advanced
    }

    /// The tenant deployment `id` belongs to (kept with its panel: no read per call).
    pub async fn tenant_of(&self, id: &str) -> Result<String> {
        Ok(self.loaded(id).await?.tenant.clone())
    }

    /// The deployment's spec and panel, read again when its panel file changed.
    async fn loaded(&self, id: &str) -> Result<std::sync::Arc<Loaded>> {
        let cached = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned();
        if let Some(loaded) = cached
            && loaded.stamp == file_stamp(&loaded.config.panel)
        {
            return Ok(loaded);
        }
        let opened = self.deployments.open(id).await?;
        let stamp = opened.panel_stamp;
        let loaded = std::sync::Arc::new(Loaded {
            tenant: opened.record.tenant,
            config: opened.config,
            dataset: opened.dataset,
            stamp,
        });
        self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.to_string(), loaded.clone());
        Ok(loaded)
    }

    async fn model(&self, id: &str, version: u32) -> Result<std::sync::Arc<dyn Ranker>> {
        let key = (id.to_string(), version);
        let cached = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        if let Some(model) = cached {
            return Ok(model);
        }
        let (model, _) = self.deployments.load_version(id, version, &self.device).await?;
        let model: std::sync::Arc<dyn Ranker> = model.into();
        self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, model.clone());
        Ok(model)
    }

    /// Deployment `id`'s ranking of `date` (default: its last processed day) by the
    /// version live that day, the top `k` (default: the spec's K); every ranked code is
    /// written to `predictions/<date>-v<version>.parquet` once.
    pub fn predict<'a>(
        &'a self,
        id: &'a str,
        date: Option<chrono::NaiveDate>,
        k: Option<usize>,
    ) -> Boxed<'a, Result<Prediction>> {
        Box::pin(self.predicting(id, date, k))
    }

    async fn predicting(&self, id: &str, date: Option<chrono::NaiveDate>, k: Option<usize>) -> Result<Prediction> {
        if k.is_some_and(|k| k == 0 || k > MAX_PREDICTION_K) {
            return Err(DeploymentError::Invalid(format!("k: must be between 1 and {MAX_PREDICTION_K}")));
        }
        let loaded = self.loaded(id).await?;
        let state =
            self.deployments.state(id).await?.ok_or_else(|| DeploymentError::Invalid(format!("{id} has no state")))?;
        let panel = &loaded.dataset.panel;
        let calendar = panel.calendar();
        let date_of = |day: usize| calendar.date(day).map(|d| d.to_string()).unwrap_or_default();
        let first = state.versions.first().map_or(usize::MAX, |v| v.retrain_day);
        let last = state.next_day.checked_sub(1).filter(|d| *d >= first);
        let day = match date {
            Some(date) => calendar
                .index_of(date)
                .ok_or_else(|| DeploymentError::Invalid(format!("date: {date} is not a trading day of the panel")))?,
            None => last.ok_or_else(|| {
                DeploymentError::NotProcessed(format!("{id} has processed no day yet: `wf live advance` first"))
            })?,
        };
        if last.is_none_or(|last| day > last) {
            return Err(DeploymentError::NotProcessed(format!(
                "date: {} is not processed yet (the deployment is at {}): `wf live advance {id}` first",
                date_of(day),
                last.map_or_else(|| "no day".to_string(), date_of)
            )));
        }
        let version = state
            .version_on(day)
            .ok_or_else(|| DeploymentError::Invalid(format!("date: {} is before the first version", date_of(day))))?;
        let model = self.model(id, version.number).await?;
        let column = loaded.config.horizons.iter().position(|h| *h == loaded.config.primary_horizon).unwrap_or(0);
        let date = date_of(day);
        // Ranked, and its file written, on the blocking pool: nothing here holds up the
        // threads that answer calls.
        let (ranking, milliseconds, parquet) = {
            let (loaded, device, day_date, number) =
                (loaded.clone(), self.device.clone(), date.clone(), version.number);
            tokio::task::spawn_blocking(move || {
                let date = day_date;
                let started = std::time::Instant::now();
                let ranking = rank_day(model.as_ref(), &loaded.dataset.panel, day, column, &device)
                    .map_err(|e| DeploymentError::Other(anyhow::anyhow!("scoring {date}: {e}")))?;
                let milliseconds = started.elapsed().as_secs_f64() * 1e3;
                let mut csv = String::from("date,rank,code,score,version\n");
                for (rank, (code, score)) in ranking.codes.iter().zip(&ranking.scores).enumerate() {
                    csv.push_str(&format!("{date},{},{code},{score},{number}\n", rank + 1));
                }
                let parquet =
                    wf_data::csv_to_parquet("predictions.csv", csv.as_bytes()).map_err(anyhow::Error::from)?;
                Ok::<_, DeploymentError>((ranking, milliseconds, parquet))
            })
            .await
            .map_err(|e| DeploymentError::Other(anyhow::anyhow!("scoring {date} stopped: {e}")))??
        };
        self.deployments.put_predictions(id, &date, version.number, parquet).await?;
        let k = k.unwrap_or_else(|| loaded.config.k.for_universe(ranking.codes.len()));
        Ok(Prediction {
            deployment: id.to_string(),
            date,
            version: version.number,
            job_key: version.job_key.clone(),
            stocks: ranking.codes.len(),
            milliseconds,
            top: ranking
                .codes
                .iter()
                .zip(&ranking.scores)
                .take(k)
                .enumerate()
                .map(|(rank, (code, score))| Ranked { rank: rank + 1, code: code.clone(), score: *score })
                .collect(),
        })
    }
}
