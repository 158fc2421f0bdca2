//! The market a backtest trades in, read from a panel: each stock's next-day return (the
//! 1-day target), its daily volatility (the raw `vol_20`, recomputed from those returns
//! because the panel stores features normalised) and its 20-day mean traded value (the
//! panel's `adv_20`), dense by (trading day, universe index).

use super::portfolio::Market;
use crate::panel::{ADV_COLUMN, Panel, target_name};
use crate::rolling::rolling_std;

/// Why a panel cannot give a backtest its market.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    #[error(
        "the panel has no 1-day target ({target}), which the backtest's portfolios earn: prepare it with \
         horizon 1 (`wf data prepare --horizons 1,...`)"
    )]
    NoDailyReturns { target: String },
    #[error(
        "backtest.impact: the panel has no {ADV_COLUMN} column (traded value), which the impact cost needs: \
         prepare it again with this version of `wf data prepare`, or set impact = 0"
    )]
    NoTradedValue,
}

impl Market {
    /// The market of `panel`; `needs_adv`: refuse a panel without traded value.
    pub fn from_panel(panel: &Panel, needs_adv: bool) -> Result<Self, MarketError> {
        let returns_column = panel.target(1).ok_or_else(|| MarketError::NoDailyReturns { target: target_name(1) })?;
        let adv_column = panel.adv();
        if needs_adv && adv_column.is_none() {
            return Err(MarketError::NoTradedValue);
        }
        let (days, stocks) = (panel.calendar().len(), panel.codes().len());
        let mut returns = vec![vec![f64::NAN; stocks]; days];
        let mut adv = vec![vec![f64::NAN; stocks]; days];
        for day in 0..days {
            for row in panel.rows_of_day(day) {
                let stock = panel.stock()[row] as usize;
                returns[day][stock] = returns_column[row];
                if let Some(column) = adv_column {
                    adv[day][stock] = column[row];
                }
            }
        }
        // vol_20 at t: the sample std of the log returns of the 20 days to t's close, at
        // least 15 of them, as the feature catalogue defines it. The log return into day
        // t is ln(1 + r(t - 1)), known at t's close.
        let mut vol = vec![vec![f64::NAN; stocks]; days];
        let mut log_returns = vec![f64::NAN; days];
        for stock in 0..stocks {
            for day in 1..days {
                log_returns[day] = returns[day - 1][stock].ln_1p();
            }
            for (day, sigma) in
                rolling_std(&log_returns, 20, 15, &mut crate::rolling::Carry::fresh()).into_iter().enumerate()
            {
                vol[day][stock] = sigma;
            }
        }
        Ok(Self { returns, vol, adv })
    }

    /// The days `first .. first + len` (past the end: missing).
    pub fn days(&self, first: usize, len: usize) -> Self {
        let slice = |rows: &[Vec<f64>]| -> Vec<Vec<f64>> {
            (first..first + len).map(|day| rows.get(day).cloned().unwrap_or_default()).collect()
        };
        Self { returns: slice(&self.returns), vol: slice(&self.vol), adv: slice(&self.adv) }
    }

    /// The stocks with a return on each day: the benchmark's universe (every stock the
    /// panel has a row for that day is scored; one without a next-day return earns 0).
    pub fn universe(panel: &Panel, first: usize, len: usize) -> Vec<Vec<u32>> {
        (first..first + len).map(|day| panel.stock()[panel.rows_of_day(day)].to_vec()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bars::Bars;
    use crate::feature::{PanelSpec, build_panel};
    use crate::synth::{SynthSpec, generate};

    #[test]
    fn the_market_recomputes_raw_vol_20_and_reads_returns_and_traded_value() {
        let spec = SynthSpec { stocks: 20, days: 400, ..SynthSpec::default() };
        let bars = Bars::new(generate(&spec).expect("synth").bars).expect("bars");
        let panel = build_panel(&bars, &PanelSpec { horizons: vec![1, 5] });
        let market = Market::from_panel(&panel, true).expect("market");
        let (days, stocks) = (panel.calendar().len(), panel.codes().len());
        // From the bars directly: closes and traded values by (day, stock).
        let mut close = vec![vec![f64::NAN; stocks]; days];
        let mut value = vec![vec![f64::NAN; stocks]; days];
        for (stock, row) in (0..stocks).flat_map(|stock| bars.stock_rows(stock).map(move |row| (stock, row))) {
            let day = bars.day()[row] as usize;
            close[day][stock] = bars.close[row];
            let turnover = bars.turnover.as_ref().map_or(f64::NAN, |t| t[row]);
            value[day][stock] = if turnover.is_finite() { turnover } else { bars.close[row] * bars.volume[row] };
        }
        let mut checked = 0;
        for stock in 0..stocks {
            for day in 30..days - 1 {
                let expected_return = close[day + 1][stock] / close[day][stock] - 1.0;
                let got = market.returns[day][stock];
                assert!(expected_return.is_nan() && got.is_nan() || (got - expected_return).abs() < 1e-12);
                let logs: Vec<f64> = (day - 19..=day)
                    .map(|t| (close[t][stock] / close[t - 1][stock]).ln())
                    .filter(|v| v.is_finite())
                    .collect();
                let values: Vec<f64> = (day - 19..=day).map(|t| value[t][stock]).filter(|v| v.is_finite()).collect();
                if logs.len() >= 15 {
                    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
                    let var = logs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (logs.len() - 1) as f64;
                    assert!((market.vol[day][stock] - var.sqrt()).abs() < 1e-9, "vol_20 of {stock} on {day}");
                    checked += 1;
                }
                if values.len() >= 15 {
                    let mean = values.iter().sum::<f64>() / values.len() as f64;
                    assert!((market.adv[day][stock] / mean - 1.0).abs() < 1e-9, "adv of {stock} on {day}");
                }
            }
        }
        assert!(checked > 300, "only {checked} volatilities checked");
        let later = market.days(30, 10);
        let bits = |row: &[f64]| row.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&later.returns[0]), bits(&market.returns[30]));
        assert_eq!(later.returns.len(), 10);
    }

    #[test]
    fn a_panel_without_daily_returns_or_traded_value_is_refused_by_name() {
        let spec = SynthSpec { stocks: 20, days: 400, ..SynthSpec::default() };
        let bars = Bars::new(generate(&spec).expect("synth").bars).expect("bars");
        let weekly = build_panel(&bars, &PanelSpec { horizons: vec![5] });
        let error = Market::from_panel(&weekly, false).expect_err("no 1-day target");
        assert!(error.to_string().contains("fwd_ret_1"), "{error}");
        let mut parts = build_panel(&bars, &PanelSpec { horizons: vec![1] }).into_parts();
        parts.adv = None;
        let old = Panel::new(parts).expect("panel");
        assert!(Market::from_panel(&old, false).is_ok(), "no impact: no traded value needed");
        let error = Market::from_panel(&old, true).expect_err("impact needs ADV");
        assert!(error.to_string().contains("backtest.impact") && error.to_string().contains("adv_20"), "{error}");
    }
}
