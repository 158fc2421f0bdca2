//! The synthetic market: the embedded default dataset, with planted truth.
//!
//! `N` stocks on a weekday calendar. Each day's log return of stock `i` is
//!
//! ```text
//! r[t,i] = beta_i * m[t] + gamma_i * g[t]                      market and an unpriced noise factor
//!        + premium_momentum(t)   * z_momentum[t-1,i]           trailing 20-day return, z-scored
//!        + premium_short_term(t) * z_short_term[t-1,i]         trailing 5-day return, z-scored
//!        + premium_low_vol(t)    * z_low_vol[i]                minus the z-score of ln sigma_i
//!        + sigma_i(t) * eps[t,i]
//! ```
//!
//! The premia are constant within a regime and change at planted break dates, so a model
//! fitted before a break measurably loses precision after it. The breaks and premia go
//! to `truth.json`. Every exposure is observable from past prices (momentum, reversal,
//! volatility features), none from the future. A few stocks list late and a few
//! stock-days have no trade (null prices, zero volume), as in real data.
//! Deterministic for a seed: the same spec gives the same bytes on every machine.
//!
//! The **null market** (`null: true`; `synth:null`, `wf data synth --null`) has the same
//! calendar, listings, missing trades, volatilities and common factors, but no premia,
//! no breaks and every beta 1: the market moves every stock alike, so nothing in the
//! cross-section can be predicted, and every model and schedule has no skill under a
//! market-neutral measure. The market still drifts up (0.02% a day on average), so a
//! low-volatility stock is more often above zero: a measure against zero is not neutral
//! there. It is the calibration target of the report's intervals and corrections.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::bars::BarsColumns;
use crate::calendar::TradingCalendar;

/// Factors with a premium, in the order of [`REGIME_PREMIA`] columns.
pub const FACTORS: [&str; 3] = ["momentum", "short_term", "low_vol"];

/// Daily log-return premium per unit of z-scored exposure, per regime.
pub const REGIME_PREMIA: [[f64; 3]; 3] = [
    [0.0020, -0.0015, 0.0010],  // trend-following, short-term reversal, low-vol premium
    [-0.0020, 0.0010, 0.0010],  // momentum crash: losers win, short-term continuation
    [0.0010, -0.0015, -0.0010], // weak momentum, reversal again, high-vol stocks win
];

/// Where the regime breaks fall, as fractions of the history.
pub const BREAK_FRACTIONS: [f64; 2] = [0.5, 0.75];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthSpec {
    pub stocks: usize,
    pub days: usize,
    pub start: NaiveDate,
    pub seed: u64,
    /// The null market: no premia, no breaks, every beta 1 (left out of `truth.json`
    /// when false, so the default market's files are unchanged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub null: bool,
}

impl Default for SynthSpec {
    fn default() -> Self {
        Self {
            stocks: 200,
            days: 1000,
            start: NaiveDate::from_ymd_opt(2021, 1, 4).unwrap_or_default(),
            seed: 7,
            null: false,
        }
    }
}

/// The null market's premia: none.
pub const NULL_PREMIA: [f64; 3] = [0.0; 3];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SynthError {
    #[error("{field}: must be at least {min}, got {got}")]
    TooSmall { field: &'static str, min: usize, got: usize },
    #[error("{field}: must be at most {max}, got {got}")]
    TooLarge { field: &'static str, max: usize, got: usize },
}

/// One factor of the truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorTruth {
    pub name: String,
    pub exposure: String,
}

/// One regime: its dates (inclusive) and the daily premia of each factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegimeTruth {
    pub first_date: NaiveDate,
    pub last_date: NaiveDate,
    pub premia: BTreeMap<String, f64>,
}

/// The planted truth, written to `truth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthTruth {
    pub spec: SynthSpec,
    pub first_date: NaiveDate,
    pub last_date: NaiveDate,
    pub factors: Vec<FactorTruth>,
    pub regimes: Vec<RegimeTruth>,
    /// First trading day of each new regime.
    pub breaks: Vec<NaiveDate>,
    /// What the market is, in words: present for the null market.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A generated market: OHLCV columns (sorted by date, then code) and the truth.
#[derive(Debug, Clone)]
pub struct SynthMarket {
    pub bars: BarsColumns,
    pub truth: SynthTruth,
}

/// Per-stock parameters, drawn once.
struct StockParams {
    beta: f64,
    gamma: f64,
    mean_log_sigma: f64,
    base_volume: f64,
    listing_day: usize,
}

/// Generates the market for `spec`.
pub fn generate(spec: &SynthSpec) -> Result<SynthMarket, SynthError> {
    if spec.stocks < 20 {
        return Err(SynthError::TooSmall { field: "stocks", min: 20, got: spec.stocks });
    }
    if spec.stocks > 20_000 {
        return Err(SynthError::TooLarge { field: "stocks", max: 20_000, got: spec.stocks });
    }
    if spec.days < 400 {
        return Err(SynthError::TooSmall { field: "days", min: 400, got: spec.days });
    }
    if spec.days > 20_000 {
        return Err(SynthError::TooLarge { field: "days", max: 20_000, got: spec.days });
    }
    let calendar = TradingCalendar::business_days(spec.start, spec.days);
    let break_days: Vec<usize> = if spec.null {
        Vec::new()
    } else {
        BREAK_FRACTIONS.iter().map(|f| (f * spec.days as f64).round() as usize).collect()
    };
    let premia_of = |regime: usize| if spec.null { NULL_PREMIA } else { REGIME_PREMIA[regime] };
    let regime_of = |day: usize| break_days.iter().filter(|b| day >= **b).count();

    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let normal = |rng: &mut ChaCha8Rng| -> f64 { StandardNormal.sample(rng) };
    let params: Vec<StockParams> = (0..spec.stocks)
        .map(|_| {
            let late = rng.random_bool(0.05);
            let listing_day = if late { rng.random_range(0..spec.days / 2) } else { 0 };
            let beta = 1.0 + 0.3 * normal(&mut rng);
            StockParams {
                beta: if spec.null { 1.0 } else { beta },
                gamma: normal(&mut rng),
                mean_log_sigma: 0.018f64.ln() + 0.35 * normal(&mut rng),
                base_volume: (2e5f64.ln() + normal(&mut rng)).exp(),
                listing_day,
            }
        })
        .collect();
    let market = Normal::new(0.0002, 0.01).unwrap_or_else(|_| unreachable!("constant parameters are valid"));

    let stocks = spec.stocks;
    let mut log_price: Vec<f64> = (0..stocks).map(|_| 2000f64.ln() + 0.8 * normal(&mut rng)).collect();
    let mut sigma_state = vec![0.0f64; stocks];
    let mut history: Vec<Vec<f64>> = vec![Vec::with_capacity(spec.days); stocks];
    let mut bars = BarsColumns { turnover: Some(Vec::new()), ..BarsColumns::default() };
    let codes: Vec<String> = (0..stocks).map(|i| format!("S{:04}", i + 1)).collect();

    for day in 0..spec.days {
        let premia = premia_of(regime_of(day));
        let listed: Vec<bool> = params.iter().map(|p| day >= p.listing_day).collect();
        let trailing =
            |window: usize| -> Vec<f64> { history.iter().map(|h| h.iter().rev().take(window).sum::<f64>()).collect() };
        let log_sigma: Vec<f64> = params.iter().zip(&sigma_state).map(|(p, s)| p.mean_log_sigma + s).collect();
        let exposures = [
            cross_section_z(&trailing(20), &listed),
            cross_section_z(&trailing(5), &listed),
            cross_section_z(&log_sigma, &listed).iter().map(|z| -z).collect(),
        ];
        let market_return = market.sample(&mut rng);
        let noise_factor = 0.006 * normal(&mut rng);
        let date = calendar.date(day).unwrap_or_default();
        for stock in 0..stocks {
            let p = &params[stock];
            let sigma = log_sigma[stock].exp();
            let shocks = [normal(&mut rng), normal(&mut rng), normal(&mut rng), normal(&mut rng), normal(&mut rng)];
            let no_trade = rng.random_bool(0.002);
            sigma_state[stock] = 0.995 * sigma_state[stock] + 0.02 * normal(&mut rng);
            if !listed[stock] {
                continue;
            }
            let alpha: f64 = (0..3).map(|f| premia[f] * exposures[f][stock]).sum();
            let r = p.beta * market_return + p.gamma * noise_factor + alpha + sigma * shocks[0];
            let previous_close = log_price[stock];
            log_price[stock] += r;
            history[stock].push(r);

            let close = log_price[stock].exp();
            let open = (previous_close + 0.3 * r + 0.2 * sigma * shocks[1]).exp();
            let high = open.max(close) * (0.4 * sigma * shocks[2].abs()).exp();
            let low = open.min(close) * (-0.4 * sigma * shocks[3].abs()).exp();
            let surprise = (r - p.beta * market_return).abs() / sigma;
            let volume = (p.base_volume * (0.6 * surprise + 0.35 * shocks[4]).exp()).round();
            bars.date.push(date);
            bars.code.push(codes[stock].clone());
            if no_trade {
                for column in [&mut bars.open, &mut bars.high, &mut bars.low, &mut bars.close] {
                    column.push(f64::NAN);
                }
                bars.volume.push(0.0);
                bars.turnover.get_or_insert_with(Vec::new).push(0.0);
                continue;
            }
            bars.open.push(open);
            bars.high.push(high);
            bars.low.push(low);
            bars.close.push(close);
            bars.volume.push(volume);
            bars.turnover.get_or_insert_with(Vec::new).push(volume * (open + high + low + close) / 4.0);
        }
    }

    let date_at = |day: usize| calendar.date(day).unwrap_or_default();
    let mut bounds = vec![0];
    bounds.extend(break_days.iter().copied());
    bounds.push(spec.days);
    let regimes = bounds
        .windows(2)
        .enumerate()
        .map(|(regime, range)| (range, premia_of(regime)))
        .map(|(range, premia)| RegimeTruth {
            first_date: date_at(range[0]),
            last_date: date_at(range[1] - 1),
            premia: FACTORS.iter().map(|f| f.to_string()).zip(premia).collect(),
        })
        .collect();
    let truth = SynthTruth {
        spec: spec.clone(),
        first_date: date_at(0),
        last_date: date_at(spec.days - 1),
        factors: vec![
            FactorTruth { name: FACTORS[0].into(), exposure: "z-score of the trailing 20-day log return".into() },
            FactorTruth { name: FACTORS[1].into(), exposure: "z-score of the trailing 5-day log return".into() },
            FactorTruth { name: FACTORS[2].into(), exposure: "minus the z-score of the stock's log volatility".into() },
        ],
        regimes,
        breaks: break_days.iter().map(|d| date_at(*d)).collect(),
        description: spec.null.then(|| {
            "null market: no factor premia, no regime breaks, every beta 1 (the market moves every stock alike); \
             nothing in the cross-section of returns is predictable. The market drifts up 0.02% a day on average, \
             so low-volatility stocks are more often above zero."
                .to_string()
        }),
    };
    Ok(SynthMarket { bars, truth })
}

/// Cross-sectional z-score over listed stocks, clipped to ±3; unlisted stocks get 0.
fn cross_section_z(values: &[f64], listed: &[bool]) -> Vec<f64> {
    let present: Vec<f64> = values.iter().zip(listed).filter(|(_, l)| **l).map(|(v, _)| *v).collect();
    let n = present.len() as f64;
    let mean = present.iter().sum::<f64>() / n.max(1.0);
    let std = (present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.max(1.0)).sqrt();
    values
        .iter()
        .zip(listed)
        .map(|(v, l)| if *l && std > 0.0 { ((v - mean) / std).clamp(-3.0, 3.0) } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests;
