//! The artifact store: sweep manifests, per-job results, reports; through the
//! `object_store` crate, so a local directory and a bucket behave the same.
//!
//! ```text
//! sweeps/<sweep id>/sweep.json      the sweep record (spec, dataset, job keys)
//! sweeps/<sweep id>/manifest.json   the split manifest (every job's dates)
//! results/<job key>.pb              a job's result (walkforward.v1.StoredResult), written once
//! refused/<job key>.<unix ms>.pb     a result refused on reuse, moved aside (kept for a post-mortem)
//! reports/<sweep id>/<name>         reports
//! epochs/<n>                        one empty object per lease epoch ever started
//! ```
//!
//! Results are keyed by job key. The scheduler writes one only for the attempt that won
//! the job's guarded `Complete` (see `Scheduler::report_result`), so the write replaces
//! whatever is there: nothing but the winner writes. In a local directory a result is
//! written to a hidden staging file, flushed to disk, renamed into place and the
//! directory flushed, before the commit is acknowledged; staging files left by a crash
//! are removed by [`ArtifactStore::sweep_staging`]. A result the coordinator refuses to
//! reuse (damaged, or not the planned job's) is moved to `refused/`.
//!
//! Epochs are numbered here, outside the job store, so that they keep growing when the
//! job store loses its data: each is an object created with "create only", so two
//! coordinators starting one at once get different numbers.

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
    /// The directory, for a local store (results are then written and flushed by hand).
    local: Option<std::path::PathBuf>,
}

/// Staging files of result writes start with this.
const STAGING: &str = ".staging-";

impl ArtifactStore {
    /// Opens `location`: a directory path (created if missing) or a URL (`file://`;
    /// `s3://`, `gs://` in builds with the `s3`/`gcs` features, configured from the
    /// usual environment variables).
    pub fn open(location: &str) -> Result<Self, ArtifactError> {
        Self::open_with(location, std::env::vars())
    }

    /// [`ArtifactStore::open`] configured from `options` (`aws_endpoint`, `aws_region`,
    /// …, as object_store names them, in any case) rather than the environment.
    pub fn open_with(
        location: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ArtifactError> {
        let url_error = |reason: String| ArtifactError::Url { url: location.to_string(), reason };
        if !location.contains("://") {
            std::fs::create_dir_all(location).map_err(|e| url_error(format!("failed to create the directory: {e}")))?;
            let directory = std::fs::canonicalize(location).map_err(|e| url_error(e.to_string()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&directory)
                .map_err(|e| url_error(e.to_string()))?;
            return Ok(Self {
                store: Arc::new(store),
                root: Path::default(),
                url: directory.display().to_string(),
                local: Some(directory),
            });
        }
        let url = url::Url::parse(location).map_err(|e| url_error(e.to_string()))?;
        if url.scheme() == "file" {
            let directory = url.to_file_path().map_err(|()| url_error("not a local path".into()))?;
            return Self::open(&directory.display().to_string());
        }
        let (store, root) = object_store::parse_url_opts(&url, options).map_err(|e| {
            url_error(format!(
                "{e} (this build supports directories, file:// URLs and, with its s3 and gcs features, s3:// and gs://)"
            ))
        })?;
        Ok(Self { store: Arc::from(store), root, url: location.to_string(), local: None })
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
        let mut ids: Vec<SweepId> = self.folders("sweeps").await?.iter().filter_map(|f| f.parse().ok()).collect();
        ids.sort();
        Ok(ids)
    }

    /// The names of the folders directly under `folder`.
    async fn folders(&self, folder: &str) -> Result<Vec<String>, ArtifactError> {
        let prefix = self.path(folder);
        let listing = match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(source) => return Err(ArtifactError::Io { path: prefix.to_string(), source }),
        };
        Ok(listing.common_prefixes.iter().filter_map(|folder| Some(folder.filename()?.to_string())).collect())
    }

    pub async fn sweep_file(&self, sweep: &SweepId, name: &str) -> Result<Option<Bytes>, ArtifactError> {
        self.get(self.path(&format!("sweeps/{sweep}/{name}"))).await
    }

    /// Publishes a job's result, replacing any (only the winning attempt calls this);
    /// durable when it returns.
    pub async fn put_result(&self, key: &JobKey, bytes: Bytes) -> Result<(), ArtifactError> {
        let path = self.result_path(key);
        let Some(directory) = &self.local else {
            // An object store acknowledges a put once it is durable.
            return self.put(path, bytes, PutMode::Overwrite).await.map(|_| ());
        };
        let target = directory.join(path.as_ref());
        let io = |source: std::io::Error| ArtifactError::Io {
            path: path.to_string(),
            source: object_store::Error::Generic { store: "local", source: Box::new(source) },
        };
        tokio::task::spawn_blocking(move || write_durably(&target, &bytes))
            .await
            .map_err(|e| io(std::io::Error::other(e.to_string())))?
            .map_err(io)
    }

    /// Removes staging files older than `age` that interrupted result writes left in
    /// `results/` (a local store; object stores stage nothing); returns how many.
    pub async fn sweep_staging(&self, age: std::time::Duration) -> Result<usize, ArtifactError> {
        let Some(directory) = &self.local else { return Ok(0) };
        let results = directory.join(self.path("results").as_ref());
        let swept = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&results) else { return 0 };
            let mut swept = 0;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Ours, and object_store's own (`<name>#<n>`).
                let staging = name.starts_with(STAGING) || name.contains('#');
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| modified.elapsed().is_ok_and(|elapsed| elapsed >= age));
                if staging && old && std::fs::remove_file(entry.path()).is_ok() {
                    swept += 1;
                }
            }
            swept
        })
        .await
        .unwrap_or(0);
        Ok(swept)
    }

    /// Starts a new lease epoch: one more than the largest ever started here.
    pub async fn next_epoch(&self) -> Result<u64, ArtifactError> {
        let prefix = self.path("epochs");
        loop {
            let listing = match self.store.list_with_delimiter(Some(&prefix)).await {
                Ok(listing) => listing.objects,
                Err(object_store::Error::NotFound { .. }) => Vec::new(),
                Err(source) => return Err(ArtifactError::Io { path: prefix.to_string(), source }),
            };
            let last = listing.iter().filter_map(|o| o.location.filename()?.parse::<u64>().ok()).max().unwrap_or(0);
            let next = last + 1;
            let path = self.path(&format!("epochs/{next:020}"));
            if self.put(path, Bytes::new(), PutMode::Create).await? {
                // Older markers are not needed: the largest is what counts.
                for old in listing
                    .iter()
                    .filter(|o| o.location.filename().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n + 8 < next))
                {
                    let _ = self.store.delete(&old.location).await;
                }
                return Ok(next);
            }
        }
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

    /// Writes `live/<deployment>/<name>`: replacing it, or only if absent with
    /// `create_only` (then `false` when it was there).
    pub async fn put_live_file(
        &self,
        deployment: &str,
        name: &str,
        bytes: Bytes,
        create_only: bool,
    ) -> Result<bool, ArtifactError> {
        let mode = if create_only { PutMode::Create } else { PutMode::Overwrite };
        self.put(self.path(&format!("live/{deployment}/{name}")), bytes, mode).await
    }

    pub async fn live_file(&self, deployment: &str, name: &str) -> Result<Option<Bytes>, ArtifactError> {
        self.get(self.path(&format!("live/{deployment}/{name}"))).await
    }

    /// The deployments with a folder under `live/`, sorted.
    pub async fn live_ids(&self) -> Result<Vec<String>, ArtifactError> {
        let mut ids = self.folders("live").await?;
        ids.sort();
        Ok(ids)
    }

    /// Writes `reports/<id>/<name>` (replacing it); returns its location.
    pub async fn put_report(&self, sweep: &SweepId, name: &str, bytes: Bytes) -> Result<String, ArtifactError> {
        let path = self.path(&format!("reports/{sweep}/{name}"));
        self.put(path.clone(), bytes, PutMode::Overwrite).await?;
        // `path` holds the store's prefix: put it after the directory or the bucket.
        Ok(match &self.local {
            Some(directory) => format!("{}/{path}", directory.display()),
            None => match url::Url::parse(&self.url) {
                Ok(url) => format!("{}://{}/{path}", url.scheme(), url.host_str().unwrap_or_default()),
                Err(_) => format!("{}/{path}", self.url.trim_end_matches('/')),
            },
        })
    }
}

/// Writes `bytes` to `target` so that it is on disk when this returns: a staging file
/// beside it, flushed, renamed into place, and the directory flushed.
fn write_durably(target: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let directory = target.parent().ok_or_else(|| std::io::Error::other("a result path has no directory"))?;
    std::fs::create_dir_all(directory)?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let staging = directory.join(format!("{STAGING}{name}.{}.{nonce}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&staging)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&staging, target)?;
        std::fs::File::open(directory)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_are_written_durably_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::open(&dir.path().join("artifacts").display().to_string()).expect("open");
        let key = crate::store::conformance::key(9);
        assert!(!store.has_result(&key).await.expect("head"));
        store.put_result(&key, Bytes::from_static(b"first")).await.expect("put");
        assert_eq!(store.result(&key).await.expect("get").as_deref(), Some(&b"first"[..]));
        // Only the winning attempt writes, so a write replaces (a republished result).
        store.put_result(&key, Bytes::from_static(b"second")).await.expect("second put");
        assert_eq!(store.result(&key).await.expect("get").as_deref(), Some(&b"second"[..]));
        // No staging file is left behind; an old one from a crash is swept.
        let results = dir.path().join("artifacts/results");
        assert_eq!(std::fs::read_dir(&results).expect("results/").count(), 1);
        std::fs::write(results.join(format!("{STAGING}x.pb.1.2")), b"half").expect("staging");
        std::fs::write(results.join("y.pb#7"), b"half").expect("object_store staging");
        assert_eq!(store.sweep_staging(std::time::Duration::from_secs(3_600)).await.expect("sweep"), 0, "too young");
        assert_eq!(store.sweep_staging(std::time::Duration::ZERO).await.expect("sweep"), 2);
        assert_eq!(std::fs::read_dir(&results).expect("results/").count(), 1);
        assert!(store.has_result(&key).await.expect("head"));
        assert!(dir.path().join(format!("artifacts/results/{key}.pb")).exists());
        let missing = crate::store::conformance::key(10);
        assert_eq!(store.result(&missing).await.expect("get"), None);
        // A refused result is moved aside; the next commit of the key then succeeds.
        let moved = store.set_aside_result(&key, 42).await.expect("set aside").expect("moved");
        assert!(moved.ends_with(&format!("refused/{key}.42.pb")), "{moved}");
        assert!(!store.has_result(&key).await.expect("head"));
        assert_eq!(store.set_aside_result(&key, 43).await.expect("nothing to move"), None);
        store.put_result(&key, Bytes::from_static(b"third")).await.expect("put");
        assert_eq!(store.result(&key).await.expect("get").as_deref(), Some(&b"third"[..]));
    }

    #[tokio::test]
    async fn epochs_keep_growing_and_two_stores_never_share_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().join("artifacts").display().to_string();
        let (a, b) = (ArtifactStore::open(&location).expect("open"), ArtifactStore::open(&location).expect("open"));
        let (first, second) = tokio::join!(a.next_epoch(), b.next_epoch());
        let (first, second) = (first.expect("epoch"), second.expect("epoch"));
        assert_ne!(first, second);
        assert_eq!(first.min(second), 1);
        let mut last = first.max(second);
        for _ in 0..12 {
            let next = a.next_epoch().await.expect("epoch");
            assert_eq!(next, last + 1);
            last = next;
        }
        let kept = std::fs::read_dir(dir.path().join("artifacts/epochs")).expect("epochs/").count();
        assert!(kept <= 9, "old epoch markers are pruned: {kept} kept");
    }

    #[test]
    fn unsupported_urls_are_refused_with_the_reason() {
        let error = ArtifactStore::open("ftp://example.com/x").expect_err("ftp");
        assert!(error.to_string().starts_with("artifact store URL \"ftp://example.com/x\""), "{error}");
    }
}
