//! The decoded-size budget of a reported result, checked on the wire bytes before the
//! message is decoded.
//!
//! Protobuf lets a small message decode into a large one: an empty `AgeMetrics` is two
//! bytes on the wire and some 80 in memory, so a 64 MiB `ReportResultRequest` of empty
//! sub-messages would decode to gigabytes. [`check_report`] walks the encoded request
//! without allocating, counts what would be materialised, and compares it with the shape
//! of the job the result claims to be (its identity, carried in the same message):
//!
//! - `ages`: at most one per calendar day of the job's score dates (ages are trading
//!   days), and never more than [`MAX_AGES`] (checked while counting, so a hostile
//!   message is refused after a few kilobytes);
//! - `drift.features`: the identity's feature count; `drift.training_counts`: features ×
//!   10; `drift.scored_days`: at most the ages; `drift.day_counts_fixed`: exactly
//!   scored days × features × 10 counts of `day_count_width` bytes;
//! - the drift of protocols 1 and 2 (a message per feature and day, varint day counts) is
//!   not accepted from workers (it is still read from stored results);
//! - `rankings.lengths`: at most one per age (the indices are bytes, as sent);
//! - `exposures.factors`: at most the 8 style factors (the values are bytes, as sent);
//! - `importance.loss`, `importance.rank_ic`: at most one value per feature of the
//!   identity;
//! - `horizons`: fewer than the identity's horizons (the primary one is `ages`), each
//!   with at most as many ages as `ages` (and never more than [`MAX_HORIZONS`] or
//!   [`MAX_AGES`] while counting);
//! - singular sub-messages (`result`, `drift`, `training`, `rankings`, `exposures`,
//!   `importance`) and the identity
//!   appear at most once (protobuf would merge repeats, adding their counts up);
//! - the identity is at most [`MAX_IDENTITY_BYTES`] and parses as a job identity;
//! - `model` (bytes, decoded to as many) only in the result of a training-only job (an
//!   identity that scores no day), at most once and at most [`MAX_MODEL_BYTES`].
//!
//! What passes decodes to at most a few times its wire size plus the job's own shape.
//! The exact checks (identity hash, metric ranges, counts) follow after decoding.

use std::marker::PhantomData;

use bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use wf_shared::drift::BINS;
use wf_shared::exposure::STYLE_FACTORS;
use wf_shared::plan::JobIdentity;

use crate::{ConversionError, v1};

/// The most ages any result may have (about 40 years of trading days).
pub const MAX_AGES: u64 = 10_000;

/// The most kept horizons any result may have (checked while counting; the job's own
/// horizon count is checked once its identity is read).
pub const MAX_HORIZONS: u64 = 64;

/// The longest identity accepted (real ones are about 1 KB).
pub const MAX_IDENTITY_BYTES: usize = 64 * 1024;

/// The largest trained model a result may carry (a training-only job's weights file;
/// the largest model configurations write a few MiB). Below the coordinator's 64 MiB
/// limit on a worker's message, so a worker can tell in advance why one is refused.
pub const MAX_MODEL_BYTES: usize = 48 << 20;

fn invalid(field: &str, reason: impl Into<String>) -> ConversionError {
    ConversionError { field: field.into(), reason: reason.into() }
}

/// One field of an encoded message: its number and value (length-delimited values as
/// their bytes).
enum Value<'a> {
    Varint(u64),
    Fixed,
    Bytes(&'a [u8]),
}

fn varint(bytes: &mut &[u8], field: &str) -> Result<u64, ConversionError> {
    let mut value = 0u64;
    for shift in 0..10 {
        let Some((&byte, rest)) = bytes.split_first() else {
            return Err(invalid(field, "truncated varint"));
        };
        *bytes = rest;
        value |= u64::from(byte & 0x7F) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid(field, "varint longer than 10 bytes"))
}

/// Calls `visit` with every field of the message `bytes` (named `field` in errors).
fn fields<'a>(
    mut bytes: &'a [u8],
    field: &str,
    mut visit: impl FnMut(u64, Value<'a>) -> Result<(), ConversionError>,
) -> Result<(), ConversionError> {
    while !bytes.is_empty() {
        let key = varint(&mut bytes, field)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut bytes, field)?),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                bytes = bytes.get(width..).ok_or_else(|| invalid(field, "truncated fixed-width value"))?;
                Value::Fixed
            }
            2 => {
                let length = varint(&mut bytes, field)?;
                let length = usize::try_from(length)
                    .ok()
                    .filter(|&l| l <= bytes.len())
                    .ok_or_else(|| invalid(field, "a length runs past the message"))?;
                let (value, rest) = bytes.split_at(length);
                bytes = rest;
                Value::Bytes(value)
            }
            other => return Err(invalid(field, format!("unsupported wire type {other}"))),
        };
        visit(key >> 3, value)?;
    }
    Ok(())
}

/// What a `JobResult` on the wire would materialise.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts<'a> {
    ages: u64,
    drift: bool,
    features: u64,
    scored_days: u64,
    training_counts: u64,
    width: u64,
    fixed_bytes: u64,
    identity: Option<&'a [u8]>,
    rankings: bool,
    ranked_ages: u64,
    exposures: bool,
    exposure_factors: u64,
    horizons: u64,
    /// The most ages of one kept horizon.
    horizon_ages: u64,
    importance: bool,
    /// The more numerous of the importance's loss and RankIC values.
    importance_values: u64,
    /// Bytes of the trained model (`None`: absent).
    model: Option<u64>,
}

fn once(seen: &mut bool, field: &str) -> Result<(), ConversionError> {
    if std::mem::replace(seen, true) {
        return Err(invalid(field, "appears twice (protobuf would merge the two)"));
    }
    Ok(())
}

fn bytes_of<'a>(value: Value<'a>, field: &str) -> Result<&'a [u8], ConversionError> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        _ => Err(invalid(field, "wrong wire type")),
    }
}

fn drift_counts<'a>(bytes: &'a [u8], counts: &mut Counts<'a>) -> Result<(), ConversionError> {
    let mut seen_fixed = false;
    fields(bytes, "result.drift", |number, value| {
        match number {
            1 | 2 => {
                return Err(invalid(
                    "result.drift",
                    "a message per feature and day is protocol 1; send day_counts_fixed",
                ));
            }
            6 => {
                return Err(invalid(
                    "result.drift.day_counts",
                    "varint day counts are protocol 2; send day_counts_fixed",
                ));
            }
            3 | 4 | 7 => {
                let Value::Varint(v) = value else { return Err(invalid("result.drift", "wrong wire type")) };
                match number {
                    3 => counts.features = v,
                    4 => counts.scored_days = v,
                    _ => counts.width = v,
                }
            }
            5 => match value {
                // Packed: one count per byte without the continuation bit.
                Value::Bytes(packed) => {
                    counts.training_counts += packed.iter().filter(|&&b| b & 0x80 == 0).count() as u64;
                }
                Value::Varint(_) => counts.training_counts += 1,
                Value::Fixed => return Err(invalid("result.drift.training_counts", "wrong wire type")),
            },
            8 => {
                once(&mut seen_fixed, "result.drift.day_counts_fixed")?;
                counts.fixed_bytes = bytes_of(value, "result.drift.day_counts_fixed")?.len() as u64;
            }
            _ => {}
        }
        if counts.training_counts > MAX_AGES * BINS as u64 {
            return Err(invalid("result.drift.training_counts", "far more counts than any job has"));
        }
        Ok(())
    })
}

fn result_counts(bytes: &[u8]) -> Result<Counts<'_>, ConversionError> {
    let mut counts = Counts::default();
    let mut seen_training = false;
    fields(bytes, "result", |number, value| {
        match number {
            1 => {
                once(&mut seen_training, "result.training")?;
                bytes_of(value, "result.training")?;
            }
            2 => {
                bytes_of(value, "result.ages")?;
                counts.ages += 1;
                if counts.ages > MAX_AGES {
                    return Err(invalid("result.ages", format!("more than {MAX_AGES} entries")));
                }
            }
            3 => {
                once(&mut counts.drift, "result.drift")?;
                drift_counts(bytes_of(value, "result.drift")?, &mut counts)?;
            }
            5 => {
                once(&mut counts.rankings, "result.rankings")?;
                // Only the packed lengths grow in decoding (4 bytes per 1-byte varint);
                // the indices stay the bytes they are sent as.
                fields(bytes_of(value, "result.rankings")?, "result.rankings", |number, value| {
                    if number == 2 {
                        match value {
                            Value::Bytes(packed) => {
                                counts.ranked_ages += packed.iter().filter(|&&b| b & 0x80 == 0).count() as u64;
                            }
                            _ => counts.ranked_ages += 1,
                        }
                        if counts.ranked_ages > MAX_AGES {
                            return Err(invalid("result.rankings.lengths", format!("more than {MAX_AGES} entries")));
                        }
                    }
                    Ok(())
                })?;
            }
            6 => {
                once(&mut counts.exposures, "result.exposures")?;
                // The values are bytes and decode to as many; the factor names are bounded.
                fields(bytes_of(value, "result.exposures")?, "result.exposures", |number, _| {
                    if number == 1 {
                        counts.exposure_factors += 1;
                        if counts.exposure_factors > STYLE_FACTORS.len() as u64 {
                            return Err(invalid(
                                "result.exposures.factors",
                                format!("more than the {} style factors", STYLE_FACTORS.len()),
                            ));
                        }
                    }
                    Ok(())
                })?;
            }
            7 => {
                counts.horizons += 1;
                if counts.horizons > MAX_HORIZONS {
                    return Err(invalid("result.horizons", format!("more than {MAX_HORIZONS} entries")));
                }
                let mut ages = 0u64;
                fields(bytes_of(value, "result.horizons")?, "result.horizons", |number, value| {
                    if number == 2 {
                        bytes_of(value, "result.horizons.ages")?;
                        ages += 1;
                        if ages > MAX_AGES {
                            return Err(invalid("result.horizons.ages", format!("more than {MAX_AGES} entries")));
                        }
                    }
                    Ok(())
                })?;
                counts.horizon_ages = counts.horizon_ages.max(ages);
            }
            8 => {
                once(&mut counts.importance, "result.importance")?;
                let (mut loss, mut rank_ic) = (0u64, 0u64);
                fields(bytes_of(value, "result.importance")?, "result.importance", |number, value| {
                    let count = match value {
                        // Packed: 4 bytes a value, decoded to as many.
                        Value::Bytes(packed) => packed.len() as u64 / 4,
                        _ => 1,
                    };
                    match number {
                        4 => loss += count,
                        5 => rank_ic += count,
                        _ => {}
                    }
                    Ok(())
                })?;
                counts.importance_values = loss.max(rank_ic);
            }
            9 => {
                if counts.model.is_some() {
                    return Err(invalid("result.model", "appears twice"));
                }
                let model = bytes_of(value, "result.model")?.len();
                if model > MAX_MODEL_BYTES {
                    return Err(invalid(
                        "result.model",
                        format!("{model} bytes, more than the limit of {MAX_MODEL_BYTES}"),
                    ));
                }
                counts.model = Some(model as u64);
            }
            4 => {
                if counts.identity.is_some() {
                    return Err(invalid("result.identity", "appears twice"));
                }
                let identity = bytes_of(value, "result.identity")?;
                if identity.len() > MAX_IDENTITY_BYTES {
                    return Err(invalid(
                        "result.identity",
                        format!("{} bytes, more than the limit of {MAX_IDENTITY_BYTES}", identity.len()),
                    ));
                }
                counts.identity = Some(identity);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(counts)
}

/// At most one importance value per feature of the job.
fn importance_fits(counts: &Counts<'_>, identity: &JobIdentity) -> Result<(), ConversionError> {
    if counts.importance_values > identity.features.len() as u64 {
        return Err(invalid(
            "result.importance",
            format!(
                "{} values per list, but the job reads {} features",
                counts.importance_values,
                identity.features.len()
            ),
        ));
    }
    Ok(())
}

/// Checks an encoded `ReportResultRequest` against the budget (see the module's docs):
/// the error names the field, the value and the limit.
pub fn check_report(bytes: &[u8]) -> Result<(), ConversionError> {
    let mut result = None;
    fields(bytes, "request", |number, value| {
        if number == 4 {
            if result.is_some() {
                return Err(invalid("result", "appears twice (protobuf would merge the two)"));
            }
            result = Some(bytes_of(value, "result")?);
        }
        Ok(())
    })?;
    let Some(result) = result else { return Ok(()) };
    let counts = result_counts(result)?;
    let identity = counts.identity.ok_or_else(|| invalid("result.identity", "missing"))?;
    let identity: JobIdentity = std::str::from_utf8(identity)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| invalid("result.identity", "not a job identity"))?;
    let (days, scored) = match identity.score {
        Some([first, last]) => {
            (u64::try_from((last - first).num_days() + 1).unwrap_or(0), format!("{first} to {last}"))
        }
        None => (0, "a training-only job".to_string()),
    };
    if counts.model.is_some() && identity.score.is_some() {
        return Err(invalid(
            "result.model",
            format!("only a training-only job carries its model; this one scores {scored}"),
        ));
    }
    if counts.ages > days {
        return Err(invalid(
            "result.ages",
            format!("{} entries, but the job scores at most {days} days ({scored})", counts.ages),
        ));
    }
    if counts.horizons >= identity.horizons.len() as u64 && counts.horizons > 0 {
        return Err(invalid(
            "result.horizons",
            format!(
                "{} entries, but the job trains {} horizons (the primary one is in `ages`)",
                counts.horizons,
                identity.horizons.len()
            ),
        ));
    }
    if counts.horizon_ages > counts.ages {
        return Err(invalid(
            "result.horizons.ages",
            format!("{} entries, more than the {} ages", counts.horizon_ages, counts.ages),
        ));
    }
    if counts.ranked_ages > counts.ages {
        return Err(invalid(
            "result.rankings.lengths",
            format!("{} ages ranked, more than the {} ages", counts.ranked_ages, counts.ages),
        ));
    }
    if !counts.drift {
        return importance_fits(&counts, &identity);
    }
    let features = identity.features.len() as u64;
    if counts.features != features {
        return Err(invalid(
            "result.drift.features",
            format!("{}, but the job reads {features} features", counts.features),
        ));
    }
    if counts.training_counts != features * BINS as u64 {
        return Err(invalid(
            "result.drift.training_counts",
            format!("{} counts, expected {features} features x {BINS}", counts.training_counts),
        ));
    }
    if counts.scored_days > counts.ages {
        return Err(invalid(
            "result.drift.scored_days",
            format!("{} scored days, more than the {} ages", counts.scored_days, counts.ages),
        ));
    }
    let expected = counts.scored_days * features * BINS as u64 * counts.width;
    if !matches!(counts.width, 1 | 2 | 4) || counts.fixed_bytes != expected {
        return Err(invalid(
            "result.drift.day_counts_fixed",
            format!(
                "{} bytes, expected {} days x {features} features x {BINS} counts of {} bytes (1, 2 or 4)",
                counts.fixed_bytes, counts.scored_days, counts.width
            ),
        ));
    }
    importance_fits(&counts, &identity)
}

/// A prost codec that checks a `ReportResultRequest` against [`check_report`] before
/// decoding it; every other message decodes as with `tonic_prost::ProstCodec`. The
/// generated services use it (see `build.rs`).
#[derive(Debug)]
pub struct BudgetCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BudgetCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for BudgetCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = BudgetDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BudgetDecoder(PhantomData)
    }
}

/// The decoder of [`BudgetCodec`].
#[derive(Debug)]
pub struct BudgetDecoder<U>(PhantomData<U>);

impl<U: prost::Message + Default + 'static> Decoder for BudgetDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if std::any::TypeId::of::<U>() == std::any::TypeId::of::<v1::ReportResultRequest>() {
            // The message is one contiguous buffer: this takes it without copying.
            let bytes = buf.copy_to_bytes(buf.remaining());
            check_report(&bytes).map_err(|error| Status::invalid_argument(error.to_string()))?;
            return U::decode(bytes).map(Some).map_err(|error| Status::invalid_argument(error.to_string()));
        }
        U::decode(buf).map(Some).map_err(|error| Status::internal(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::NaiveDate;
    use proptest::prelude::*;
    use prost::Message;
    use wf_shared::age::{HorizonAges, JobResult, TrainingSummary};
    use wf_shared::drift::DriftPath;
    use wf_shared::exposure::Exposures;
    use wf_shared::importance::Importance;
    use wf_shared::metric::DayMetrics;

    use super::*;

    /// The identity of a job with `features` features scoring `days` calendar days.
    fn identity(features: usize, days: i64) -> String {
        let config = wf_shared::spec::SweepConfig::from_toml(include_str!("../../configs/quickstart.toml"))
            .expect("quickstart spec");
        let model = wf_shared::model::ModelSpec::resolve(1, &config).expect("model");
        let first = NaiveDate::from_ymd_opt(2022, 1, 3).expect("date");
        JobIdentity {
            format: wf_shared::plan::JOB_FORMAT.into(),
            trainer: wf_shared::model::TRAINER_VERSION,
            data: wf_shared::plan::DataRead {
                days: [first, first],
                digest: wf_shared::DatasetHash::from_bytes([7; 32]),
            },
            features: (0..features).map(|f| format!("f{f}")).collect(),
            model,
            seed: 1,
            train: [first, first],
            horizons: config.horizons.clone(),
            primary_horizon: config.primary_horizon,
            k: config.k,
            embargo: 0,
            score: Some([first, first + chrono::Days::new(days as u64 - 1)]),
            ranks: None,
        }
        .to_canonical()
    }

    /// A well-formed result of `ages` ages (the first `scored` with drift) over `features`.
    fn result(ages: usize, scored: usize, features: usize) -> v1::JobResult {
        let day = DayMetrics {
            p_at_k: 0.5,
            base_rate: 0.5,
            median_p_at_k: 0.5,
            median_base_rate: 0.5,
            rank_ic: None,
            spread: 0.0,
            top_k_mean: 0.0,
            stocks: 50,
            k: 5,
        };
        v1::JobResult::from(JobResult {
            training: TrainingSummary { epochs: 1, seconds: 0.1, device: "cpu".into(), ..Default::default() },
            ages: vec![Some(day); ages],
            drift: DriftPath { training: vec![[1; BINS]; features], days: vec![vec![[2; BINS]; features]; scored] },
            rankings: (0..ages).map(|age| (0..5).map(|r| (age * 7 + r) as u32).collect()).collect(),
            exposures: Exposures { factors: vec!["vol_60".into(), "ret_5".into()], values: vec![-1234; ages * 2] },
            // The quickstart trains horizons 1 and 5; 5 is the primary.
            horizons: vec![HorizonAges { horizon: 1, ages: vec![Some(day); ages] }],
            importance: Importance {
                days: 21,
                base_loss: 1.5,
                base_rank_ic: 0.02,
                loss: vec![0.01; features],
                rank_ic: vec![0.001; features],
            },
        })
    }

    fn request(result: v1::JobResult) -> Vec<u8> {
        v1::ReportResultRequest {
            worker_id: "w".into(),
            job_key: "k".into(),
            result: Some(result),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn refusal(bytes: &[u8]) -> ConversionError {
        check_report(bytes).expect_err("refused")
    }

    #[test]
    fn only_a_training_only_job_carries_a_model_of_bounded_size() {
        let mut training_only: JobIdentity = serde_json::from_str(&identity(12, 1)).expect("identity");
        training_only.score = None;
        let with_model =
            |identity: String, model: Vec<u8>| request(v1::JobResult { identity, model, ..result(0, 0, 12) });
        let fits = with_model(training_only.to_canonical(), vec![7; 4096]);
        assert_eq!(check_report(&fits), Ok(()));
        assert_eq!(
            v1::ReportResultRequest::decode(fits.as_slice()).expect("decodes").result.expect("result").model.len(),
            4096
        );

        let scoring = refusal(&with_model(identity(12, 1), vec![7; 4096]));
        assert_eq!(scoring.field, "result.model");
        assert!(scoring.reason.contains("only a training-only job"), "{scoring}");

        let large = refusal(&with_model(training_only.to_canonical(), vec![0; MAX_MODEL_BYTES + 1]));
        assert_eq!(large.field, "result.model");
        assert!(large.reason.contains("more than the limit"), "{large}");

        // Twice (protobuf would keep the last): refused by name.
        let mut inner =
            v1::JobResult { identity: training_only.to_canonical(), model: vec![7; 16], ..result(0, 0, 12) }
                .encode_to_vec();
        inner.extend_from_slice(&[0x4A, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut twice = vec![0x22];
        prost::encoding::encode_varint(inner.len() as u64, &mut twice);
        twice.extend_from_slice(&inner);
        let twice = refusal(&twice);
        assert_eq!((twice.field.as_str(), twice.reason.as_str()), ("result.model", "appears twice"));
    }

    #[test]
    fn a_real_result_passes_and_decodes() {
        let mut message = result(40, 40, 12);
        message.identity = identity(12, 60);
        let bytes = request(message);
        assert_eq!(check_report(&bytes), Ok(()));
        assert!(v1::ReportResultRequest::decode(bytes.as_slice()).is_ok());
        // A request without a result has nothing to materialise.
        assert_eq!(check_report(&v1::ReportResultRequest::default().encode_to_vec()), Ok(()));
    }

    #[test]
    fn a_64_mib_result_of_empty_ages_is_refused_after_a_few_kilobytes() {
        // 33 million empty AgeMetrics: ~2.5 GB once decoded.
        let mut result = Vec::with_capacity(64 << 20);
        while result.len() < (64 << 20) - 16 {
            result.extend_from_slice(&[0x12, 0x00]);
        }
        let mut bytes = vec![0x22];
        let mut length = result.len() as u64;
        while length >= 0x80 {
            bytes.push((length as u8) | 0x80);
            length >>= 7;
        }
        bytes.push(length as u8);
        bytes.extend_from_slice(&result);
        let started = Instant::now();
        let error = refusal(&bytes);
        assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
        assert_eq!(error.field, "result.ages");
        assert!(error.reason.contains("more than 10000"), "{error}");
    }

    #[test]
    fn each_shape_beyond_the_jobs_own_is_refused_naming_the_field() {
        type Change = Box<dyn Fn(&mut v1::JobResult)>;
        let cases: Vec<(&str, Change)> = vec![
            ("result.ages", Box::new(|m| m.identity = identity(12, 30))),
            ("result.drift.features", Box::new(|m| m.identity = identity(11, 60))),
            (
                "result.drift.training_counts",
                Box::new(|m| {
                    m.drift.as_mut().expect("drift").training_counts.push(1);
                }),
            ),
            ("result.drift.scored_days", Box::new(|m| m.drift.as_mut().expect("drift").scored_days = 41)),
            ("result.drift.day_counts_fixed", Box::new(|m| m.drift.as_mut().expect("drift").day_counts_fixed.push(0))),
            ("result.drift.day_counts_fixed", Box::new(|m| m.drift.as_mut().expect("drift").day_count_width = 3)),
            ("result.drift.day_counts", Box::new(|m| m.drift.as_mut().expect("drift").day_counts = vec![1])),
            (
                "result.drift",
                Box::new(|m| m.drift.as_mut().expect("drift").training = vec![v1::Bins { counts: vec![] }; 3]),
            ),
            ("result.rankings.lengths", Box::new(|m| m.rankings.as_mut().expect("rankings").lengths.push(5))),
            ("result.horizons", Box::new(|m| m.horizons.push(m.horizons[0].clone()))),
            ("result.importance", Box::new(|m| m.importance.as_mut().expect("importance").loss.push(0.5))),
            ("result.horizons.ages", Box::new(|m| m.horizons[0].ages.push(v1::AgeMetrics::default()))),
            (
                "result.exposures.factors",
                Box::new(|m| m.exposures.as_mut().expect("exposures").factors = vec!["vol_20".into(); 9]),
            ),
            ("result.identity", Box::new(|m| m.identity = String::new())),
            ("result.identity", Box::new(|m| m.identity = "{\"not\": \"an identity\"}".into())),
            ("result.identity", Box::new(|m| m.identity = "x".repeat(MAX_IDENTITY_BYTES + 1))),
        ];
        for (field, change) in cases {
            let mut message = result(40, 40, 12);
            message.identity = identity(12, 60);
            change(&mut message);
            let error = refusal(&request(message));
            assert_eq!(error.field, field, "{error}");
        }
        // Repeated singular sub-messages would merge (and add their counts up).
        let mut message = result(40, 40, 12);
        message.identity = identity(12, 60);
        let mut bytes = request(message.clone());
        bytes.extend(request(message));
        assert_eq!(refusal(&bytes).field, "result");
    }

    /// A wire key (field number and wire type).
    fn key(field: u64, wire: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut value = field << 3 | wire;
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random shapes: whatever passes decodes to no more ages than the job's days and
        /// a drift of exactly its features; nothing panics; every answer is quick.
        #[test]
        fn random_report_shapes_are_bounded_by_the_jobs_shape(
            ages in 0usize..200,
            scored in 0usize..200,
            features in 0usize..20,
            days in 1i64..200,
            fault in 0u8..8,
        ) {
            // Most cases well-formed (so some pass), the rest off in one way.
            let identity_features = if fault == 0 { features + 1 } else { features };
            let mut message = result(ages, scored.min(ages), features);
            message.identity = identity(identity_features, days);
            let drift = message.drift.as_mut().expect("drift");
            match fault {
                1 => drift.training_counts.push(1),
                2 => drift.day_count_width = 3,
                3 => drift.scored_days += 1,
                _ => {}
            }
            let bytes = request(message);
            let started = Instant::now();
            let verdict = check_report(&bytes);
            prop_assert!(started.elapsed() < Duration::from_millis(100));
            if verdict.is_ok() {
                let decoded = v1::ReportResultRequest::decode(bytes.as_slice()).expect("decodes");
                let result = decoded.result.expect("result");
                prop_assert!(result.ages.len() as i64 <= days);
                let drift = result.drift.clone().expect("drift");
                prop_assert_eq!(drift.features as usize, identity_features);
                prop_assert_eq!(drift.training_counts.len(), identity_features * BINS);
                // (A drift of no features on scored days is left to the conversion.)
                if features > 0 || scored.min(ages) == 0 {
                    prop_assert!(JobResult::try_from(result).is_ok());
                }
            }
        }

        /// Random field soup: never a panic, never slow.
        #[test]
        fn random_and_mutated_bytes_never_panic(
            parts in proptest::collection::vec((1u64..10, 0u64..6, proptest::collection::vec(any::<u8>(), 0..40)), 0..30),
            flip in any::<(usize, u8)>(),
        ) {
            let mut inner = Vec::new();
            for (field, wire, payload) in parts {
                inner.extend(key(field, wire));
                if wire == 2 {
                    inner.push(payload.len() as u8);
                }
                inner.extend(payload);
            }
            let mut bytes = key(4, 2);
            bytes.push((inner.len() & 0x7F) as u8 | if inner.len() > 127 { 0x80 } else { 0 });
            if inner.len() > 127 {
                bytes.push((inner.len() >> 7) as u8);
            }
            bytes.extend(inner);
            if !bytes.is_empty() {
                let at = flip.0 % bytes.len();
                bytes[at] ^= flip.1;
            }
            let started = Instant::now();
            let _ = check_report(&bytes);
            prop_assert!(started.elapsed() < Duration::from_millis(100));
        }
    }
}
