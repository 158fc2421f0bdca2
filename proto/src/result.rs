//! `JobResult` on the wire: a job's training summary, metrics by age and drift counts.

use wf_shared::age::{JobResult, TrainingSummary};
use wf_shared::drift::{BINS, DriftPath};
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
            ages: result
                .ages
                .iter()
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
                    },
                    None => v1::AgeMetrics::default(),
                })
                .collect(),
            drift: Some(v1::Drift {
                features: result.drift.training.len() as u32,
                scored_days: result.drift.days.len() as u32,
                training_counts: result.drift.training.as_flattened().to_vec(),
                day_counts: result.drift.days.iter().flat_map(|day| day.as_flattened()).copied().collect(),
                ..v1::Drift::default()
            }),
        }
    }
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
        let ages = message
            .ages
            .iter()
            .enumerate()
            .map(|(age, day)| {
                if !day.scored {
                    return Ok(None);
                }
                let field = |name: &str| format!("result.ages[{age}].{name}");
                for (name, value) in [("p_at_k", day.p_at_k), ("base_rate", day.base_rate)] {
                    if !(0.0..=1.0).contains(&value) {
                        return Err(invalid(field(name), format!("must be in [0, 1], got {value}")));
                    }
                }
                if day.k == 0 || day.k > day.stocks {
                    return Err(invalid(field("k"), format!("must be in 1..={}, got {}", day.stocks, day.k)));
                }
                Ok(Some(DayMetrics {
                    p_at_k: day.p_at_k,
                    base_rate: day.base_rate,
                    rank_ic: day.rank_ic,
                    spread: day.spread,
                    top_k_mean: day.top_k_mean,
                    stocks: day.stocks as usize,
                    k: day.k as usize,
                }))
            })
            .collect::<Result<Vec<_>, _>>()?;
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
        })
    }
}

/// The drift of protocol 2: packed counts.
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
    if drift.day_counts.len() as u128 != expected {
        return Err(invalid(
            "result.drift.day_counts",
            format!(
                "expected {} days x {} features x {BINS} counts, got {}",
                drift.scored_days,
                drift.features,
                drift.day_counts.len()
            ),
        ));
    }
    let bins = |counts: &[u32]| -> Vec<[u32; BINS]> { counts.as_chunks::<BINS>().0.to_vec() };
    // Both lengths match the header, so `day_counts` splits into `scored_days` runs of
    // `training_counts.len()` (empty when there are no features).
    let width = drift.training_counts.len();
    let days = (0..drift.scored_days as usize).map(|day| bins(&drift.day_counts[day * width..][..width])).collect();
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

    #[test]
    fn results_stored_by_protocol_1_still_read_and_packed_ones_are_smaller() {
        let old = protocol_1(sample()).encode_to_vec();
        let decoded = v1::JobResult::decode(old.as_slice()).expect("valid bytes");
        assert_eq!(JobResult::try_from(decoded), Ok(sample()));
        let packed = v1::JobResult::from(sample()).encode_to_vec();
        assert!(packed.len() < old.len(), "packed {} bytes, protocol 1 {}", packed.len(), old.len());
    }

    #[test]
    fn bad_results_name_the_field() {
        let mut message = v1::JobResult::from(sample());
        message.ages[2].k = 0;
        assert_eq!(JobResult::try_from(message).expect_err("k = 0").field, "result.ages[2].k");

        let mut message = v1::JobResult::from(sample());
        message.drift.as_mut().expect("drift").day_counts.pop();
        let error = JobResult::try_from(message).expect_err("short bins");
        assert_eq!(error.to_string(), "result.drift.day_counts: expected 3 days x 2 features x 10 counts, got 59");

        let mut message = v1::JobResult::from(sample());
        let drift = message.drift.as_mut().expect("drift");
        (drift.features, drift.scored_days) = (u32::MAX, u32::MAX);
        assert_eq!(JobResult::try_from(message).expect_err("huge header").field, "result.drift.training_counts");

        let mut message = v1::JobResult::from(sample());
        let drift = message.drift.as_mut().expect("drift");
        (drift.features, drift.scored_days, drift.training_counts, drift.day_counts) = (0, u32::MAX, vec![], vec![]);
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
}
