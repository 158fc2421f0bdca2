//! The feature catalogue and the panel builder.
//!
//! `build_panel` turns validated [`Bars`] into a [`Panel`]: for every input row, the
//! features of [`FEATURES`] (each using only data known at that day's close) and the
//! forward-return target of every horizon, `r_h(t, s) = close(t + h, s) / close(t, s) − 1`
//! on the trading calendar (null when either close is null or `t + h` is past the end).
//!
//! Features are computed per stock on its dense trading-day series (absent rows and
//! null prices are nulls), then normalised per date across stocks: a robust z-score
//! `(x − median) / (1.4826 · MAD)`, winsorised to ±[`WINSOR_LIMIT`]. The raw values are
//! not stored; their formulas are in the catalogue below and in `docs/FEATURES.md`.

use rayon::prelude::*;

use crate::bars::Bars;
use crate::panel::{Panel, PanelParts};
use crate::rolling::{
    Carry, change, log_return, rolling_beta, rolling_extreme, rolling_mean, rolling_std, rolling_sum,
};

mod extend;
mod state;
pub use extend::{ExtendError, check_new_days, extend_panel};
pub use state::{FeatureState, STATE_FORMAT, StockState, TAIL_DAYS, Tail, tail_days};

/// Robust z-scores are clipped to this many (robust) standard deviations.
pub const WINSOR_LIMIT: f64 = 5.0;

/// Fewer non-null values than this on a date make that date's feature null.
pub const MIN_CROSS_SECTION: usize = 5;

/// One feature: its column name, how many past trading days it reads, and its formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDef {
    pub name: &'static str,
    pub lookback: usize,
    pub formula: &'static str,
}

const fn def(name: &'static str, lookback: usize, formula: &'static str) -> FeatureDef {
    FeatureDef { name, lookback, formula }
}

/// The catalogue, in column order. `c, o, h, l, v` are close, open, high, low, volume;
/// `dv` is traded value (turnover, or c·v where turnover is absent); `lr` the daily log
/// return; `m` the equal-weighted market log return `ln(1 + mean_s ret_1(t, s))`.
pub const FEATURES: &[FeatureDef] = &[
    def("ret_1", 1, "c[t] / c[t-1] - 1"),
    def("ret_5", 5, "c[t] / c[t-5] - 1"),
    def("ret_10", 10, "c[t] / c[t-10] - 1"),
    def("ret_20", 20, "c[t] / c[t-20] - 1"),
    def("ret_60", 60, "c[t] / c[t-60] - 1"),
    def("mom_60_5", 60, "c[t-5] / c[t-60] - 1 (momentum skipping the last week)"),
    def("vol_20", 20, "sample std of lr over 20 days (>= 15 values)"),
    def("vol_60", 60, "sample std of lr over 60 days (>= 40 values)"),
    def("vol_ratio_20_60", 60, "vol_20 / vol_60"),
    def("range_5", 5, "mean of (h - l) / c over 5 days (>= 3 values)"),
    def("gap", 1, "o[t] / c[t-1] - 1 (overnight gap)"),
    def("intraday", 0, "c[t] / o[t] - 1"),
    def("dist_ma_5", 5, "c[t] / mean(c, 5 days) - 1 (>= 4 values)"),
    def("dist_ma_20", 20, "c[t] / mean(c, 20 days) - 1 (>= 15 values)"),
    def("dist_ma_60", 60, "c[t] / mean(c, 60 days) - 1 (>= 40 values)"),
    def("rsi_14", 14, "sum of up-moves / sum of absolute moves of c over 14 days (>= 10 moves; 0.5 when flat)"),
    def("volume_ratio_5_60", 60, "ln(mean(v, 5 days, >= 3) / mean(v, 60 days, >= 40))"),
    def("volume_surprise_20", 20, "ln(1 + v[t]) - mean(ln(1 + v), 20 days, >= 15)"),
    def("value_ratio_5_60", 60, "ln(mean(dv, 5 days, >= 3) / mean(dv, 60 days, >= 40))"),
    def("log_value_20", 20, "ln(mean(dv, 20 days, >= 15)) (size and liquidity)"),
    def("amihud_20", 20, "ln(1 + 1e9 * mean(|ret_1| / dv, 20 days, >= 15)) (illiquidity)"),
    def("dist_high_20", 20, "c[t] / max(h, 20 days, >= 13) - 1"),
    def("dist_low_20", 20, "c[t] / min(l, 20 days, >= 13) - 1"),
    def("dist_high_60", 60, "c[t] / max(h, 60 days, >= 40) - 1"),
    def("dist_low_60", 60, "c[t] / min(l, 60 days, >= 40) - 1"),
    def("beta_60", 60, "cov(lr, m) / var(m) over 60 days (>= 40 pairs)"),
    def("resid_ret_5", 60, "ln(c[t] / c[t-5]) - beta_60 * sum(m, 5 days) (market-relative)"),
    def("resid_ret_20", 60, "ln(c[t] / c[t-20]) - beta_60 * sum(m, 20 days) (market-relative)"),
    def("idio_vol_60", 60, "std of the residual of lr on m over 60 days (>= 40 pairs)"),
];

/// The catalogue as a Markdown table, as `docs/FEATURES.md` carries it.
pub fn catalogue_markdown() -> String {
    let mut table =
        String::from("| # | column | reads (trading days) | raw value before normalisation |\n|---|---|---|---|\n");
    for (index, feature) in FEATURES.iter().enumerate() {
        table += &format!("| {} | `{}` | {} | `{}` |\n", index + 1, feature.name, feature.lookback, feature.formula);
    }
    table
}

/// What to build: the target horizons, in trading days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelSpec {
    pub horizons: Vec<u32>,
}

impl Default for PanelSpec {
    fn default() -> Self {
        Self { horizons: vec![1, 5, 10, 20] }
    }
}

/// One stock's dense series over its trading-day span `first_day ..= last_day`.
struct StockSeries {
    first_day: usize,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    value: Vec<f64>,
}

impl StockSeries {
    /// The series of `bars`' stock `stock` from its first row to its last, bars day `d`
    /// being global day `day_offset + d`.
    fn new(bars: &Bars, stock: usize, day_offset: usize) -> Self {
        let rows = bars.stock_rows(stock);
        let days = bars.day();
        let first_day = day_offset + days[rows.start] as usize;
        let span = day_offset + days[rows.end - 1] as usize - first_day + 1;
        let mut series = Self::empty(first_day, span);
        series.fill(bars, stock, day_offset);
        series
    }

    /// Every day null over `span` days from global day `first_day`.
    fn empty(first_day: usize, span: usize) -> Self {
        Self {
            first_day,
            open: vec![f64::NAN; span],
            high: vec![f64::NAN; span],
            low: vec![f64::NAN; span],
            close: vec![f64::NAN; span],
            volume: vec![f64::NAN; span],
            value: vec![f64::NAN; span],
        }
    }

    /// Writes `bars`' rows of `stock`, whose day `d` is global day `day_offset + d`.
    fn fill(&mut self, bars: &Bars, stock: usize, day_offset: usize) {
        let days = bars.day();
        for row in bars.stock_rows(stock) {
            let t = day_offset + days[row] as usize - self.first_day;
            self.open[t] = bars.open[row];
            self.high[t] = bars.high[row];
            self.low[t] = bars.low[row];
            self.close[t] = bars.close[row];
            self.volume[t] = bars.volume[row];
            let turnover = bars.turnover.as_ref().map_or(f64::NAN, |values| values[row]);
            self.value[t] = if turnover.is_finite() { turnover } else { bars.close[row] * bars.volume[row] };
        }
    }

    fn len(&self) -> usize {
        self.close.len()
    }

    /// The last `days` days (all of a shorter series).
    fn tail(&self, days: usize) -> Tail {
        let from = self.len().saturating_sub(days);
        Tail {
            open: self.open[from..].to_vec(),
            high: self.high[from..].to_vec(),
            low: self.low[from..].to_vec(),
            close: self.close[from..].to_vec(),
            volume: self.volume[from..].to_vec(),
            value: self.value[from..].to_vec(),
        }
    }
}

/// One stock's pass: its dense features, targets and ADV over its series (null before
/// the carry's first position), and the running sums after its last day.
struct StockPass {
    /// As the panel stores them (computed in f64, rounded once): half the f64 series a
    /// chunk of stocks holds until it is scattered.
    features: Vec<Vec<f32>>,
    targets: Vec<Vec<f64>>,
    adv: Vec<f64>,
    sums: Vec<crate::rolling::Sums>,
}

fn stock_pass(s: &StockSeries, market: &[f64], mut carry: Carry, horizons: &[u32]) -> StockPass {
    let features =
        stock_features(s, market, &mut carry).into_iter().map(|c| c.into_iter().map(|v| v as f32).collect()).collect();
    let adv = rolling_mean(&s.value, 20, 15, &mut carry);
    StockPass { features, targets: stock_targets(s, horizons), adv, sums: carry.into_sums() }
}

/// Where the rows of `bars` land in day-then-stock order: per-day offsets (one more than
/// the days), and each position's day and stock. A bars row's position is handed out by
/// [`Slots`] as the stocks are visited in order (no per-row table: 8 bytes a row less at
/// the builder's peak).
struct OutputOrder {
    day_offsets: Vec<usize>,
    day: Vec<u32>,
    stock: Vec<u32>,
}

impl OutputOrder {
    /// The positions of the rows, handed out day by day to stocks visited in increasing
    /// order (as [`output_order`] assigns them).
    fn slots(&self) -> Slots {
        Slots { next: self.day_offsets.clone() }
    }
}

/// The next free position of each day.
struct Slots {
    next: Vec<usize>,
}

impl Slots {
    /// The position of the next row of day `day` (of the next stock in order that has one).
    fn take(&mut self, day: u32) -> usize {
        let slot = &mut self.next[day as usize];
        *slot += 1;
        *slot - 1
    }
}

fn output_order(bars: &Bars) -> OutputOrder {
    let rows = bars.rows();
    let mut day_offsets = vec![0usize; bars.calendar().len() + 1];
    for day in bars.day() {
        day_offsets[*day as usize + 1] += 1;
    }
    for day in 0..bars.calendar().len() {
        day_offsets[day + 1] += day_offsets[day];
    }
    let mut order = OutputOrder { day_offsets, day: vec![0u32; rows], stock: vec![0u32; rows] };
    let mut slots = order.slots();
    for stock in 0..bars.codes().len() {
        for row in bars.stock_rows(stock) {
            let day = bars.day()[row];
            let position = slots.take(day);
            order.day[position] = day;
            order.stock[position] = stock as u32;
        }
    }
    order
}

/// The dense position of `bars`' row `row` in its stock's series starting at global day
/// `first_day`, bars day `d` being global day `day_offset + d`.
fn series_position(bars: &Bars, row: usize, first_day: usize, day_offset: usize) -> usize {
    day_offset + bars.day()[row] as usize - first_day
}

/// Stocks whose features are computed (in parallel) before they are scattered into the
/// panel's columns: bounds the f64 intermediates to this many stocks' series.
const STOCKS_PER_CHUNK: usize = 64;

/// Builds the panel: features and targets for every row of `bars`.
///
/// Memory: the output columns (f32 features, f64 targets) plus the series of at most
/// [`STOCKS_PER_CHUNK`] stocks at a time; each stock's values are computed exactly as a
/// whole pass would (its own forward pass over its dense series), so the chunking never
/// changes a value.
pub fn build_panel(bars: &Bars, spec: &PanelSpec) -> Panel {
    build_panel_with_state(bars, spec).0
}

/// [`build_panel`], and the state that continues the panel with later days
/// ([`extend_panel`]).
pub fn build_panel_with_state(bars: &Bars, spec: &PanelSpec) -> (Panel, FeatureState) {
    let stocks = bars.codes().len();
    let market = market_log_returns(bars);
    let order = output_order(bars);
    let rows = bars.rows();

    let mut features = vec![vec![f32::NAN; rows]; FEATURES.len()];
    let mut targets = vec![vec![f64::NAN; rows]; spec.horizons.len()];
    let mut adv = vec![f64::NAN; rows];
    let mut states = Vec::with_capacity(stocks);
    let tail_days = state::tail_days(&spec.horizons);
    let mut slots = order.slots();
    for chunk in (0..stocks).collect::<Vec<_>>().chunks(STOCKS_PER_CHUNK) {
        let per_stock: Vec<(StockSeries, StockPass)> = chunk
            .par_iter()
            .map(|&stock| {
                let s = StockSeries::new(bars, stock, 0);
                let pass = stock_pass(&s, &market[s.first_day..s.first_day + s.len()], Carry::fresh(), &spec.horizons);
                (s, pass)
            })
            .collect();
        // The chunk's cells in output order (by day, then stock), so that each column is
        // written in increasing positions: a few adjacent cells per day, not one cell per
        // row of the whole column (which missed the cache on every write). Visited day by
        // day, the stocks in order, they come out in that order (no sort).
        let mut cells: Vec<(usize, u32, u32)> = Vec::new();
        let mut next: Vec<std::ops::Range<usize>> = chunk.iter().map(|stock| bars.stock_rows(*stock)).collect();
        let day = bars.day();
        let first = next.iter().filter(|rows| !rows.is_empty()).map(|rows| day[rows.start]).min();
        let last = next.iter().filter(|rows| !rows.is_empty()).map(|rows| day[rows.end - 1]).max();
        for today in first.zip(last).map_or(0..0, |(first, last)| first..last + 1) {
            for (index, (rows, (series, _))) in next.iter_mut().zip(&per_stock).enumerate() {
                if rows.start < rows.end && day[rows.start] == today {
                    let t = series_position(bars, rows.start, series.first_day, 0);
                    cells.push((slots.take(today), index as u32, t as u32));
                    rows.start += 1;
                }
            }
        }
        scatter(&cells, &per_stock, &mut features, &mut targets, &mut adv);
        for (&stock, (series, pass)) in chunk.iter().zip(per_stock) {
            states.push(StockState {
                code: bars.codes()[stock].clone(),
                first_day: series.first_day as u32,
                len: series.len() as u32,
                tail: series.tail(tail_days),
                sums: pass.sums,
            });
        }
    }
    features.par_iter_mut().for_each(|column| normalise_cross_sections(column, &order.day_offsets));

    let parts = PanelParts {
        calendar: bars.calendar().clone(),
        codes: bars.codes().to_vec(),
        day: order.day,
        stock: order.stock,
        feature_names: FEATURES.iter().map(|f| f.name.to_string()).collect(),
        features,
        horizons: spec.horizons.clone(),
        targets,
        adv: Some(adv),
    };
    let state =
        FeatureState { format: STATE_FORMAT.to_string(), horizons: spec.horizons.clone(), market, stocks: states };
    // The builder produces sorted, consistent parts by construction.
    let panel =
        Panel::new(parts).unwrap_or_else(|error| unreachable!("build_panel produced an invalid panel: {error}"));
    (panel, state)
}

/// Writes each cell `(position, stock of the chunk, dense position)` of a chunk's passes
/// into the columns; the cells come in increasing positions.
fn scatter(
    cells: &[(usize, u32, u32)],
    per_stock: &[(StockSeries, StockPass)],
    features: &mut [Vec<f32>],
    targets: &mut [Vec<f64>],
    adv: &mut [f64],
) {
    debug_assert!(cells.windows(2).all(|pair| pair[0].0 < pair[1].0));
    features.par_iter_mut().enumerate().for_each(|(feature, column)| {
        for &(at, index, t) in cells {
            column[at] = per_stock[index as usize].1.features[feature][t as usize];
        }
    });
    targets.par_iter_mut().enumerate().for_each(|(horizon, column)| {
        for &(at, index, t) in cells {
            column[at] = per_stock[index as usize].1.targets[horizon][t as usize];
        }
    });
    for &(at, index, t) in cells {
        adv[at] = per_stock[index as usize].1.adv[t as usize];
    }
}

/// Equal-weighted market log return per trading day, from that day's returns only: each
/// stock's `ret_1` on its dense series (null unless it has closes on the day and the
/// trading day before), summed per day in stock order.
fn market_log_returns(bars: &Bars) -> Vec<f64> {
    let days = bars.calendar().len();
    let mut sum = vec![0.0; days];
    let mut count = vec![0usize; days];
    let (day, close) = (bars.day(), bars.close());
    for stock in 0..bars.codes().len() {
        let rows = bars.stock_rows(stock);
        for row in rows.start + 1..rows.end {
            if day[row - 1] + 1 != day[row] {
                continue;
            }
            let r = close[row] / close[row - 1] - 1.0;
            if r.is_finite() {
                sum[day[row] as usize] += r;
                count[day[row] as usize] += 1;
            }
        }
    }
    market_returns(&sum, &count)
}

/// The market log return of each day from the sum and count of its stocks' returns.
fn market_returns(sum: &[f64], count: &[usize]) -> Vec<f64> {
    sum.iter().zip(count).map(|(s, n)| if *n == 0 { f64::NAN } else { (1.0 + s / *n as f64).ln() }).collect()
}

fn stock_targets(s: &StockSeries, horizons: &[u32]) -> Vec<Vec<f64>> {
    horizons
        .iter()
        .map(|h| {
            let h = *h as usize;
            (0..s.len()).map(|t| s.close.get(t + h).map_or(f64::NAN, |later| later / s.close[t] - 1.0)).collect()
        })
        .collect()
}

/// The features of one stock, dense over its span, in catalogue order. Positions before
/// `carry.from()` (a saved tail) are read, never computed: their values are meaningless.
fn stock_features(s: &StockSeries, market: &[f64], carry: &mut Carry) -> Vec<Vec<f64>> {
    let n = s.len();
    let c = &s.close;
    let lr = log_return(c);
    let mut out: Vec<Vec<f64>> = Vec::with_capacity(FEATURES.len());
    let mut push = |name: &str, values: Vec<f64>| {
        debug_assert_eq!(FEATURES[out.len()].name, name, "feature order differs from the catalogue");
        out.push(values);
    };
    let map2 =
        |a: &[f64], b: &[f64], f: fn(f64, f64) -> f64| a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect::<Vec<f64>>();

    for lag in [1, 5, 10, 20, 60] {
        push(&format!("ret_{lag}"), change(c, lag));
    }
    push("mom_60_5", (0..n).map(|t| if t < 60 { f64::NAN } else { c[t - 5] / c[t - 60] - 1.0 }).collect());
    let vol_20 = rolling_std(&lr, 20, 15, carry);
    let vol_60 = rolling_std(&lr, 60, 40, carry);
    let vol_ratio = map2(&vol_20, &vol_60, |a, b| if b > 0.0 { a / b } else { f64::NAN });
    push("vol_20", vol_20);
    push("vol_60", vol_60);
    push("vol_ratio_20_60", vol_ratio);
    let range: Vec<f64> = (0..n).map(|t| (s.high[t] - s.low[t]) / c[t]).collect();
    push("range_5", rolling_mean(&range, 5, 3, carry));
    push("gap", (0..n).map(|t| if t == 0 { f64::NAN } else { s.open[t] / c[t - 1] - 1.0 }).collect());
    push("intraday", map2(c, &s.open, |close, open| close / open - 1.0));
    for (window, min_valid) in [(5, 4), (20, 15), (60, 40)] {
        push(&format!("dist_ma_{window}"), map2(c, &rolling_mean(c, window, min_valid, carry), |x, ma| x / ma - 1.0));
    }
    let diff: Vec<f64> = (0..n).map(|t| if t == 0 { f64::NAN } else { c[t] - c[t - 1] }).collect();
    let up = rolling_sum(&diff.iter().map(|d| d.max(0.0)).collect::<Vec<_>>(), 14, 10, carry);
    let moves = rolling_sum(&diff.iter().map(|d| d.abs()).collect::<Vec<_>>(), 14, 10, carry);
    push(
        "rsi_14",
        map2(&up, &moves, |u, m| {
            if m > 0.0 {
                u / m
            } else if m == 0.0 {
                0.5
            } else {
                f64::NAN
            }
        }),
    );
    let log_ratio = |x: &[f64], short: usize, long: usize, carry: &mut Carry| {
        let short_mean = rolling_mean(x, short, short.div_ceil(2), carry);
        map2(&short_mean, &rolling_mean(x, long, long * 2 / 3, carry), |a, b| {
            if a > 0.0 && b > 0.0 { (a / b).ln() } else { f64::NAN }
        })
    };
    push("volume_ratio_5_60", log_ratio(&s.volume, 5, 60, carry));
    let log_volume: Vec<f64> = s.volume.iter().map(|v| v.ln_1p()).collect();
    push("volume_surprise_20", map2(&log_volume, &rolling_mean(&log_volume, 20, 15, carry), |x, m| x - m));
    push("value_ratio_5_60", log_ratio(&s.value, 5, 60, carry));
    push(
        "log_value_20",
        rolling_mean(&s.value, 20, 15, carry).iter().map(|v| if *v > 0.0 { v.ln() } else { f64::NAN }).collect(),
    );
    let ret_1 = change(c, 1);
    let impact: Vec<f64> =
        ret_1.iter().zip(&s.value).map(|(r, dv)| if *dv > 0.0 { r.abs() / dv * 1e9 } else { f64::NAN }).collect();
    push("amihud_20", rolling_mean(&impact, 20, 15, carry).iter().map(|x| x.ln_1p()).collect());
    for window in [20, 60] {
        let min_valid = window * 2 / 3;
        push(
            &format!("dist_high_{window}"),
            map2(c, &rolling_extreme(&s.high, window, min_valid, true), |x, hi| x / hi - 1.0),
        );
        push(
            &format!("dist_low_{window}"),
            map2(c, &rolling_extreme(&s.low, window, min_valid, false), |x, lo| x / lo - 1.0),
        );
    }
    let (beta, residual_variance) = rolling_beta(&lr, market, 60, 40, carry);
    for window in [5, 20] {
        let market_sum = rolling_sum(market, window, window, carry);
        let resid: Vec<f64> = (0..n)
            .map(|t| if t < window { f64::NAN } else { (c[t] / c[t - window]).ln() - beta[t] * market_sum[t] })
            .collect();
        if window == 5 {
            push("beta_60", beta.clone());
        }
        push(&format!("resid_ret_{window}"), resid);
    }
    push("idio_vol_60", residual_variance.iter().map(|v| v.sqrt()).collect());
    out
}

/// Robust z-score of each day's values, winsorised; a day with too few values is null.
fn normalise_cross_sections(column: &mut [f32], day_offsets: &[usize]) {
    let mut values: Vec<f64> = Vec::new();
    for day in 0..day_offsets.len() - 1 {
        let cells = &mut column[day_offsets[day]..day_offsets[day + 1]];
        values.clear();
        values.extend(cells.iter().filter(|x| x.is_finite()).map(|x| f64::from(*x)));
        if values.len() < MIN_CROSS_SECTION {
            cells.fill(f32::NAN);
            continue;
        }
        let median = median_in_place(&mut values);
        for value in values.iter_mut() {
            *value = (*value - median).abs();
        }
        let mut scale = 1.4826 * median_in_place(&mut values);
        if scale <= 0.0 {
            // More than half the values equal the median: fall back to the mean
            // absolute deviation (scaled to a normal's standard deviation).
            scale = 1.2533 * values.iter().sum::<f64>() / values.len() as f64;
        }
        for cell in cells.iter_mut() {
            if !cell.is_finite() {
                *cell = f32::NAN;
                continue;
            }
            let z = if scale > 0.0 { (f64::from(*cell) - median) / scale } else { 0.0 };
            *cell = z.clamp(-WINSOR_LIMIT, WINSOR_LIMIT) as f32;
        }
    }
}

/// Median of a non-empty slice (reorders it).
fn median_in_place(values: &mut [f64]) -> f64 {
    let mid = values.len() / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        return upper;
    }
    let lower = values[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

#[cfg(test)]
mod tests;
