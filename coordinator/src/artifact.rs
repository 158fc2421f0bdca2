//! The artifact store: sweep manifests, per-job results, reports; through the
//! `object_store` crate, so a local directory and a bucket behave the same.
//!
//! ```text
//! sweeps/<sweep id>/sweep.json      the sweep record (spec, dataset, job keys)
//! sweeps/<sweep id>/manifest.json   the split manifest (every job's dates)
//! results/<job key>.pb              a job's result (walkforward.v1.StoredResult), written once
//! refused/<job key>.<unix ms>.pb     a result refused on reuse, moved aside (kept for a post-mortem)
//! reports/<sweep id>/<name>         reports
//! ```
//!
//! Results are keyed by job key and written with "create only": a second write of the
//! same key (a retried report, a late stale worker) changes nothing, so a committed
//! result is never replaced. The one exception: a result the coordinator refuses to reuse
//! (damaged, or not the planned job's) is moved to `refused/`, so the job's next result
//! can be committed in its place.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use wf_shared::job::SweepId;
use wf_shared::plan::JobKey;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact store URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("artifact {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: object_store::Error,
    },
}

/// Where artifacts live.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

impl ArtifactStore {
    /// Opens `location`: a directory path (created if missing) or a URL (`file://`;
    /// `s3://`, `gs://` in builds with the `s3`/`gcs` features, configured from the
    /// usual environment variables).
    pub fn open(location: &str) -> Result<Self, ArtifactError> {
        let url_error = |reason: String| ArtifactError::Url { url: location.to_string(), reason };
        if !location.contains("://") {
            std::fs::create_dir_all(location).map_err(|e| url_error(format!("failed to create the directory: {e}")))?;
            let directory = std::fs::canonicalize(location).map_err(|e| url_error(e.to_string()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&directory)
                .map_err(|e| url_error(e.to_string()))?;
            return Ok(Self { store: Arc::new(store), root: Path::default(), url: directory.display().to_string() });
        }
        let url = url::Url::parse(location).map_err(|e| url_error(e.to_string()))?;
        if url.scheme() == "file" {
            let directory = url.to_file_path().map_err(|()| url_error("not a local path".into()))?;
            return Self::open(&directory.display().to_string());
        }
        let (store, root) = object_store::parse_url_opts(&url, std::env::vars()).map_err(|e| {
            url_error(format!(
                "{e} (this build supports directories and file:// URLs; s3:// and gs:// need the s3 and gcs features)"
            ))
        })?;
        Ok(Self { store: Arc::from(store), root, url: location.to_string() })
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.url
    }

    fn path(&self, relative: &str) -> Path {
        Path::from(format!("{}/{relative}", self.root).trim_start_matches('/'))
    }

    fn result_path(&self, key: &JobKey) -> Path {
        self.path(&format!("results/{key}.pb"))
    }

    async fn put(&self, path: Path, bytes: Bytes, mode: PutMode) -> Result<bool, ArtifactError> {
        let options = PutOptions { mode, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(bytes), options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(source) => Err(ArtifactError::Io { path: path.to_string(), source }),
        }
    }

    async fn get(&self, path: Path) -> Result<Option<Bytes>, ArtifactError> {
        match self.store.get(&path).await {
            Ok(found) => {
                found.bytes().await.map(Some).map_err(|source| ArtifactError::Io { path: path.to_string(), source })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(ArtifactError::Io { path: path.to_string(), source }),
        }
    }

    /// Writes `sweeps/<id>/<name>` (replacing it).
    pub async fn put_sweep_file(&self, sweep: &SweepId, name: &str, bytes: Bytes) -> Result<(), ArtifactError> {
        self.put(self.path(&format!("sweeps/{sweep}/{name}")), bytes, PutMode::Overwrite).await.map(|_| ())
    }

    /// The ids of every sweep with a folder under `sweeps/`, sorted.
    pub async fn sweep_ids(&self) -> Result<Vec<SweepId>, ArtifactError> {
        let prefix = self.path("sweeps");
        let listing = match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(source) => return Err(ArtifactError::Io { path: prefix.to_string(), source }),
        };
        let mut ids: Vec<SweepId> =
            listing.common_prefixes.iter().filter_map(|folder| folder.filename()?.parse().ok()).collect();
        ids.sort();
        Ok(ids)
    }

    pub async fn sweep_file(&self, sweep: &SweepId, name: &str) -> Result<Option<Bytes>, ArtifactError> {
        self.get(self.path(&format!("sweeps/{sweep}/{name}"))).await
    }

    /// Commits a job's result; `false` when one was already committed (left unchanged).
    pub async fn put_result(&self, key: &JobKey, bytes: Bytes) -> Result<bool, ArtifactError> {
        self.put(self.result_path(key), bytes, PutMode::Create).await
    }

    pub async fn result(&self, key: &JobKey) -> Result<Option<Bytes>, ArtifactError> {
        self.get(self.result_path(key)).await
    }

    /// Moves a refused result out of `results/` to `refused/<key>.<now_ms>.pb`; returns
    /// where it went (`None`: there was nothing to move, e.g. another coordinator did).
    pub async fn set_aside_result(&self, key: &JobKey, now_ms: i64) -> Result<Option<String>, ArtifactError> {
        let from = self.result_path(key);
        let to = self.path(&format!("refused/{key}.{now_ms}.pb"));
        match self.store.rename(&from, &to).await {
            Ok(()) => Ok(Some(to.to_string())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(ArtifactError::Io { path: from.to_string(), source }),
        }
    }

    pub async fn has_result(&self, key: &JobKey) -> Result<bool, ArtifactError> {
        let path = self.result_path(key);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(ArtifactError::Io { path: path.to_string(), source }),
        }
    }

    /// Writes `reports/<id>/<name>` (replacing it); returns its location.
    pub async fn put_report(&self, sweep: &SweepId, name: &str, bytes: Bytes) -> Result<String, ArtifactError> {
        let path = self.path(&format!("reports/{sweep}/{name}"));
        self.put(path.clone(), bytes, PutMode::Overwrite).await?;
        Ok(format!("{}/{path}", self.url.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_are_written_once_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::open(&dir.path().join("artifacts").display().to_string()).expect("open");
        let key = crate::store::conformance::key(9);
        assert!(!store.has_result(&key).await.expect("head"));
        assert!(store.put_result(&key, Bytes::from_static(b"first")).await.expect("put"));
        assert!(!store.put_result(&key, Bytes::from_static(b"second")).await.expect("second put"));
        assert_eq!(store.result(&key).await.expect("get").as_deref(), Some(&b"first"[..]));
        assert!(store.has_result(&key).await.expect("head"));
        assert!(dir.path().join(format!("artifacts/results/{key}.pb")).exists());
        let missing = crate::store::conformance::key(10);
        assert_eq!(store.result(&missing).await.expect("get"), None);
        // A refused result is moved aside; the next commit of the key then succeeds.
        let moved = store.set_aside_result(&key, 42).await.expect("set aside").expect("moved");
        assert!(moved.ends_with(&format!("refused/{key}.42.pb")), "{moved}");
        assert!(!store.has_result(&key).await.expect("head"));
        assert_eq!(store.set_aside_result(&key, 43).await.expect("nothing to move"), None);
        assert!(store.put_result(&key, Bytes::from_static(b"third")).await.expect("put"));
        assert_eq!(store.result(&key).await.expect("get").as_deref(), Some(&b"third"[..]));
    }

    #[test]
    fn unsupported_urls_are_refused_with_the_reason() {
        let error = ArtifactStore::open("ftp://example.com/x").expect_err("ftp");
        assert!(error.to_string().starts_with("artifact store URL \"ftp://example.com/x\""), "{error}");
    }
}
