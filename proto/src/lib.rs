//! `wf-proto`: the generated `walkforward.v1` messages and their validated conversions
//! to domain types. Every wire message is checked once, here, by `TryFrom`; a bad field
//! becomes a [`ConversionError`] naming the field's path.

#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/walkforward.v1.rs"));
}

pub mod auth;
pub mod budget;
mod result;
pub mod stored;
pub mod tls;

/// The encoded descriptors of `walkforward.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/walkforward_descriptor.bin"));

/// The worker protocol this build speaks; `RegisterWorker` refuses any other. 2: drift
/// counts are packed (`Drift.training_counts`, `Drift.day_counts`); 3: the day counts are
/// fixed-width bytes (`Drift.day_count_width`, `Drift.day_counts_fixed`); 4: a result
/// carries its job's identity (`JobResult.identity`) and registration the worker's
/// trainer version; 5: every call about a leased job carries the lease's epoch (the
/// fencing token is epoch and attempt). Results are stored as [`v1::StoredResult`] (see
/// [`stored`]).
pub const PROTOCOL_VERSION: u32 = 5;

use wf_shared::dataset::DatasetRef;

/// A wire message field that does not convert to its domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConversionError {
    pub field: String,
    pub reason: String,
}

impl TryFrom<v1::DatasetRef> for DatasetRef {
    type Error = ConversionError;

    fn try_from(message: v1::DatasetRef) -> Result<Self, Self::Error> {
        if message.uri.trim().is_empty() {
            return Err(ConversionError { field: "dataset.uri".into(), reason: "must not be empty".into() });
        }
        let content_hash =
            message.content_hash.parse().map_err(|error: wf_shared::dataset::ParseDatasetHashError| {
                ConversionError { field: "dataset.content_hash".into(), reason: error.to_string() }
            })?;
        Ok(DatasetRef { uri: message.uri, content_hash })
    }
}

impl From<DatasetRef> for v1::DatasetRef {
    fn from(dataset: DatasetRef) -> Self {
        Self { uri: dataset.uri, content_hash: dataset.content_hash.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use wf_shared::DatasetHash;

    #[test]
    fn dataset_ref_round_trips_through_the_wire() {
        let domain = DatasetRef { uri: "data/panel.parquet".into(), content_hash: DatasetHash::from_bytes([7; 32]) };
        let bytes = v1::DatasetRef::from(domain.clone()).encode_to_vec();
        let decoded = v1::DatasetRef::decode(bytes.as_slice()).expect("valid bytes");
        assert_eq!(DatasetRef::try_from(decoded), Ok(domain));
    }

    #[test]
    fn bad_fields_are_named() {
        let empty = v1::DatasetRef { uri: " ".into(), content_hash: "00".repeat(32) };
        assert_eq!(DatasetRef::try_from(empty).expect_err("empty uri").field, "dataset.uri");
        let short = v1::DatasetRef { uri: "p.parquet".into(), content_hash: "abc".into() };
        let error = DatasetRef::try_from(short).expect_err("short hash");
        assert_eq!(error.field, "dataset.content_hash");
        assert!(error.to_string().starts_with("dataset.content_hash: invalid dataset hash"));
    }
}
