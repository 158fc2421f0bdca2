//! `JobResult` on the wire: a job's training summary, metrics by age and drift counts.

use wf_shared::age::{HorizonAges, JobResult, TrainingSummary};
use wf_shared::drift::{BINS, DriftPath};
use wf_shared::exposure::{Exposures, MISSING, STYLE_FACTORS};
use wf_shared::importance::Importance;
use wf_shared::metric::DayMetrics;

use crate::{ConversionError, v1};

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConversionError {
    ConversionError { field: field.into(), reason: reason.into() }
}

impl From<JobResult> for v1::JobResult {
    fn from(result: JobResult) -> Self {
        let training = result.training;
        Self {
            training: Some(v1::TrainingSummary {
                epochs: training.epochs,
                best_epoch: training.best_epoch,
                best_validation_loss: training.best_validation_loss,
                seconds: training.seconds,
                device: training.device,
                training_days: training.training_days as u32,
                validation_days: training.validation_days as u32,
            }),
            ages: wire_ages(&result.ages),
            drift: Some(fixed_drift(&result.drift)),
            identity: String::new(),
            rankings: packed_rankings(&result.rankings),
            exposures: packed_exposures(&result.exposures),
            importance: result.importance.is_measured().then(|| v1::Importance {
                days: result.importance.days,
                base_loss: result.importance.base_loss,
                base_rank_ic: result.importance.base_rank_ic,
                loss: result.importance.loss.clone(),
                rank_ic: result.importance.rank_ic.clone(),
            }),
            horizons: result
                .horizons
                .iter()
                .map(|kept| v1::HorizonAges { horizon: kept.horizon, ages: wire_ages(&kept.ages) })
                .collect(),
            model: Vec::new(),
        }
    }
}

fn wire_ages(ages: &[Option<DayMetrics>]) -> Vec<v1::AgeMetrics> {
    ages.iter()
        .map(|day| match day {
            Some(day) => v1::AgeMetrics {
                scored: true,
                p_at_k: day.p_at_k,
                base_rate: day.base_rate,
                rank_ic: day.rank_ic,
                spread: day.spread,
                top_k_mean: day.top_k_mean,
                stocks: day.stocks as u32,
                k: day.k as u32,
                median_p_at_k: day.median_p_at_k,
                median_base_rate: day.median_base_rate,
            },
            None => v1::AgeMetrics::default(),
        })
        .collect()
}

/// Ages from the wire, each checked (`field` names the list: `result.ages`).
fn ages_of(field: &str, ages: &[v1::AgeMetrics]) -> Result<Vec<Option<DayMetrics>>, ConversionError> {
    ages.iter()
        .enumerate()
        .map(|(age, day)| {
            if !day.scored {
                return Ok(None);
            }
            let field = |name: &str| format!("{field}[{age}].{name}");
            for (name, value) in [
                ("p_at_k", day.p_at_k),
                ("base_rate", day.base_rate),
                ("median_p_at_k", day.median_p_at_k),
                ("median_base_rate", day.median_base_rate),
            ] {
                if !(0.0..=1.0).contains(&value) {
                    return Err(invalid(field(name), format!("must be in [0, 1], got {value}")));
                }
            }
            if let Some(rank_ic) = day.rank_ic
                && !(-1.0..=1.0).contains(&rank_ic)
            {
                return Err(invalid(field("rank_ic"), format!("must be in [-1, 1], got {rank_ic}")));
            }
            for (name, value) in [("spread", day.spread), ("top_k_mean", day.top_k_mean)] {
                if !value.is_finite() {
                    return Err(invalid(field(name), format!("must be finite, got {value}")));
                }
            }
            if day.k == 0 || day.k > day.stocks {
                return Err(invalid(field("k"), format!("must be in 1..={}, got {}", day.stocks, day.k)));
            }
            Ok(Some(DayMetrics {
                p_at_k: day.p_at_k,
                base_rate: day.base_rate,
                median_p_at_k: day.median_p_at_k,
                median_base_rate: day.median_base_rate,
                rank_ic: day.rank_ic,
                spread: day.spread,
                top_k_mean: day.top_k_mean,
                stocks: day.stocks as usize,
                k: day.k as usize,
            }))
        })
        .collect()
}

/// Importance from the wire: as many loss as RankIC values, every value finite (the base
/// RankIC may be NaN: no validation day had one).
fn importance_of(message: Option<v1::Importance>) -> Result<Importance, ConversionError> {
    let Some(message) = message else { return Ok(Importance::default()) };
    if message.loss.len() != message.rank_ic.len() {
        return Err(invalid(
            "result.importance.rank_ic",
            format!("{} values, but {} loss values", message.rank_ic.len(), message.loss.len()),
        ));
    }
    if !message.base_loss.is_finite() {
        return Err(invalid("result.importance.base_loss", format!("must be finite, got {}", message.base_loss)));
    }
    if message.base_rank_ic.is_finite() && !(-1.0..=1.0).contains(&message.base_rank_ic) {
        return Err(invalid(
            "result.importance.base_rank_ic",
            format!("must be in [-1, 1] or NaN, got {}", message.base_rank_ic),
        ));
    }
    for (name, values) in [("loss", &message.loss), ("rank_ic", &message.rank_ic)] {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(invalid(
                format!("result.importance.{name}[{index}]"),
                format!("must be finite, got {}", values[index]),
            ));
        }
    }
    Ok(Importance {
        days: message.days,
        base_loss: message.base_loss,
        base_rank_ic: message.base_rank_ic,
        loss: message.loss,
        rank_ic: message.rank_ic,
    })
}

/// Exposures as little-endian i16s (`None` when no factor was measured).
fn packed_exposures(exposures: &Exposures) -> Option<v1::Exposures> {
    if exposures.factors.is_empty() {
        return None;
    }
    Some(v1::Exposures {
        factors: exposures.factors.clone(),
        values: exposures.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// The exposures of `ages` ages from the wire (none: not measured).
fn unpacked_exposures(message: Option<&v1::Exposures>, ages: usize) -> Result<Exposures, ConversionError> {
    let Some(message) = message else { return Ok(Exposures::default()) };
    for (index, factor) in message.factors.iter().enumerate() {
        if !STYLE_FACTORS.contains(&factor.as_str()) {
            return Err(invalid(
                format!("result.exposures.factors[{index}]"),
                format!("{factor:?} is not a style factor ({})", STYLE_FACTORS.join(", ")),
            ));
        }
        if message.factors[..index].contains(factor) {
            return Err(invalid(format!("result.exposures.factors[{index}]"), format!("{factor:?} appears twice")));
        }
    }
    let expected = ages as u64 * message.factors.len() as u64 * 2;
    if message.values.len() as u64 != expected {
        return Err(invalid(
            "result.exposures.values",
            format!(
                "{} bytes, expected {ages} ages x {} factors of 2 bytes",
                message.values.len(),
                message.factors.len()
            ),
        ));
    }
    let values: Vec<i16> = message.values.as_chunks::<2>().0.iter().map(|pair| i16::from_le_bytes(*pair)).collect();
    if let Some(index) = values.iter().position(|v| *v != MISSING && !(-10_000..=10_000).contains(v)) {
        return Err(invalid(
            "result.exposures.values",
            format!("value {index} is {}, outside -10000..=10000", values[index]),
        ));
    }
    Ok(Exposures { factors: message.factors.clone(), values })
}

/// Rankings bit-packed (`None` when no age keeps any).
fn packed_rankings(rankings: &[Vec<u32>]) -> Option<v1::Rankings> {
    if rankings.iter().all(Vec::is_empty) {
        return None;
    }
    let largest = rankings.iter().flatten().copied().max().unwrap_or(0);
    let bits = (32 - largest.leading_zeros()).max(1);
    let total: usize = rankings.iter().map(Vec::len).sum();
    // A 64-bit accumulator: whole bytes out as soon as they are full.
    let mut packed = Vec::with_capacity((total * bits as usize).div_ceil(8));
    let (mut acc, mut have) = (0u64, 0u32);
    for &index in rankings.iter().flatten() {
        acc |= u64::from(index) << have;
        have += bits;
        while have >= 8 {
            packed.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        packed.push(acc as u8);
    }
    Some(v1::Rankings {
        depth: rankings.iter().map(Vec::len).max().unwrap_or(0) as u32,
        lengths: rankings.iter().map(|r| r.len() as u32).collect(),
        bits,
        packed,
    })
}

/// The rankings of `ages` ages from the wire (none: no rankings kept).
fn unpacked_rankings(message: Option<&v1::Rankings>, ages: usize) -> Result<Vec<Vec<u32>>, ConversionError> {
    let Some(message) = message else { return Ok(Vec::new()) };
    if message.lengths.len() != ages {
        return Err(invalid(
            "result.rankings.lengths",
            format!("{} ages ranked, but the result has {ages} ages", message.lengths.len()),
        ));
    }
    if let Some((age, length)) = message.lengths.iter().enumerate().find(|(_, l)| **l > message.depth) {
        return Err(invalid(
            format!("result.rankings.lengths[{age}]"),
            format!("{length} ranks, more than the depth {}", message.depth),
        ));
    }
    if !(1..=32).contains(&message.bits) {
        return Err(invalid("result.rankings.bits", format!("must be 1 to 32, got {}", message.bits)));
    }
    let bits = message.bits as usize;
    let total: u64 = message.lengths.iter().map(|l| u64::from(*l)).sum();
    // Checked before anything is allocated: the indices are bounded by the bytes sent.
    if (total * bits as u64).div_ceil(8) != message.packed.len() as u64 {
        return Err(invalid(
            "result.rankings.packed",
            format!("{} bytes, expected {total} indices of {bits} bits", message.packed.len()),
        ));
    }
    let mask = if bits == 32 { u64::from(u32::MAX) } else { (1u64 << bits) - 1 };
    let (mut acc, mut have, mut bytes) = (0u64, 0usize, message.packed.iter());
    let mut read = || {
        while have < bits {
            acc |= u64::from(bytes.next().copied().unwrap_or(0)) << have;
            have += 8;
        }
        let index = (acc & mask) as u32;
        acc >>= bits;
        have -= bits;
        index
    };
    Ok(message.lengths.iter().map(|&length| (0..length).map(|_| read()).collect()).collect())
}

/// `drift` as protocol 3 writes it: day counts as fixed-width bytes.
fn fixed_drift(drift: &DriftPath) -> v1::Drift {
    let counts = || drift.days.iter().flat_map(|day| day.as_flattened()).copied();
    let width = match counts().max().unwrap_or(0) {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        _ => 4,
    };
    let mut fixed = Vec::with_capacity(drift.days.len() * drift.training.len() * BINS * width);
    match width {
        1 => fixed.extend(counts().map(|count| count as u8)),
        2 => fixed.extend(counts().flat_map(|count| (count as u16).to_le_bytes())),
        _ => fixed.extend(counts().flat_map(u32::to_le_bytes)),
    }
    v1::Drift {
        features: drift.training.len() as u32,
        scored_days: drift.days.len() as u32,
        training_counts: drift.training.as_flattened().to_vec(),
        day_count_width: width as u32,
        day_counts_fixed: fixed,
        ..v1::Drift::default()
    }
}

/// Little-endian integers of `W` bytes each (`bytes` holds a whole number of them).
fn read_fixed<const W: usize>(bytes: &[u8]) -> Vec<u32> {
    bytes
        .as_chunks::<W>()
        .0
        .iter()
        .map(|chunk| {
            let mut word = [0; 4];
            word[..W].copy_from_slice(chunk);
            u32::from_le_bytes(word)
        })
        .collect()
}

fn bins(field: impl Fn() -> String, message: &v1::Bins) -> Result<[u32; BINS], ConversionError> {
    <[u32; BINS]>::try_from(message.counts.as_slice())
        .map_err(|_| invalid(field(), format!("expected {BINS} bin counts, got {}", message.counts.len())))
}

impl TryFrom<v1::JobResult> for JobResult {
    type Error = ConversionError;

    fn try_from(message: v1::JobResult) -> Result<Self, Self::Error> {
        let training = message.training.ok_or_else(|| invalid("result.training", "missing"))?;
        if !training.seconds.is_finite() || training.seconds < 0.0 {
            return Err(invalid(
                "result.training.seconds",
                format!("must be finite and >= 0, got {}", training.seconds),
            ));
        }
        let ages = ages_of("result.ages", &message.ages)?;
        let mut horizons = Vec::with_capacity(message.horizons.len());
        for (index, kept) in message.horizons.iter().enumerate() {
            if kept.ages.len() != ages.len() {
                return Err(invalid(
                    format!("result.horizons[{index}].ages"),
                    format!("{} ages, but the result has {}", kept.ages.len(), ages.len()),
                ));
            }
            if horizons.iter().any(|h: &HorizonAges| h.horizon == kept.horizon) {
                return Err(invalid(
                    format!("result.horizons[{index}].horizon"),
                    format!("horizon {} appears twice", kept.horizon),
                ));
            }
            horizons.push(HorizonAges {
                horizon: kept.horizon,
                ages: ages_of(&format!("result.horizons[{index}].ages"), &kept.ages)?,
            });
        }
        let exposures = unpacked_exposures(message.exposures.as_ref(), ages.len())?;
        let importance = importance_of(message.importance)?;
        let rankings = unpacked_rankings(message.rankings.as_ref(), ages.len())?;
        let drift = message.drift.ok_or_else(|| invalid("result.drift", "missing"))?;
        let drift = if drift.training.is_empty() && drift.days.is_empty() {
            packed_drift(&drift)?
        } else {
            drift_of_messages(&drift)?
        };
        Ok(JobResult {
            training: TrainingSummary {
                epochs: training.epochs,
                best_epoch: training.best_epoch,
                best_validation_loss: training.best_validation_loss,
                seconds: training.seconds,
                device: training.device,
                training_days: training.training_days as usize,
                validation_days: training.validation_days as usize,
            },
            ages,
            drift,
            rankings,
            exposures,
            horizons,
            importance,
        })
    }
}

/// The drift of protocols 2 and 3: packed training counts, and day counts packed
/// (protocol 2) or fixed-width (protocol 3).
fn packed_drift(drift: &v1::Drift) -> Result<DriftPath, ConversionError> {
    if drift.features == 0 && drift.scored_days > 0 {
        // Nothing on the wire would bound the `scored_days` empty days to allocate.
        return Err(invalid("result.drift.features", format!("0 features on {} scored days", drift.scored_days)));
    }
    // u64 products of u32 counts: a hostile header cannot overflow them.
    let width = u64::from(drift.features) * BINS as u64;
    if drift.training_counts.len() as u64 != width {
        return Err(invalid(
            "result.drift.training_counts",
            format!("expected {} features x {BINS} counts, got {}", drift.features, drift.training_counts.len()),
        ));
    }
    let expected = u128::from(drift.scored_days) * u128::from(width);
    let shape = format!("{} days x {} features x {BINS} counts", drift.scored_days, drift.features);
    let fixed;
    let day_counts: &[u32] = match drift.day_count_width {
        0 => {
            if drift.day_counts.len() as u128 != expected {
                return Err(invalid(
                    "result.drift.day_counts",
                    format!("expected {shape}, got {}", drift.day_counts.len()),
                ));
            }
            &drift.day_counts
        }
        bytes @ (1 | 2 | 4) => {
            if !drift.day_counts.is_empty() {
                return Err(invalid("result.drift.day_counts", "must be empty when day_count_width is set"));
            }
            // Checked before decoding, so the decoded counts are bounded by the message.
            if drift.day_counts_fixed.len() as u128 != expected * u128::from(bytes) {
                return Err(invalid(
                    "result.drift.day_counts_fixed",
                    format!("expected {shape} of {bytes} bytes, got {} bytes", drift.day_counts_fixed.len()),
                ));
            }
            fixed = match bytes {
                1 => read_fixed::<1>(&drift.day_counts_fixed),
                2 => read_fixed::<2>(&drift.day_counts_fixed),
                _ => read_fixed::<4>(&drift.day_counts_fixed),
            };
            &fixed
        }
        other => {
            return Err(invalid(
                "result.drift.day_count_width",
                format!("must be 1, 2 or 4 (or 0 with day_counts), got {other}"),
            ));
        }
    };
    let bins = |counts: &[u32]| -> Vec<[u32; BINS]> { counts.as_chunks::<BINS>().0.to_vec() };
    // Both lengths match the header, so the day counts split into `scored_days` runs of
    // `training_counts.len()` (empty when there are no features).
    let width = drift.training_counts.len();
    let days = (0..drift.scored_days as usize).map(|day| bins(&day_counts[day * width..][..width])).collect();
    Ok(DriftPath { training: bins(&drift.training_counts), days })
}

/// The drift of protocol 1 (still read from stored results): a message per feature and day.
fn drift_of_messages(drift: &v1::Drift) -> Result<DriftPath, ConversionError> {
    let training = drift
        .training
        .iter()
        .enumerate()
        .map(|(feature, b)| bins(|| format!("result.drift.training[{feature}]"), b))
        .collect::<Result<Vec<_>, _>>()?;
    let features = training.len();
    let days = drift
        .days
        .iter()
        .enumerate()
        .map(|(age, day)| {
            if day.features.len() != features {
                return Err(invalid(
                    format!("result.drift.days[{age}].features"),
                    format!("expected {features} features, got {}", day.features.len()),
                ));
            }
            day.features
                .iter()
                .enumerate()
                .map(|(feature, b)| bins(|| format!("result.drift.days[{age}].features[{feature}]"), b))
                .collect()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DriftPath { training, days })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn sample() -> JobResult {
        let day = DayMetrics {
            p_at_k: 0.55,
            base_rate: 0.5,
            median_p_at_k: 0.6,
            median_base_rate: 0.45,
            rank_ic: None,
            spread: 0.01,
            top_k_mean: 0.002,
            stocks: 180,
            k: 20,
        };
        JobResult {
            training: TrainingSummary {
                epochs: 7,
                best_epoch: 3,
                seconds: 0.5,
                device: "cpu".into(),
                ..Default::default()
            },
            ages: vec![Some(day), None, Some(DayMetrics { rank_ic: Some(0.12), ..day })],
            drift: DriftPath { training: vec![[1; BINS], [2; BINS]], days: vec![vec![[3; BINS], [4; BINS]]; 3] },
            rankings: vec![vec![3, 1, 700, 2], vec![], vec![0, 5]],
            exposures: Exposures {
                factors: vec!["vol_60".into(), "ret_5".into()],
                values: vec![8123, -10_000, MISSING, MISSING, 0, 10_000],
            },
            horizons: vec![HorizonAges {
                horizon: 20,
                ages: vec![None, Some(DayMetrics { p_at_k: 0.6, ..day }), None],
            }],
            importance: Importance {
                days: 21,
                base_loss: 1.5,
                base_rank_ic: 0.02,
                loss: vec![0.25, -0.01],
                rank_ic: vec![0.03, 0.0],
            },
        }
    }

    #[test]
    fn bad_exposures_and_horizons_are_refused_naming_the_field() {
        let wire = v1::JobResult::from(sample());
        assert_eq!(wire.exposures.as_ref().map(|e| e.values.len()), Some(12), "3 ages x 2 factors x 2 bytes");
        let none = JobResult {
            exposures: Exposures::default(),
            horizons: Vec::new(),
            importance: Importance::default(),
            ..sample()
        };
        let bare = v1::JobResult::from(none.clone());
        assert!(bare.exposures.is_none() && bare.horizons.is_empty() && bare.importance.is_none());
        assert_eq!(JobResult::try_from(bare), Ok(none), "a result without them (trainer 4) still reads");
        type Change = fn(&mut v1::JobResult);
        let cases: [(&str, Change); 10] = [
            ("result.importance.rank_ic", |r| r.importance.as_mut().expect("kept").rank_ic.push(0.0)),
            ("result.importance.loss[1]", |r| r.importance.as_mut().expect("kept").loss[1] = f32::INFINITY),
            ("result.importance.base_rank_ic", |r| r.importance.as_mut().expect("kept").base_rank_ic = 2.0),
            ("result.exposures.factors[1]", |r| r.exposures.as_mut().expect("kept").factors[1] = "fwd_ret_5".into()),
            ("result.exposures.factors[1]", |r| r.exposures.as_mut().expect("kept").factors[1] = "vol_60".into()),
            ("result.exposures.values", |r| r.exposures.as_mut().expect("kept").values.pop().map(drop).unwrap_or(())),
            ("result.exposures.values", |r| {
                r.exposures.as_mut().expect("kept").values[0..2].copy_from_slice(&20_000i16.to_le_bytes())
            }),
            ("result.horizons[0].ages", |r| r.horizons[0].ages.push(v1::AgeMetrics::default())),
            ("result.horizons[1].horizon", |r| r.horizons.push(r.horizons[0].clone())),
            ("result.horizons[0].ages[1].p_at_k", |r| r.horizons[0].ages[1].p_at_k = 1.5),
        ];
        for (field, change) in cases {
            let mut message = wire.clone();
            change(&mut message);
            let error = JobResult::try_from(message).expect_err("refused");
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn rankings_are_bit_packed_and_bad_ones_are_refused_naming_the_field() {
        let wire = v1::JobResult::from(sample());
        let rankings = wire.rankings.clone().expect("kept");
        assert_eq!(
            (rankings.bits, rankings.depth, rankings.lengths.clone()),
            (10, 4, vec![4, 0, 2]),
            "700 needs 10 bits"
        );
        assert_eq!(rankings.packed.len(), 8, "6 indices x 10 bits");
        let none = JobResult { rankings: Vec::new(), ..sample() };
        assert!(v1::JobResult::from(none).rankings.is_none(), "no rankings, no message");
        type Change = fn(&mut v1::Rankings);
        let cases: [(&str, Change); 4] = [
            ("result.rankings.lengths", |r| r.lengths.push(0)),
            ("result.rankings.lengths[0]", |r| r.depth = 3),
            ("result.rankings.bits", |r| r.bits = 33),
            ("result.rankings.packed", |r| r.packed.push(0)),
        ];
        for (field, change) in cases {
            let mut message = wire.clone();
            change(message.rankings.as_mut().expect("kept"));
            let error = JobResult::try_from(message).expect_err("refused");
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn job_result_round_trips_through_the_wire() {
        let bytes = v1::JobResult::from(sample()).encode_to_vec();
        let decoded = v1::JobResult::decode(bytes.as_slice()).expect("valid bytes");
        assert_eq!(JobResult::try_from(decoded), Ok(sample()));
    }

    /// `result` as protocol 1 wrote it: a drift message per feature and day.
    fn protocol_1(result: JobResult) -> v1::JobResult {
        let bins = |counts: &[u32; BINS]| v1::Bins { counts: counts.to_vec() };
        let drift = v1::Drift {
            training: result.drift.training.iter().map(bins).collect(),
            days: result
                .drift
                .days
                .iter()
                .map(|day| v1::DriftDay { features: day.iter().map(bins).collect() })
                .collect(),
            ..v1::Drift::default()
        };
        v1::JobResult { drift: Some(drift), ..v1::JobResult::from(result) }
    }

    /// `result` as protocol 2 wrote it: every day count in one varint run.
    fn protocol_2(result: JobResult) -> v1::JobResult {
        let drift = v1::Drift {
            features: result.drift.training.len() as u32,
            scored_days: result.drift.days.len() as u32,
            training_counts: result.drift.training.as_flattened().to_vec(),
            day_counts: result.drift.days.iter().flat_map(|day| day.as_flattened()).copied().collect(),
            ..v1::Drift::default()
        };
        v1::JobResult { drift: Some(drift), ..v1::JobResult::from(result) }
    }

    #[test]
    fn results_stored_by_protocols_1_and_2_still_read() {
        for (protocol, old) in [(1, protocol_1(sample())), (2, protocol_2(sample()))] {
            let decoded = v1::JobResult::decode(old.encode_to_vec().as_slice()).expect("valid bytes");
            assert_eq!(JobResult::try_from(decoded), Ok(sample()), "protocol {protocol}");
        }
        let current = v1::JobResult::from(sample()).encode_to_vec().len();
        let first = protocol_1(sample()).encode_to_vec().len();
        assert!(current < first, "protocol 3 {current} bytes, protocol 1 {first}");
    }

    #[test]
    fn day_counts_take_the_narrowest_width_that_holds_them() {
        for (largest, width) in [(0, 1), (255, 1), (256, 2), (65_535, 2), (65_536, 4), (u32::MAX, 4)] {
            let mut result = sample();
            result.drift.days[2][1][9] = largest;
            let message = v1::JobResult::from(result.clone());
            let drift = message.drift.as_ref().expect("drift");
            assert_eq!(drift.day_count_width, width, "largest count {largest}");
            assert_eq!(drift.day_counts_fixed.len(), 3 * 2 * BINS * width as usize);
            let decoded = v1::JobResult::decode(message.encode_to_vec().as_slice()).expect("valid bytes");
            assert_eq!(JobResult::try_from(decoded), Ok(result), "largest count {largest}");
        }
    }

    #[test]
    fn bad_results_name_the_field() {
        let mut message = v1::JobResult::from(sample());
        message.ages[2].k = 0;
        assert_eq!(JobResult::try_from(message).expect_err("k = 0").field, "result.ages[2].k");

        let mut message = v1::JobResult::from(sample());
        message.drift.as_mut().expect("drift").day_counts_fixed.pop();
        let error = JobResult::try_from(message).expect_err("short bins");
        assert_eq!(
            error.to_string(),
            "result.drift.day_counts_fixed: expected 3 days x 2 features x 10 counts of 1 bytes, got 59 bytes"
        );

        let mut message = protocol_2(sample());
        message.drift.as_mut().expect("drift").day_counts.pop();
        let error = JobResult::try_from(message).expect_err("short bins");
        assert_eq!(error.to_string(), "result.drift.day_counts: expected 3 days x 2 features x 10 counts, got 59");

        let mut message = v1::JobResult::from(sample());
        message.drift.as_mut().expect("drift").day_count_width = 3;
        let error = JobResult::try_from(message).expect_err("width 3");
        assert_eq!(error.to_string(), "result.drift.day_count_width: must be 1, 2 or 4 (or 0 with day_counts), got 3");

        let mut message = v1::JobResult::from(sample());
        message.drift.as_mut().expect("drift").day_counts = vec![1; 60];
        assert_eq!(JobResult::try_from(message).expect_err("both encodings").field, "result.drift.day_counts");

        let mut message = v1::JobResult::from(sample());
        let drift = message.drift.as_mut().expect("drift");
        (drift.features, drift.scored_days) = (u32::MAX, u32::MAX);
        assert_eq!(JobResult::try_from(message).expect_err("huge header").field, "result.drift.training_counts");

        let mut message = v1::JobResult::from(sample());
        let drift = message.drift.as_mut().expect("drift");
        (drift.features, drift.scored_days, drift.training_counts, drift.day_counts_fixed) =
            (0, u32::MAX, vec![], vec![]);
        assert_eq!(JobResult::try_from(message).expect_err("no features").field, "result.drift.features");

        let mut message = v1::JobResult::from(sample());
        message.drift.as_mut().expect("drift").features = 3;
        assert_eq!(JobResult::try_from(message).expect_err("features").field, "result.drift.training_counts");

        let mut message = protocol_1(sample());
        message.drift.as_mut().expect("drift").days[1].features[0].counts.pop();
        let error = JobResult::try_from(message).expect_err("short bins");
        assert_eq!(error.to_string(), "result.drift.days[1].features[0]: expected 10 bin counts, got 9");

        let mut message = v1::JobResult::from(sample());
        message.training = None;
        assert_eq!(JobResult::try_from(message).expect_err("no training").field, "result.training");
    }

    #[test]
    fn non_finite_or_out_of_range_metrics_are_refused_naming_the_field() {
        let good = v1::JobResult::from(sample());
        for (field, edit) in [
            (
                "rank_ic",
                Box::new(|d: &mut v1::AgeMetrics| d.rank_ic = Some(f64::NAN)) as Box<dyn Fn(&mut v1::AgeMetrics)>,
            ),
            ("rank_ic", Box::new(|d: &mut v1::AgeMetrics| d.rank_ic = Some(1.5))),
            ("spread", Box::new(|d: &mut v1::AgeMetrics| d.spread = f64::INFINITY)),
            ("top_k_mean", Box::new(|d: &mut v1::AgeMetrics| d.top_k_mean = f64::NAN)),
            ("p_at_k", Box::new(|d: &mut v1::AgeMetrics| d.p_at_k = f64::NAN)),
            ("median_p_at_k", Box::new(|d: &mut v1::AgeMetrics| d.median_p_at_k = 1.5)),
            ("median_base_rate", Box::new(|d: &mut v1::AgeMetrics| d.median_base_rate = -0.1)),
        ] {
            let mut bad = good.clone();
            edit(&mut bad.ages[0]);
            let error = JobResult::try_from(bad).expect_err(field);
            assert_eq!(error.field, format!("result.ages[0].{field}"), "{error}");
        }
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Any rankings round-trip exactly, whatever the widest index.
            #[test]
            fn rankings_round_trip(rankings in proptest::collection::vec(proptest::collection::vec(any::<u32>().prop_map(|v| v >> (v % 32)), 0..40), 3)) {
                let result = JobResult { rankings, ..sample() };
                let wire = v1::JobResult::decode(v1::JobResult::from(result.clone()).encode_to_vec().as_slice()).expect("decodes");
                let back = JobResult::try_from(wire).expect("converts");
                let expected = if result.rankings.iter().all(Vec::is_empty) { Vec::new() } else { result.rankings.clone() };
                prop_assert_eq!(back.rankings, expected);
            }

            /// Random bytes as a result: a decode error or a conversion error or a
            /// result, never a panic.
            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
                if let Ok(message) = v1::JobResult::decode(bytes.as_slice()) {
                    let _ = JobResult::try_from(message);
                }
            }

            /// A real result with bytes flipped, cut or repeated: never a panic.
            #[test]
            fn mutated_results_never_panic(at in 0usize..4_096, flip in any::<u8>(), cut in 0usize..64) {
                let mut bytes = v1::JobResult::from(sample()).encode_to_vec();
                let at = at % bytes.len().max(1);
                bytes[at] ^= flip;
                let end = (at + cut).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.extend_from_slice(&copy);
                if let Ok(message) = v1::JobResult::decode(bytes.as_slice()) {
                    let _ = JobResult::try_from(message);
                }
            }
        }
    }
}
