//! Continuing a panel with later days (`wf data ingest`): the new days' features are
//! computed from a saved state, not from the whole history, and equal a full build of the
//! whole history bit for bit.
//!
//! Why that holds: every feature of a stock on its dense day `t` is a pointwise function
//! of its prices over `t − 61 ..= t` and trailing statistics. Pointwise functions read at
//! most 61 days back, so [`super::TAIL_DAYS`] saved days suffice. The trailing statistics
//! (`rolling_mean`, `rolling_std`, `rolling_sum`, `rolling_beta`) keep running sums whose
//! last bits depend on the whole history: the state saves those sums after the last day
//! ([`crate::rolling::Sums`]), and the continued pass adds and subtracts exactly what the whole pass
//! would, in the same order. Trailing extremes are exact whatever the start, and the
//! cross-sectional normalisation reads one day. The market return of a day reads that
//! day's and the day before's closes. Targets of the last days before the new ones,
//! null until now, are filled in from the new closes.

use chrono::{Datelike, NaiveDate, Weekday};
use rayon::prelude::*;

use super::state::{FeatureState, STATE_FORMAT, StockState, tail_days};
use super::{
    Carry, FEATURES, StockPass, StockSeries, market_returns, normalise_cross_sections, output_order, scatter,
    series_position, stock_pass,
};
use crate::bars::Bars;
use crate::calendar::TradingCalendar;
use crate::panel::{Panel, PanelParts};

/// Why later days cannot continue a panel. Nothing is changed when one is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtendError {
    #[error("{date} is already in the panel (a duplicated day): the panel ends {last}")]
    Duplicate { date: NaiveDate, last: NaiveDate },
    #[error("{date} is before the panel's last day {last} (an out-of-order day): only later days can be added")]
    OutOfOrder { date: NaiveDate, last: NaiveDate },
    #[error(
        "no data for {missing} (weekdays between {before} and {after}): a missing day? If the exchange was closed, pass --closed {list}",
        missing = join(.dates), list = join(.dates)
    )]
    Missing { dates: Vec<NaiveDate>, before: NaiveDate, after: NaiveDate },
    #[error("the saved feature state does not belong to this panel: {0} (prepare the panel again)")]
    StateMismatch(String),
}

fn join(dates: &[NaiveDate]) -> String {
    dates.iter().map(NaiveDate::to_string).collect::<Vec<_>>().join(",")
}

/// Refuses new days that are not all after the end of `calendar` (the panel's: a day it
/// holds is a duplicate, an earlier one out of order) or that leave a weekday without data
/// between its end and the last new day, unless that weekday is in `closed` (an exchange
/// holiday). `new` must be sorted.
pub fn check_new_days(calendar: &TradingCalendar, new: &[NaiveDate], closed: &[NaiveDate]) -> Result<(), ExtendError> {
    check_after(calendar, new)?;
    let Some(last) = calendar.last() else { return Ok(()) };
    let mut before = last;
    for &date in new {
        let missing: Vec<NaiveDate> = before
            .iter_days()
            .skip(1)
            .take_while(|day| *day < date)
            .filter(|day| !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !closed.contains(day))
            .collect();
        if !missing.is_empty() {
            return Err(ExtendError::Missing { dates: missing, before, after: date });
        }
        before = date;
    }
    Ok(())
}

/// Refuses a day of `new` that `calendar` holds (duplicated) or that is before its last
/// day (out of order).
fn check_after(calendar: &TradingCalendar, new: &[NaiveDate]) -> Result<(), ExtendError> {
    let Some(last) = calendar.last() else { return Ok(()) };
    for &date in new {
        if calendar.index_of(date).is_some() {
            return Err(ExtendError::Duplicate { date, last });
        }
        if date < last {
            return Err(ExtendError::OutOfOrder { date, last });
        }
    }
    Ok(())
}

/// Continues `panel` (built with `state`) with the rows of `bars`, whose days must all be
/// after the panel's last day ([`check_new_days`] checks the calendar around them). Returns
/// the longer panel, equal bit for bit to a full build of the whole history, and its state.
/// Stocks listed in `bars` only join the panel; stocks absent from `bars` keep their rows.
pub fn extend_panel(panel: Panel, state: &FeatureState, bars: &Bars) -> Result<(Panel, FeatureState), ExtendError> {
    let mismatch = |reason: String| Err(ExtendError::StateMismatch(reason));
    if state.format != STATE_FORMAT {
        return mismatch(format!("its format is {:?}, not {STATE_FORMAT:?}", state.format));
    }
    let names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
    if panel.feature_names() != names.as_slice() {
        return mismatch("the panel's features are not the whole catalogue".into());
    }
    if panel.adv().is_none() {
        return mismatch("the panel has no ADV column".into());
    }
    if state.horizons != panel.horizons() {
        return mismatch(format!("horizons {:?}, the panel's {:?}", state.horizons, panel.horizons()));
    }
    if state.market.len() != panel.calendar().len() || state.stocks.len() != panel.codes().len() {
        return mismatch("another calendar or universe".into());
    }
    if state.stocks.iter().zip(panel.codes()).any(|(s, code)| s.code != *code) {
        return mismatch("other stock codes".into());
    }
    check_after(panel.calendar(), bars.calendar().dates())?;
    let old_days = panel.calendar().len();

    // The union of codes, sorted; where the panel's and the new bars' stocks go in it.
    let mut codes: Vec<String> = panel.codes().iter().chain(bars.codes()).cloned().collect();
    codes.sort_unstable();
    codes.dedup();
    let index_of = |code: &String| codes.binary_search(code).unwrap_or_default() as u32;
    let old_to_new: Vec<u32> = panel.codes().iter().map(index_of).collect();
    let bars_to_new: Vec<u32> = bars.codes().iter().map(index_of).collect();
    let mut old_of_new: Vec<Option<usize>> = vec![None; codes.len()];
    for (old, new) in old_to_new.iter().enumerate() {
        old_of_new[*new as usize] = Some(old);
    }
    let mut bars_of_new: Vec<Option<usize>> = vec![None; codes.len()];
    for (stock, new) in bars_to_new.iter().enumerate() {
        bars_of_new[*new as usize] = Some(stock);
    }

    let market = continued_market(state, bars, &old_of_new, &bars_of_new, old_days);
    let horizons = panel.horizons().to_vec();
    let longest = horizons.iter().copied().max().unwrap_or(0) as usize;
    let tail_days = tail_days(&horizons);

    // Each stock with new rows continues its series (or starts one); the others keep
    // their state as it is.
    let mut stocks: Vec<StockState> = Vec::with_capacity(codes.len());
    let order = output_order(bars);
    let new_rows = bars.rows();
    let mut features = vec![vec![f32::NAN; new_rows]; FEATURES.len()];
    let mut targets = vec![vec![f64::NAN; new_rows]; horizons.len()];
    let mut adv = vec![f64::NAN; new_rows];
    // (old panel row, horizon, value): targets of earlier rows the new closes fill in.
    let mut filled: Vec<(usize, usize, f64)> = Vec::new();
    let all: Vec<usize> = (0..codes.len()).collect();
    // New codes in order visit the new bars' stocks in order (both lists are sorted).
    let mut slots = order.slots();
    for chunk in all.chunks(super::STOCKS_PER_CHUNK) {
        let passes: Vec<Option<(StockSeries, StockPass)>> = chunk
            .par_iter()
            .map(|&stock| {
                let bars_stock = bars_of_new[stock]?;
                let (series, carry) = match old_of_new[stock] {
                    Some(old) => continued_series(&state.stocks[old], bars, bars_stock, old_days),
                    None => (StockSeries::new(bars, bars_stock, old_days), Carry::fresh()),
                };
                let pass =
                    stock_pass(&series, &market[series.first_day..series.first_day + series.len()], carry, &horizons);
                Some((series, pass))
            })
            .collect();
        let mut cells: Vec<(usize, u32, u32)> = Vec::new();
        let mut present: Vec<(StockSeries, StockPass)> = Vec::new();
        for (&stock, pass) in chunk.iter().zip(passes) {
            let Some((series, mut pass)) = pass else {
                let old = old_of_new[stock].unwrap_or_default();
                stocks.push(state.stocks[old].clone());
                continue;
            };
            let bars_stock = bars_of_new[stock].unwrap_or_default();
            for row in bars.stock_rows(bars_stock) {
                let t = series_position(bars, row, series.first_day, old_days);
                cells.push((slots.take(bars.day()[row]), present.len() as u32, t as u32));
            }
            if let Some(old) = old_of_new[stock] {
                // Earlier rows whose horizon now reaches a new close.
                let saved = &state.stocks[old];
                let tail_len = saved.tail.close.len();
                for t in tail_len.saturating_sub(longest)..tail_len {
                    let day = series.first_day + t;
                    let Some(row) = panel.find_row(day, old) else { continue };
                    for (h, values) in pass.targets.iter().enumerate() {
                        if t + horizons[h] as usize >= tail_len {
                            filled.push((row, h, values[t]));
                        }
                    }
                }
            }
            // A continued series starts at its tail; its state keeps its first row's day.
            let first_day = old_of_new[stock].map_or(series.first_day, |old| state.stocks[old].first_day as usize);
            stocks.push(StockState {
                code: codes[stock].clone(),
                first_day: first_day as u32,
                len: (series.first_day + series.len() - first_day) as u32,
                tail: series.tail(tail_days),
                sums: std::mem::take(&mut pass.sums),
            });
            present.push((series, pass));
        }
        // Stock by stock above: in output order for the scatter.
        cells.sort_unstable_by_key(|cell| cell.0);
        scatter(&cells, &present, &mut features, &mut targets, &mut adv);
    }
    features.par_iter_mut().for_each(|column| normalise_cross_sections(column, &order.day_offsets));

    let mut parts = panel.into_parts();
    for stock in &mut parts.stock {
        *stock = old_to_new[*stock as usize];
    }
    for (row, h, value) in filled {
        parts.targets[h][row] = value;
    }
    // Each column grows by exactly the new rows (a plain `extend` would double its
    // capacity: the whole panel's memory again, unused).
    fn append<T>(column: &mut Vec<T>, new: impl ExactSizeIterator<Item = T>) {
        column.reserve_exact(new.len());
        column.extend(new);
    }
    append(&mut parts.day, order.day.iter().map(|d| d + old_days as u32));
    append(&mut parts.stock, order.stock.iter().map(|s| bars_to_new[*s as usize]));
    for (column, new) in parts.features.iter_mut().zip(features) {
        append(column, new.into_iter());
    }
    for (column, new) in parts.targets.iter_mut().zip(targets) {
        append(column, new.into_iter());
    }
    if let Some(column) = parts.adv.as_mut() {
        append(column, adv.into_iter());
    }
    let mut dates = parts.calendar.dates().to_vec();
    dates.extend_from_slice(bars.calendar().dates());
    let parts = PanelParts { calendar: TradingCalendar::from_dates(dates), codes, ..parts };
    let panel = Panel::new(parts).map_err(|error| ExtendError::StateMismatch(error.to_string()))?;
    let state = FeatureState { format: STATE_FORMAT.to_string(), horizons, market, stocks };
    Ok((panel, state))
}

/// A saved stock's series from its tail's first day through its last new row, and the
/// carry that continues it after the tail.
fn continued_series(saved: &StockState, bars: &Bars, bars_stock: usize, old_days: usize) -> (StockSeries, Carry) {
    let tail = &saved.tail;
    let tail_len = tail.close.len();
    let start = saved.first_day as usize + saved.len as usize - tail_len;
    let rows = bars.stock_rows(bars_stock);
    let end = old_days + bars.day()[rows.end - 1] as usize;
    let mut series = StockSeries::empty(start, end - start + 1);
    series.open[..tail_len].copy_from_slice(&tail.open);
    series.high[..tail_len].copy_from_slice(&tail.high);
    series.low[..tail_len].copy_from_slice(&tail.low);
    series.close[..tail_len].copy_from_slice(&tail.close);
    series.volume[..tail_len].copy_from_slice(&tail.volume);
    series.value[..tail_len].copy_from_slice(&tail.value);
    series.fill(bars, bars_stock, old_days);
    (series, Carry::resume(saved.sums.clone(), tail_len))
}

/// The saved market returns, then the new days': each stock's return from its previous
/// row (its last saved day for the first new one) when that row is the day before,
/// summed per day in code order, as the whole pass sums them.
fn continued_market(
    state: &FeatureState,
    bars: &Bars,
    old_of_new: &[Option<usize>],
    bars_of_new: &[Option<usize>],
    old_days: usize,
) -> Vec<f64> {
    let days = bars.calendar().len();
    let mut sum = vec![0.0; days];
    let mut count = vec![0usize; days];
    for (old, bars_stock) in old_of_new.iter().zip(bars_of_new) {
        let Some(bars_stock) = bars_stock else { continue };
        let mut previous: Option<(usize, f64)> = old.map(|old| {
            let saved = &state.stocks[old];
            let last = saved.first_day as usize + saved.len as usize - 1;
            (last, saved.tail.close.last().copied().unwrap_or(f64::NAN))
        });
        for row in bars.stock_rows(*bars_stock) {
            let day = old_days + bars.day()[row] as usize;
            let close = bars.close[row];
            if let Some((before, previous_close)) = previous
                && before + 1 == day
            {
                let r = close / previous_close - 1.0;
                if r.is_finite() {
                    sum[day - old_days] += r;
                    count[day - old_days] += 1;
                }
            }
            previous = Some((day, close));
        }
    }
    let mut market = state.market.clone();
    market.extend(market_returns(&sum, &count));
    market
}
