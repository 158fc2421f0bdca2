//! Opening a sweep's dataset: the path checked against the data roots and the ceilings,
//! the summary or the whole panel loaded once and cached by content.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wf_data::dataset::{Dataset, DatasetSource, DatasetSummary};
use wf_shared::spec::{SpecErrors, SweepConfig};

use super::{DatasetKey, DatasetLoader, Scheduler, SchedulerError, lock};

impl Scheduler {
    pub(super) fn check_dataset_path(&self, uri: &str) -> Result<(), SchedulerError> {
        if let Some(synth) = wf_data::dataset::synth_spec(uri) {
            let denied = |reason: String| SchedulerError::InvalidSpec(SpecErrors::one("dataset.panel", reason));
            let spec = synth.map_err(denied)?;
            let cells = (spec.stocks as u64).saturating_mul(spec.days as u64);
            if cells > self.config.max_synth_cells {
                return Err(denied(format!(
                    "a synthetic market of {} stocks x {} days ({cells} stock-days) is larger than this coordinator's limit of {}",
                    spec.stocks, spec.days, self.config.max_synth_cells
                )));
            }
            return Ok(());
        }
        // Files are checked where they are opened (`wf_data::dataset::open`), through the
        // handle, against the data roots.
        Ok(())
    }

    /// `config`'s dataset, loaded whole (cached).
    pub(super) async fn dataset(&self, config: &SweepConfig) -> Result<Arc<Dataset>, SchedulerError> {
        self.cached(&self.datasets, config, DatasetSource::whole).await
    }

    /// What planning reads of `config`'s dataset: a prepared panel's metadata summary (no
    /// value read), else the summary of the loaded dataset (cached).
    pub(super) async fn summary(&self, config: &SweepConfig) -> Result<Arc<DatasetSummary>, SchedulerError> {
        self.cached(&self.summaries, config, DatasetSource::summary).await
    }

    /// `load` of `config`'s dataset, confined to the data roots, on a blocking thread;
    /// kept in `cache` by URI, horizons and features.
    pub(super) async fn cached<T: Send + Sync + 'static>(
        &self,
        cache: &Mutex<HashMap<DatasetKey, Arc<T>>>,
        config: &SweepConfig,
        load: DatasetLoader<T>,
    ) -> Result<Arc<T>, SchedulerError> {
        let uri = config.panel.as_str();
        let cache_key = (uri.to_string(), config.horizons.clone(), config.features.clone());
        if let Some(loaded) = lock(cache).get(&cache_key) {
            return Ok(loaded.clone());
        }
        self.check_dataset_path(uri)?;
        let (owned_uri, owned_horizons, owned_features) = cache_key.clone();
        let loaded = tokio::task::spawn_blocking({
            let roots = self.config.data_roots.clone();
            move || {
                wf_data::dataset::open(&owned_uri, &owned_horizons, owned_features.as_deref(), &roots)
                    .and_then(|source| load(&source))
            }
        })
        .await
        .map_err(|e| SchedulerError::Internal(format!("dataset loader panicked: {e}")))?
        .map_err(|e| SchedulerError::Dataset { uri: uri.to_string(), reason: e.to_string() })?;
        let loaded = Arc::new(loaded);
        lock(cache).insert(cache_key, loaded.clone());
        Ok(loaded)
    }

    /// The values of the dataset `summary` describes; refused if they no longer hash as
    /// planned (the file changed since).
    pub(super) async fn loaded(
        &self,
        config: &SweepConfig,
        summary: &DatasetSummary,
    ) -> Result<Arc<Dataset>, SchedulerError> {
        let dataset = self.dataset(config).await?;
        if dataset.content_hash != summary.content_hash {
            return Err(SchedulerError::Dataset {
                uri: config.panel.clone(),
                reason: format!(
                    "its content hash is {}, not {} as when the sweep was planned: the file changed",
                    dataset.content_hash.short(),
                    summary.content_hash.short()
                ),
            });
        }
        Ok(dataset)
    }
}
