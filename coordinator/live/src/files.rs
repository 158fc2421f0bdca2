//! Where deployments keep their files: the port [`LiveFiles`], which the coordinator's
//! artifact store implements (`live/<id>/<name>` in a folder or a bucket), and
//! [`MemoryFiles`], an adapter in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

/// Why a deployment's file could not be read or written: the store's own error, with
/// where it happened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct FilesError(#[from] pub Box<dyn std::error::Error + Send + Sync>);

impl FilesError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// The files of deployments, by deployment id and file name (`deployment.json`,
/// `state.json`, `versions/<n>.safetensors`, `predictions/<date>-v<n>.parquet`).
#[async_trait::async_trait]
pub trait LiveFiles: Send + Sync + std::fmt::Debug {
    /// The ids of the deployments with at least one file, sorted.
    async fn ids(&self) -> Result<Vec<String>, FilesError>;

    /// File `name` of deployment `id`; `None` when it is not there.
    async fn get(&self, id: &str, name: &str) -> Result<Option<Bytes>, FilesError>;

    /// Writes file `name` of deployment `id`. With `create_only`, a file that is there
    /// already is left as it is and `false` returned; otherwise it is replaced (whole:
    /// a reader never sees part of it). `true` when written.
    async fn put(&self, id: &str, name: &str, bytes: Bytes, create_only: bool) -> Result<bool, FilesError>;
}

/// Deployments' files in memory (tests, and a process that needs no files kept).
#[derive(Debug, Default)]
pub struct MemoryFiles {
    files: Mutex<BTreeMap<(String, String), Bytes>>,
}

impl MemoryFiles {
    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Bytes>> {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl LiveFiles for MemoryFiles {
    async fn ids(&self) -> Result<Vec<String>, FilesError> {
        let mut ids: Vec<String> = self.files().keys().map(|(id, _)| id.clone()).collect();
        ids.dedup();
        Ok(ids)
    }

    async fn get(&self, id: &str, name: &str) -> Result<Option<Bytes>, FilesError> {
        Ok(self.files().get(&(id.to_string(), name.to_string())).cloned())
    }

    async fn put(&self, id: &str, name: &str, bytes: Bytes, create_only: bool) -> Result<bool, FilesError> {
        let mut files = self.files();
        let key = (id.to_string(), name.to_string());
        if create_only && files.contains_key(&key) {
            return Ok(false);
        }
        files.insert(key, bytes);
        Ok(true)
    }
}

/// The behaviour every [`LiveFiles`] adapter must have, run against each of them (here
/// against [`MemoryFiles`], in the coordinator against its artifact store).
pub async fn conformance(files: &dyn LiveFiles) {
    assert_eq!(files.ids().await.expect("ids"), Vec::<String>::new(), "a new store holds no deployment");
    assert_eq!(files.get("b", "state.json").await.expect("get"), None, "a missing file reads as None");
    assert!(files.put("b", "deployment.json", Bytes::from_static(b"one"), true).await.expect("put"));
    assert!(
        !files.put("b", "deployment.json", Bytes::from_static(b"two"), true).await.expect("put"),
        "a create-only write over a file is refused"
    );
    assert_eq!(files.get("b", "deployment.json").await.expect("get").as_deref(), Some(&b"one"[..]));
    assert!(files.put("b", "state.json", Bytes::from_static(b"1"), false).await.expect("put"));
    assert!(files.put("b", "state.json", Bytes::from_static(b"2"), false).await.expect("put"));
    assert_eq!(files.get("b", "state.json").await.expect("get").as_deref(), Some(&b"2"[..]), "a write replaces");
    assert!(files.put("a", "versions/1.safetensors", Bytes::from_static(b"w"), true).await.expect("put"));
    assert_eq!(files.get("a", "versions/1.safetensors").await.expect("get").as_deref(), Some(&b"w"[..]));
    assert_eq!(files.ids().await.expect("ids"), ["a", "b"], "ids are sorted, each once");
    assert_eq!(files.get("a", "state.json").await.expect("get"), None, "one deployment's files are not another's");
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_files_conform() {
        super::conformance(&super::MemoryFiles::default()).await;
    }
}
