//! Dataset identity: the content hash that jobs, caches and workers use to refuse a
//! dataset that is not the one a sweep was planned on.
//!
//! [`content_hash`] reads the panel's values, not its file: the same panel hashes the
//! same whether it was written as Parquet with any compression, on any machine.

use std::fmt;
use std::str::FromStr;

use chrono::Datelike;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::panel::{Panel, target_name};

/// Bumped whenever the canonical encoding below changes.
pub const HASH_FORMAT: &str = "walkforward-panel-hash-v1";

/// A 256-bit content hash, shown as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetHash([u8; 32]);

impl DatasetHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The first 8 bytes as a number.
    pub fn prefix_u64(&self) -> u64 {
        let mut prefix = [0; 8];
        prefix.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(prefix)
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for DatasetHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid dataset hash {text:?}: expected 64 lowercase hex digits")]
pub struct ParseDatasetHashError {
    text: String,
}

impl FromStr for DatasetHash {
    type Err = ParseDatasetHashError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseDatasetHashError { text: text.to_string() };
        if text.len() != 64 {
            return Err(error());
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = &text[2 * index..2 * index + 2];
            if pair.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(error());
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| error())?;
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for DatasetHash {
    type Error = ParseDatasetHashError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DatasetHash> for String {
    fn from(hash: DatasetHash) -> Self {
        hash.to_string()
    }
}

/// Content hash of a panel: BLAKE3 over a canonical little-endian encoding of its shape,
/// column names, row keys (date as days from the common era, code) and every value,
/// with all nulls encoded alike. Columns are digested in parallel, then combined
/// ([`PanelDigests::hash`]).
pub fn content_hash(panel: &Panel) -> DatasetHash {
    PanelDigests::of(panel).hash()
}

/// What a panel's content hash is combined from: its row count, the digest of its row
/// keys, and each column's digest. `wf data prepare` records them in the file's metadata,
/// so the hash of the panel with any subset of its features is known without reading a
/// value (planning from metadata), and still equals [`content_hash`] of the loaded panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanelDigests {
    pub rows: u64,
    pub keys: DatasetHash,
    /// Feature columns, in order: name and digest of its values.
    pub features: Vec<(String, DatasetHash)>,
    /// Target columns (`fwd_ret_<h>`), in order.
    pub targets: Vec<(String, DatasetHash)>,
}

impl PanelDigests {
    pub fn of(panel: &Panel) -> Self {
        let mut keys = blake3::Hasher::new();
        for (day, stock) in panel.day().iter().zip(panel.stock()) {
            let date = panel.calendar().date(*day as usize).unwrap_or_default();
            keys.update(&date.num_days_from_ce().to_le_bytes());
            let code = panel.codes()[*stock as usize].as_bytes();
            keys.update(&(code.len() as u32).to_le_bytes());
            keys.update(code);
        }
        let hash = |digest: blake3::Hash| DatasetHash(*digest.as_bytes());
        let features: Vec<DatasetHash> = panel
            .features()
            .par_iter()
            .map(|column| {
                hash(digest_values(column, |v: &f32| if v.is_nan() { f32::NAN } else { *v }.to_bits().to_le_bytes()))
            })
            .collect();
        let targets: Vec<DatasetHash> = panel
            .targets()
            .par_iter()
            .map(|column| {
                hash(digest_values(column, |v: &f64| if v.is_nan() { f64::NAN } else { *v }.to_bits().to_le_bytes()))
            })
            .collect();
        Self {
            rows: panel.rows() as u64,
            keys: hash(keys.finalize()),
            features: panel.feature_names().iter().cloned().zip(features).collect(),
            targets: panel.horizons().iter().map(|h| target_name(*h)).zip(targets).collect(),
        }
    }

    /// The digests of the panel with only the features `names`, in that order; `None`
    /// when one is not among them.
    pub fn select(&self, names: &[String]) -> Option<Self> {
        let features = names
            .iter()
            .map(|name| self.features.iter().find(|(n, _)| n == name).cloned())
            .collect::<Option<Vec<_>>>()?;
        Some(Self { features, ..self.clone() })
    }

    /// The content hash.
    pub fn hash(&self) -> DatasetHash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(HASH_FORMAT.as_bytes());
        hasher.update(&self.rows.to_le_bytes());
        for (name, _) in self.features.iter().chain(&self.targets) {
            hasher.update(&(name.len() as u32).to_le_bytes());
            hasher.update(name.as_bytes());
        }
        hasher.update(&self.keys.0);
        for (_, digest) in self.features.iter().chain(&self.targets) {
            hasher.update(&digest.0);
        }
        DatasetHash(*hasher.finalize().as_bytes())
    }
}

/// Digest of a column's canonical bytes, fed to the hasher in large chunks (one
/// `update` per value is several times slower).
fn digest_values<T, const N: usize>(values: &[T], bytes: impl Fn(&T) -> [u8; N]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = Vec::with_capacity(64 * 1024 * N);
    for chunk in values.chunks(64 * 1024) {
        buffer.clear();
        chunk.iter().for_each(|v| buffer.extend_from_slice(&bytes(v)));
        hasher.update(&buffer);
    }
    hasher.finalize()
}

/// A dataset as jobs refer to it: where it is and what it must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRef {
    pub uri: String,
    pub content_hash: DatasetHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x01;
        let hash = DatasetHash::from_bytes(bytes);
        let text = hash.to_string();
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("ab00"));
        assert_eq!(text.parse::<DatasetHash>(), Ok(hash));
        assert_eq!(hash.short(), "ab0000000000");
    }

    #[test]
    fn malformed_hash_is_rejected() {
        assert!("abc".parse::<DatasetHash>().is_err());
        assert!("zz".repeat(32).parse::<DatasetHash>().is_err());
        assert!("AB".repeat(32).parse::<DatasetHash>().is_err());
    }
}
