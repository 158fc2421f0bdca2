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
    /// The same digests, one per trading day: what a job's data digest is combined from
    /// ([`DayView`]). Absent from summaries written before they existed.
    #[serde(default, skip_serializing_if = "DayDigests::is_empty")]
    pub days: DayDigests,
}

/// Digests of each trading day's rows: the row keys (date, code), and each feature's and
/// each target's values on that day, in the panel's column order; same canonical bytes
/// as the whole-column digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayDigests {
    pub keys: Digests,
    pub features: Vec<Digests>,
    pub targets: Vec<Digests>,
}

impl DayDigests {
    pub fn is_empty(&self) -> bool {
        self.keys.0.is_empty()
    }

    pub fn days(&self) -> usize {
        self.keys.0.len()
    }

    /// Whether every column has a digest for each of `days` days.
    pub fn cover(&self, days: usize) -> bool {
        self.keys.0.len() == days && self.features.iter().chain(&self.targets).all(|column| column.0.len() == days)
    }
}

/// A list of 32-byte digests, one per trading day; written as one hex string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests(pub Vec<[u8; 32]>);

impl Serialize for Digests {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text: String = self.0.iter().map(|digest| DatasetHash(*digest).to_string()).collect();
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Digests {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if !text.len().is_multiple_of(64) {
            return Err(serde::de::Error::custom("day digests: not a whole number of 64-digit digests"));
        }
        text.as_bytes()
            .chunks(64)
            .map(|chunk| {
                let digest: DatasetHash = std::str::from_utf8(chunk)
                    .ok()
                    .and_then(|hex| hex.parse().ok())
                    .ok_or_else(|| serde::de::Error::custom("day digests: not lowercase hex"))?;
                Ok(digest.0)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl PanelDigests {
    pub fn of(panel: &Panel) -> Self {
        // The days' rows partition the panel's rows in order, so feeding each day's bytes
        // to a column's hasher in turn digests the whole column.
        let days: Vec<std::ops::Range<usize>> = (0..panel.calendar().len()).map(|d| panel.rows_of_day(d)).collect();
        let mut keys = blake3::Hasher::new();
        let mut buffer = Vec::new();
        let day_keys = days
            .iter()
            .enumerate()
            .map(|(day, rows)| {
                buffer.clear();
                let date = panel.calendar().date(day).unwrap_or_default().num_days_from_ce().to_le_bytes();
                for row in rows.clone() {
                    let code = panel.codes()[panel.stock()[row] as usize].as_bytes();
                    buffer.extend_from_slice(&date);
                    buffer.extend_from_slice(&(code.len() as u32).to_le_bytes());
                    buffer.extend_from_slice(code);
                }
                keys.update(&buffer);
                *blake3::hash(&buffer).as_bytes()
            })
            .collect();
        let hash = |digest: blake3::Hash| DatasetHash(*digest.as_bytes());
        let features: Vec<(blake3::Hash, Digests)> = panel
            .features()
            .par_iter()
            .map(|column| {
                digest_column(column, &days, |v: &f32| if v.is_nan() { f32::NAN } else { *v }.to_bits().to_le_bytes())
            })
            .collect();
        let targets: Vec<(blake3::Hash, Digests)> = panel
            .targets()
            .par_iter()
            .map(|column| {
                digest_column(column, &days, |v: &f64| if v.is_nan() { f64::NAN } else { *v }.to_bits().to_le_bytes())
            })
            .collect();
        Self {
            rows: panel.rows() as u64,
            keys: hash(keys.finalize()),
            features: panel.feature_names().iter().cloned().zip(features.iter().map(|(d, _)| hash(*d))).collect(),
            targets: panel
                .horizons()
                .iter()
                .map(|h| target_name(*h))
                .zip(targets.iter().map(|(d, _)| hash(*d)))
                .collect(),
            days: DayDigests {
                keys: Digests(day_keys),
                features: features.into_iter().map(|(_, days)| days).collect(),
                targets: targets.into_iter().map(|(_, days)| days).collect(),
            },
        }
    }

    /// The first of `days` whose per-day digests (row keys, each feature, each target)
    /// differ between `self` and `other`; `None` when every one agrees. Digests of other
    /// columns, or without days, differ on the first day.
    pub fn first_difference(&self, other: &Self, days: std::ops::Range<usize>) -> Option<usize> {
        let same_columns = self.features.iter().map(|(n, _)| n).eq(other.features.iter().map(|(n, _)| n))
            && self.targets.iter().map(|(n, _)| n).eq(other.targets.iter().map(|(n, _)| n))
            && self.days.days() == other.days.days()
            && days.end <= self.days.days()
            && self.has_days(self.days.days())
            && other.has_days(other.days.days());
        if !same_columns {
            return Some(days.start);
        }
        fn columns(d: &DayDigests) -> Vec<&Digests> {
            std::iter::once(&d.keys).chain(&d.features).chain(&d.targets).collect()
        }
        let (mine, theirs) = (columns(&self.days), columns(&other.days));
        days.into_iter().find(|day| mine.iter().zip(&theirs).any(|(a, b)| a.0[*day] != b.0[*day]))
    }

    /// Whether it holds per-day digests of every column for each of `days` days.
    pub fn has_days(&self, days: usize) -> bool {
        self.days.cover(days)
            && self.days.features.len() == self.features.len()
            && self.days.targets.len() == self.targets.len()
    }

    /// Digests that stand for a panel of `days` days that was never built (every digest
    /// derived from `tag`, the day and the column): for planning benchmarks and tests.
    pub fn placeholder(tag: u8, days: usize, features: &[String], horizons: &[u32]) -> Self {
        let digest = |column: &str, day: usize| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&[tag]);
            hasher.update(column.as_bytes());
            hasher.update(&(day as u64).to_le_bytes());
            *hasher.finalize().as_bytes()
        };
        let column = |name: &str| Digests((0..days).map(|day| digest(name, day)).collect());
        let whole = |name: &str| DatasetHash(digest(name, usize::MAX));
        let targets: Vec<String> = horizons.iter().map(|h| target_name(*h)).collect();
        Self {
            rows: days as u64,
            keys: whole(""),
            features: features.iter().map(|name| (name.clone(), whole(name))).collect(),
            targets: targets.iter().map(|name| (name.clone(), whole(name))).collect(),
            days: DayDigests {
                keys: column(""),
                features: features.iter().map(|name| column(name)).collect(),
                targets: targets.iter().map(|name| column(name)).collect(),
            },
        }
    }

    /// The digests of the panel with only the features `names`, in that order; `None`
    /// when one is not among them.
    pub fn select(&self, names: &[String]) -> Option<Self> {
        let positions = names
            .iter()
            .map(|name| self.features.iter().position(|(n, _)| n == name))
            .collect::<Option<Vec<usize>>>()?;
        let features = positions.iter().map(|p| self.features[*p].clone()).collect();
        let days = if self.days.is_empty() {
            DayDigests::default()
        } else {
            DayDigests {
                features: positions.iter().map(|p| self.days.features[*p].clone()).collect(),
                ..self.days.clone()
            }
        };
        Some(Self { features, days, ..self.clone() })
    }

    /// The per-day digests of the features, in order, and of the targets of `horizons`
    /// (in that order) that a job's data digest is combined from; `None` when the
    /// digests hold no days or a horizon has no target column.
    pub fn day_view(&self, horizons: &[u32]) -> Option<DayView> {
        if self.days.is_empty() || !self.has_days(self.days.days()) {
            return None;
        }
        let targets = horizons
            .iter()
            .map(|h| self.targets.iter().position(|(name, _)| *name == target_name(*h)))
            .collect::<Option<Vec<usize>>>()?;
        let mut names = blake3::Hasher::new();
        let feature_names = self.features.iter().map(|(name, _)| name);
        let target_names = targets.iter().map(|t| &self.targets[*t].0);
        for (kind, list) in [("features", feature_names.collect::<Vec<_>>()), ("targets", target_names.collect())] {
            names.update(kind.as_bytes());
            names.update(&(list.len() as u32).to_le_bytes());
            for name in list {
                names.update(&(name.len() as u32).to_le_bytes());
                names.update(name.as_bytes());
            }
        }
        let combine = |columns: &mut dyn Iterator<Item = &Digests>, day: usize| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&self.days.keys.0[day]);
            columns.for_each(|column| {
                hasher.update(&column.0[day]);
            });
            *hasher.finalize().as_bytes()
        };
        let days = self.days.days();
        Some(DayView {
            names: *names.finalize().as_bytes(),
            features: (0..days).map(|d| combine(&mut self.days.features.iter(), d)).collect(),
            targets: (0..days).map(|d| combine(&mut targets.iter().map(|t| &self.days.targets[*t]), d)).collect(),
        })
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

/// Bumped whenever a job's data digest ([`DayView::data_digest`]) changes definition.
pub const DATA_FORMAT: &str = "walkforward-data-v1";

/// A panel's per-day digests combined for one spec: each day's row keys with every
/// feature's values, and with every spec horizon's target values.
#[derive(Debug, Clone)]
pub struct DayView {
    names: [u8; 32],
    features: Vec<[u8; 32]>,
    targets: Vec<[u8; 32]>,
}

impl DayView {
    /// The trading days it covers.
    pub fn days(&self) -> usize {
        self.features.len()
    }

    /// The digest of what a job reads: the features of the days `read` (its training
    /// days, the days before them its model looks back over, and on to its last scored
    /// day), and the targets of its training days and of its scored days. Day indices
    /// are not part of it: the same days' values hash the same on a longer panel.
    pub fn data_digest(
        &self,
        read: std::ops::Range<usize>,
        train: std::ops::Range<usize>,
        score: std::ops::Range<usize>,
    ) -> DatasetHash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DATA_FORMAT.as_bytes());
        hasher.update(&self.names);
        for (days, digests) in [(read, &self.features), (train, &self.targets), (score, &self.targets)] {
            let days = days.start.min(digests.len())..days.end.min(digests.len());
            hasher.update(&(days.len() as u64).to_le_bytes());
            hasher.update(digests[days].as_flattened());
        }
        DatasetHash(*hasher.finalize().as_bytes())
    }
}

/// Digest of a column's canonical bytes and of each day's rows of it, in one pass: each
/// day's bytes go to the column's hasher in one `update` (one per value is several
/// times slower) and are hashed on their own. `days` partition the rows in order.
fn digest_column<T, const N: usize>(
    values: &[T],
    days: &[std::ops::Range<usize>],
    bytes: impl Fn(&T) -> [u8; N],
) -> (blake3::Hash, Digests) {
    debug_assert_eq!(days.iter().map(|rows| rows.len()).sum::<usize>(), values.len());
    let mut hasher = blake3::Hasher::new();
    let mut buffer = Vec::new();
    let per_day = days
        .iter()
        .map(|rows| {
            buffer.clear();
            values[rows.clone()].iter().for_each(|v| buffer.extend_from_slice(&bytes(v)));
            hasher.update(&buffer);
            *blake3::hash(&buffer).as_bytes()
        })
        .collect();
    (hasher.finalize(), Digests(per_day))
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
