//! Per-day ranking metrics and their aggregates, exactly as ARCHITECTURE.md defines them.
//!
//! For one test day: `P@K` is the share of the K highest-scored stocks whose forward
//! return is positive; `base` the share of all scored stocks with a positive return (the
//! random-ranking expectation); `ΔP@K = P@K − base` (the **zero basis**). On the
//! **median basis** ([`Basis`]) a hit is a return above the day's median return of the
//! scored stocks (the mean of the middle two for an even count), and the base rate the
//! share of scored stocks above it; `RankIC` the Spearman correlation of
//! scores and returns (average ranks for ties; missing when either side is constant);
//! `spread` the mean return of the top K minus that of the bottom K; `top_k_mean` the
//! mean return of the top K. A stock counts as scored when both its score and its target
//! are non-null. A day with fewer scored stocks than K uses all of them.
//!
//! **Ties.** When stocks tied on the score straddle the top-K cut (or the bottom-K cut),
//! each of them counts fractionally: with `g` tied stocks of which `m` places fall inside
//! the K, every one of the `g` counts `m / g` towards P@K, `top_k_mean` and `spread`.
//! That is the expectation over every order of the tied stocks, so a day's metrics never
//! depend on the order of the input (which is stock-code order: sector order on the
//! TSE). RankIC gives tied stocks their average rank.

use serde::{Deserialize, Serialize};

/// K of P@K: a count of stocks, or a fraction of each day's universe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopK {
    Count(u32),
    Fraction(f64),
}

impl TopK {
    /// K for a day with `universe` scored stocks (at least 1).
    pub fn for_universe(self, universe: usize) -> usize {
        match self {
            Self::Count(k) => k as usize,
            Self::Fraction(f) => ((f * universe as f64).round() as usize).max(1),
        }
    }
}

impl std::fmt::Display for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(k) => write!(f, "{k}"),
            Self::Fraction(x) => write!(f, "{}%", x * 100.0),
        }
    }
}

/// Which per-day quality a curve or a trigger reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// ΔP@K and P@K on the zero basis.
    DeltaPAtK,
    PAtK,
    /// ΔP@K and P@K on the median basis.
    MedianDeltaPAtK,
    MedianPAtK,
    RankIc,
    Spread,
    TopKMean,
}

impl Metric {
    /// The metric's value on a day, `NaN` when missing.
    pub fn value(self, day: Option<&DayMetrics>) -> f64 {
        let Some(day) = day else { return f64::NAN };
        match self {
            Self::DeltaPAtK => day.delta(),
            Self::PAtK => day.p_at_k,
            Self::MedianDeltaPAtK => day.median_delta(),
            Self::MedianPAtK => day.median_p_at_k,
            Self::RankIc => day.rank_ic.unwrap_or(f64::NAN),
            Self::Spread => day.spread,
            Self::TopKMean => day.top_k_mean,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::DeltaPAtK => "ΔP@K",
            Self::PAtK => "P@K",
            Self::MedianDeltaPAtK => "ΔP@K (median basis)",
            Self::MedianPAtK => "P@K (median basis)",
            Self::RankIc => "RankIC",
            Self::Spread => "spread",
            Self::TopKMean => "top-K mean return",
        }
    }
}

/// What a pick must beat to count as a hit in P@K.
///
/// - `zero`: a forward return above 0 (the seed's definition). In a rising market a
///   low-volatility stock is more often above zero whatever it earns against the others,
///   so ranking by low volatility reads as skill.
/// - `median`: a forward return above the day's cross-sectional median of the scored
///   stocks (market-neutral); the base rate is the share above the median, one half up
///   to ties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    Zero,
    #[default]
    Median,
}

impl Basis {
    pub const ALL: [Basis; 2] = [Basis::Zero, Basis::Median];

    pub fn name(self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::Median => "median",
        }
    }

    /// The ΔP@K metric on this basis.
    pub fn delta(self) -> Metric {
        match self {
            Self::Zero => Metric::DeltaPAtK,
            Self::Median => Metric::MedianDeltaPAtK,
        }
    }

    /// The P@K metric on this basis.
    pub fn precision(self) -> Metric {
        match self {
            Self::Zero => Metric::PAtK,
            Self::Median => Metric::MedianPAtK,
        }
    }
}

/// The metrics of one (model, test day).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DayMetrics {
    /// P@K and base rate on the zero basis (returns above 0).
    pub p_at_k: f64,
    pub base_rate: f64,
    /// P@K and base rate on the median basis (returns above the day's median).
    #[serde(default)]
    pub median_p_at_k: f64,
    #[serde(default)]
    pub median_base_rate: f64,
    /// `None` when scores or returns are constant on the day.
    pub rank_ic: Option<f64>,
    pub spread: f64,
    pub top_k_mean: f64,
    /// Stocks scored (non-null score and target).
    pub stocks: usize,
    /// K used that day.
    pub k: usize,
}

impl DayMetrics {
    /// ΔP@K on the zero basis.
    pub fn delta(&self) -> f64 {
        self.p_at_k - self.base_rate
    }

    /// ΔP@K on the median basis.
    pub fn median_delta(&self) -> f64 {
        self.median_p_at_k - self.median_base_rate
    }

    /// P@K on `basis`.
    pub fn p_at_k_on(&self, basis: Basis) -> f64 {
        match basis {
            Basis::Zero => self.p_at_k,
            Basis::Median => self.median_p_at_k,
        }
    }

    /// The base rate on `basis`.
    pub fn base_rate_on(&self, basis: Basis) -> f64 {
        match basis {
            Basis::Zero => self.base_rate,
            Basis::Median => self.median_base_rate,
        }
    }

    /// ΔP@K on `basis`.
    pub fn delta_on(&self, basis: Basis) -> f64 {
        self.p_at_k_on(basis) - self.base_rate_on(basis)
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Metrics of one day; `None` when no stock is scored.
pub fn day_metrics(scores: &[f64], targets: &[f64], k: TopK) -> Option<DayMetrics> {
    // (score, target); `+ 0.0` makes -0.0 equal 0.0 in the ordering too.
    let mut scored: Vec<(f64, f64)> = scores
        .iter()
        .zip(targets)
        .filter(|(s, t)| s.is_finite() && t.is_finite())
        .map(|(s, t)| (*s + 0.0, *t))
        .collect();
    let stocks = scored.len();
    if stocks == 0 {
        return None;
    }
    let k = k.for_universe(stocks).clamp(1, stocks);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let positive = |row: &(f64, f64)| if row.1 > 0.0 { 1.0 } else { 0.0 };
    let target = |row: &(f64, f64)| row.1;
    let target_values: Vec<f64> = scored.iter().map(|r| r.1).collect();
    let median = {
        let mut sorted = target_values.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        median_of_sorted(&sorted)
    };
    let above_median = |row: &(f64, f64)| if row.1 > median { 1.0 } else { 0.0 };
    let top_k_mean = top_sum(&scored, k, target) / k as f64;
    Some(DayMetrics {
        p_at_k: top_sum(&scored, k, positive) / k as f64,
        base_rate: scored.iter().map(positive).sum::<f64>() / stocks as f64,
        median_p_at_k: top_sum(&scored, k, above_median) / k as f64,
        median_base_rate: scored.iter().map(above_median).sum::<f64>() / stocks as f64,
        rank_ic: (stocks >= 2).then(|| pearson(&sorted_ranks(&scored), &average_ranks(&target_values))).flatten(),
        spread: top_k_mean - bottom_sum(&scored, k, target) / k as f64,
        top_k_mean,
        stocks,
        k,
    })
}

/// The sum of `value` over the first `k` rows of `sorted` (scores descending), the
/// stocks tied on the score at the cut each counted by the share of their group that
/// falls inside the `k`.
fn top_sum(sorted: &[(f64, f64)], k: usize, value: impl Fn(&(f64, f64)) -> f64) -> f64 {
    let cut = sorted[k - 1].0;
    let first = sorted.partition_point(|row| row.0 > cut);
    let end = sorted.partition_point(|row| row.0 >= cut);
    let above: f64 = sorted[..first].iter().map(&value).sum();
    let tied: f64 = sorted[first..end].iter().map(&value).sum();
    above + tied * (k - first) as f64 / (end - first) as f64
}

/// [`top_sum`] of the last `k` rows (the lowest scores).
fn bottom_sum(sorted: &[(f64, f64)], k: usize, value: impl Fn(&(f64, f64)) -> f64) -> f64 {
    let cut = sorted[sorted.len() - k].0;
    let first = sorted.partition_point(|row| row.0 > cut);
    let end = sorted.partition_point(|row| row.0 >= cut);
    let below: f64 = sorted[end..].iter().map(&value).sum();
    let tied: f64 = sorted[first..end].iter().map(&value).sum();
    below + tied * (end - (sorted.len() - k)) as f64 / (end - first) as f64
}

/// The average ranks (1-based, ascending) of rows sorted by score descending: what
/// [`average_ranks`] gives for their scores, without sorting again.
fn sorted_ranks(sorted: &[(f64, f64)]) -> Vec<f64> {
    let n = sorted.len();
    let mut ranks = vec![0.0; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && sorted[end].0 == sorted[start].0 {
            end += 1;
        }
        // Places start..end from the top are ascending places n − end + 1 ..= n − start.
        let rank = ((n - end + 1) + (n - start)) as f64 / 2.0;
        ranks[start..end].fill(rank);
        start = end;
    }
    ranks
}

/// Average ranks (1-based), ties sharing the mean of their positions.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    // (value, position) pairs sorted in place: no indirection through `values` while
    // sorting; equal values by position, so even NaNs (each its own rank) rank the same.
    let mut order: Vec<(f64, u32)> = values.iter().enumerate().map(|(i, v)| (*v, i as u32)).collect();
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && order[end].0 == order[start].0 {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for (_, index) in &order[start..end] {
            ranks[*index as usize] = rank;
        }
        start = end;
    }
    ranks
}

/// The average ranks of `values` among themselves, given their average ranks in some
/// larger set (as [`average_ranks`] gives them there): a subset keeps the larger set's
/// order and ties, so a count per rank replaces a sort. Equal to [`average_ranks`] of the
/// subset's own values, value for value. `counts` is scratch space, reused across calls.
pub fn subset_ranks(ranks: &[f64], counts: &mut Vec<(u32, u32)>) -> Vec<f64> {
    // Average ranks are whole or half numbers: twice a rank is a whole index.
    let slot = |rank: f64| (2.0 * rank) as usize;
    let slots = ranks.iter().map(|r| slot(*r)).max().map_or(0, |top| top + 1);
    counts.clear();
    counts.resize(slots, (0, 0));
    for rank in ranks {
        counts[slot(*rank)].1 += 1;
    }
    // (values ranked below the slot, values in it).
    let mut below = 0;
    for (start, size) in counts.iter_mut() {
        *start = below;
        below += *size;
    }
    ranks
        .iter()
        .map(|rank| {
            let (start, size) = counts[slot(*rank)];
            // As `average_ranks`: (start + end + 1) / 2 for the tie's places start..end.
            (2 * start as usize + size as usize + 1) as f64 / 2.0
        })
        .collect()
}

/// Spearman correlation; `None` with fewer than 2 values or a constant side.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 || a.len() != b.len() {
        return None;
    }
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Pearson correlation; `None` when either side is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (mean_a, mean_b) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    if var_a <= 0.0 || var_b <= 0.0 {
        return None;
    }
    Some(cov / (var_a * var_b).sqrt())
}

/// Mean, spread and significance of a series; missing values (`NaN`) are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Non-missing values.
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// `mean / (std / sqrt(n))`; for a RankIC series `mean / std` is its ICIR.
    pub t_stat: f64,
    /// Share of values above 0.
    pub hit_rate: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        let present: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = present.len();
        if n == 0 {
            return Self { n, mean: f64::NAN, std: f64::NAN, t_stat: f64::NAN, hit_rate: f64::NAN };
        }
        let mean = present.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        let t_stat = if std > 0.0 { mean / (std / (n as f64).sqrt()) } else { f64::NAN };
        let hit_rate = present.iter().filter(|v| **v > 0.0).count() as f64 / n as f64;
        Self { n, mean, std, t_stat, hit_rate }
    }

    /// Information ratio `mean / std` (per period).
    pub fn ratio(&self) -> f64 {
        if self.std > 0.0 { self.mean / self.std } else { f64::NAN }
    }
}

#[cfg(test)]
mod tests;
