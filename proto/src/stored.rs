//! Committed result files: a [`v1::StoredResult`] that carries the job's identity in
//! full, the encoded [`v1::JobResult`] and a checksum of both, and the check that
//! decides whether a stored result may stand for a planned job.
//!
//! A result is reused only when all of these hold, in this order (the first that fails
//! is the refusal's reason):
//!
//! 1. the bytes decode as a `StoredResult` of format [`RESULT_FORMAT`] (`unreadable`,
//!    `format`: files of earlier formats, which stored a bare `JobResult` under keys
//!    that did not cover K or the primary horizon, are never reused);
//! 2. the checksum matches the format, identity and result bytes (`checksum`: a file
//!    damaged or edited by hand);
//! 3. the stored identity is, byte for byte, the planned job's (`identity`);
//! 4. the result bytes decode as a `JobResult` (`unreadable`).

use prost::Message;

use crate::v1;

/// The format of committed result files.
pub const RESULT_FORMAT: &str = "walkforward-result-v2";

/// Why a stored result was not reused. `reason()` is a closed set, for metric labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredRefusal {
    #[error("unreadable: {0}")]
    Unreadable(String),
    #[error("format {found:?}, not {RESULT_FORMAT:?}")]
    Format { found: String },
    #[error("checksum mismatch: the file was changed after it was committed")]
    Checksum,
    #[error("identity differs from the planned job: {0}")]
    Identity(String),
}

impl StoredRefusal {
    /// Every [`Self::reason`].
    pub const REASONS: [&'static str; 4] = ["unreadable", "format", "checksum", "identity"];

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreadable(_) => "unreadable",
            Self::Format { .. } => "format",
            Self::Checksum => "checksum",
            Self::Identity(_) => "identity",
        }
    }
}

fn checksum(format: &str, identity: &str, result: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for part in [format.as_bytes(), identity.as_bytes(), result] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// The file of a committed result: `result` of the job whose identity is `identity`
/// (`result.identity` is expected empty: the file holds the identity once).
pub fn seal(identity: &str, result: &v1::JobResult) -> Vec<u8> {
    let identity = identity.to_string();
    let result = result.encode_to_vec();
    let checksum = checksum(RESULT_FORMAT, &identity, &result).to_vec();
    v1::StoredResult { format: RESULT_FORMAT.to_string(), identity, result, checksum }.encode_to_vec()
}

/// A stored result file, decoded and checked against its own checksum, not yet against
/// a job.
#[derive(Debug, Clone)]
pub struct Stored {
    pub identity: String,
    result: Vec<u8>,
}

impl Stored {
    /// Decodes `bytes` and verifies the format and checksum.
    pub fn read(bytes: &[u8]) -> Result<Self, StoredRefusal> {
        let stored = v1::StoredResult::decode(bytes).map_err(|e| StoredRefusal::Unreadable(e.to_string()))?;
        if stored.format != RESULT_FORMAT {
            return Err(StoredRefusal::Format { found: stored.format.chars().take(64).collect() });
        }
        if stored.checksum != checksum(&stored.format, &stored.identity, &stored.result) {
            return Err(StoredRefusal::Checksum);
        }
        Ok(Self { identity: stored.identity, result: stored.result })
    }

    /// The result, if it is the result of the job whose identity is `planned`;
    /// `describe` names the differences for the refusal's message.
    pub fn result_for(
        self,
        planned: &str,
        describe: impl FnOnce(&str, &str) -> String,
    ) -> Result<v1::JobResult, StoredRefusal> {
        if self.identity != planned {
            return Err(StoredRefusal::Identity(describe(&self.identity, planned)));
        }
        self.into_result()
    }

    /// The result with its identity, whichever job that is.
    pub fn into_result(self) -> Result<v1::JobResult, StoredRefusal> {
        let mut result =
            v1::JobResult::decode(self.result.as_slice()).map_err(|e| StoredRefusal::Unreadable(e.to_string()))?;
        result.identity = self.identity;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(identity: &str) -> v1::JobResult {
        v1::JobResult {
            training: Some(v1::TrainingSummary { epochs: 3, seconds: 1.5, ..Default::default() }),
            ages: vec![v1::AgeMetrics {
                scored: true,
                p_at_k: 0.6,
                base_rate: 0.5,
                k: 2,
                stocks: 4,
                ..Default::default()
            }],
            drift: None,
            identity: identity.to_string(),
            rankings: None,
            exposures: None,
            horizons: Vec::new(),
            model: Vec::new(),
            importance: None,
        }
    }

    fn same(_: &str, _: &str) -> String {
        "differs".into()
    }

    #[test]
    fn a_sealed_result_opens_for_its_own_job_only() {
        let bytes = seal("{\"job\":1}", &result(""));
        let stored = Stored::read(&bytes).expect("intact");
        assert_eq!(stored.identity, "{\"job\":1}");
        let opened = stored.clone().result_for("{\"job\":1}", same).expect("same job");
        assert_eq!(opened, result("{\"job\":1}"));
        let refused = stored.result_for("{\"job\":2}", same).expect_err("another job");
        assert_eq!(refused.reason(), "identity");
    }

    #[test]
    fn the_reasons_are_every_refusal_s_reason() {
        let refusals = [
            StoredRefusal::Unreadable(String::new()),
            StoredRefusal::Format { found: String::new() },
            StoredRefusal::Checksum,
            StoredRefusal::Identity(String::new()),
        ];
        assert_eq!(refusals.map(|r| r.reason()), StoredRefusal::REASONS);
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let bytes = seal("{\"job\":1}", &result(""));
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x01;
            let outcome = Stored::read(&damaged).and_then(|s| s.result_for("{\"job\":1}", same));
            assert!(outcome.is_err(), "flipping a bit of byte {index} went unnoticed");
        }
    }

    #[test]
    fn a_bare_result_of_the_earlier_format_is_not_reused() {
        let mut old = result("");
        old.identity.clear();
        let refusal = Stored::read(&old.encode_to_vec()).expect_err("earlier format");
        assert!(matches!(refusal.reason(), "format" | "unreadable"), "{refusal}");
        assert_eq!(Stored::read(b"").expect_err("empty").reason(), "format");
    }
}
