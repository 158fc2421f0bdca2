//! What a model trains towards: each day's forward returns transformed across the day's
//! stocks (`docs/MODELS.md`, "Target transforms").
//!
//! - `zscore`: `(r − mean) / std` (population std; 0 when every return is equal);
//! - `rank`: normal scores, `Φ⁻¹((rank − ½) / n)` with average ranks for ties;
//! - `sign`: 1 above the day's median, 0 below, ½ at it (labels of a logistic loss).

use serde::{Deserialize, Serialize};

use crate::metric::average_ranks;

/// How a day's returns become training targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetTransform {
    #[default]
    Zscore,
    Rank,
    Sign,
}

impl TargetTransform {
    pub fn is_zscore(&self) -> bool {
        *self == Self::Zscore
    }

    /// The targets of one day's (finite) returns, in the same order.
    pub fn apply(self, returns: &[f64]) -> Vec<f64> {
        let n = returns.len();
        if n == 0 {
            return Vec::new();
        }
        match self {
            Self::Zscore => {
                let mean = returns.iter().sum::<f64>() / n as f64;
                let std = (returns.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
                returns.iter().map(|v| if std > 0.0 { (v - mean) / std } else { 0.0 }).collect()
            }
            Self::Rank => average_ranks(returns).into_iter().map(|r| normal_quantile((r - 0.5) / n as f64)).collect(),
            Self::Sign => {
                let mut sorted = returns.to_vec();
                sorted.sort_by(f64::total_cmp);
                let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
                returns
                    .iter()
                    .map(|v| match v.total_cmp(&median) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Less => 0.0,
                        std::cmp::Ordering::Equal => 0.5,
                    })
                    .collect()
            }
        }
    }
}

/// The standard normal quantile `Φ⁻¹(p)` for `p` in (0, 1): Acklam's rational
/// approximation (relative error below 1.2e-9), enough for training targets.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    const LOW: f64 = 0.024_25;
    let p = p.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tolerance: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < tolerance)
    }

    #[test]
    fn each_transform_of_a_hand_made_day() {
        let day = [0.03, -0.01, 0.02, 0.02, 0.00];
        // Mean 0.012, population std sqrt(0.000216) = 0.0146969...
        let std = 0.000_216f64.sqrt();
        let z: Vec<f64> = day.iter().map(|v| (v - 0.012) / std).collect();
        assert!(close(&TargetTransform::Zscore.apply(&day), &z, 1e-12));
        // Ranks 5, 1, 3.5, 3.5, 2: quantiles of 0.9, 0.1, 0.6, 0.6, 0.3.
        let expected = [1.281_551_565_5, -1.281_551_565_5, 0.253_347_103_1, 0.253_347_103_1, -0.524_400_512_7];
        assert!(close(&TargetTransform::Rank.apply(&day), &expected, 1e-8), "{:?}", TargetTransform::Rank.apply(&day));
        // Median 0.02: above 1, below 0, at it ½.
        assert_eq!(TargetTransform::Sign.apply(&day), vec![1.0, 0.0, 0.5, 0.5, 0.0]);
        assert_eq!(TargetTransform::Sign.apply(&[0.01, 0.03]), vec![0.0, 1.0], "even count: the midpoint");
        assert_eq!(TargetTransform::Zscore.apply(&[0.01, 0.01]), vec![0.0, 0.0]);
        assert!(TargetTransform::Rank.apply(&[]).is_empty());
    }

    #[test]
    fn normal_quantiles_are_symmetric_and_match_known_values() {
        assert!(normal_quantile(0.5).abs() < 1e-12);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((normal_quantile(0.001) + 3.090_232_306_167_813).abs() < 1e-7);
        for p in [0.001, 0.02, 0.2, 0.4] {
            assert!((normal_quantile(p) + normal_quantile(1.0 - p)).abs() < 1e-8, "{p}");
        }
    }
}
