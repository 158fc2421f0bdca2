use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;

use super::*;
use crate::bars::{Bars, BarsColumns};
use crate::calendar::TradingCalendar;
use crate::synth::{SynthSpec, generate};

fn small_market() -> BarsColumns {
    let spec = SynthSpec { stocks: 30, days: 400, seed: 11, ..SynthSpec::default() };
    generate(&spec).expect("valid synth spec").bars
}

fn same_value(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn catalogue_has_at_least_twenty_distinct_features_in_column_order() {
    assert!(FEATURES.len() >= 20);
    let bars = Bars::new(small_market()).expect("valid bars");
    let panel = build_panel(&bars, &PanelSpec::default());
    let names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
    assert_eq!(panel.feature_names(), names.as_slice());
    let universe = panel.daily_universe();
    assert_eq!(universe.len(), panel.calendar().len());
    assert_eq!(universe.iter().sum::<usize>(), panel.rows());
    assert_eq!(universe[200], panel.rows_of_day(200).len());
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
}

#[test]
fn features_are_robust_z_scores_within_the_winsor_limit() {
    let bars = Bars::new(small_market()).expect("valid bars");
    let panel = build_panel(&bars, &PanelSpec::default());
    let day = 300;
    for (name, column) in panel.feature_names().iter().zip(panel.features()) {
        let mut values: Vec<f32> = panel.rows_of_day(day).map(|row| column[row]).filter(|x| x.is_finite()).collect();
        assert!(values.len() >= MIN_CROSS_SECTION, "{name} has {} values on day {day}", values.len());
        assert!(values.iter().all(|x| x.abs() <= WINSOR_LIMIT as f32), "{name} exceeds the winsor limit");
        values.sort_by(f32::total_cmp);
        let median = if values.len() % 2 == 1 {
            values[values.len() / 2]
        } else {
            (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
        };
        assert!(median.abs() < 1e-5, "{name}: median of a robust z-score is {median}");
    }
}

#[test]
fn targets_equal_a_direct_computation_from_closes() {
    let columns = small_market();
    let calendar = TradingCalendar::from_dates(columns.date.clone());
    let close: HashMap<(NaiveDate, &str), f64> =
        columns.date.iter().zip(&columns.code).zip(&columns.close).map(|((d, c), v)| ((*d, c.as_str()), *v)).collect();
    let bars = Bars::new(columns.clone()).expect("valid bars");
    let panel = build_panel(&bars, &PanelSpec::default());
    let mut checked_nulls_at_end = 0;
    for row in (0..panel.rows()).step_by(97).chain(panel.rows() - 40..panel.rows()) {
        let day = panel.day()[row] as usize;
        let code = panel.codes()[panel.stock()[row] as usize].as_str();
        let today = close[&(calendar.date(day).expect("day on calendar"), code)];
        for &h in panel.horizons() {
            let target = panel.target(h).expect("horizon built")[row];
            let later = calendar.date(day + h as usize).and_then(|d| close.get(&(d, code)).copied());
            match later {
                Some(later) if later.is_finite() && today.is_finite() => {
                    assert!((target - (later / today - 1.0)).abs() < 1e-12, "row {row} h {h}");
                }
                _ => {
                    assert!(target.is_nan(), "row {row} h {h}: expected null target, got {target}");
                    if day + h as usize >= calendar.len() {
                        checked_nulls_at_end += 1;
                    }
                }
            }
        }
    }
    assert!(checked_nulls_at_end > 0, "the sample must include targets past the end of the data");
}

#[test]
fn a_null_close_stays_null_in_returns_and_targets() {
    let mut columns = small_market();
    let calendar = TradingCalendar::from_dates(columns.date.clone());
    let day = 200;
    let date = calendar.date(day).expect("day on calendar");
    let row = columns.date.iter().zip(&columns.code).position(|(d, c)| *d == date && c == "S0003").expect("row exists");
    for column in [&mut columns.open, &mut columns.high, &mut columns.low, &mut columns.close] {
        column[row] = f64::NAN;
    }
    let bars = Bars::new(columns).expect("valid bars");
    let panel = build_panel(&bars, &PanelSpec::default());
    let stock = panel.codes().iter().position(|c| c == "S0003").expect("stock exists");
    let ret_1 = panel.feature("ret_1").expect("ret_1 exists");
    let at = |d: usize| panel.find_row(d, stock).expect("row exists");
    assert!(ret_1[at(day)].is_nan() && ret_1[at(day + 1)].is_nan());
    assert!(ret_1[at(day + 2)].is_finite());
    let target_5 = panel.target(5).expect("horizon 5");
    assert!(target_5[at(day)].is_nan() && target_5[at(day - 5)].is_nan());
    assert!(target_5[at(day - 6)].is_finite());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Look-ahead: a feature computed from the data known at the close of its date
    /// equals the one computed from the full history.
    #[test]
    fn features_never_look_ahead(day in 0usize..400, stock_pick in 0usize..30) {
        let bars = Bars::new(small_market()).expect("valid bars");
        let full = build_panel(&bars, &PanelSpec::default());
        let Some(full_row) = full.find_row(day, stock_pick) else { return Ok(()) };
        let code = &full.codes()[stock_pick];
        let truncated = build_panel(&bars.truncated(day), &PanelSpec::default());
        let stock = truncated.codes().iter().position(|c| c == code).expect("stock known at its date");
        let row = truncated.find_row(day, stock).expect("row known at its date");
        for (index, name) in full.feature_names().iter().enumerate() {
            let (a, b) = (full.features()[index][full_row], truncated.features()[index][row]);
            prop_assert!(same_value(a, b), "{name} on day {day} for {code}: full {a} vs truncated {b}");
        }
    }
}

#[test]
fn docs_list_every_feature_with_its_formula() {
    let docs = include_str!("../../../../docs/FEATURES.md");
    assert!(
        docs.contains(&catalogue_markdown()),
        "docs/FEATURES.md is out of date: paste catalogue_markdown() into it"
    );
}

/// The market return read straight from the bars equals its definition on each stock's
/// dense series (`ret_1` null across a missing row or a null close), bit for bit.
#[test]
fn the_market_return_from_the_bars_equals_the_dense_definition_with_gaps_and_nulls() {
    let mut columns = small_market();
    // Holes: drop every 7th row of some stocks, null a few closes.
    let keep: Vec<bool> =
        (0..columns.date.len()).map(|row| !(columns.code[row].ends_with('3') && row % 7 == 0)).collect();
    let filter = |values: &mut Vec<f64>| {
        let mut index = 0;
        values.retain(|_| (keep[index], index += 1).0);
    };
    for column in [&mut columns.open, &mut columns.high, &mut columns.low, &mut columns.close, &mut columns.volume] {
        filter(column);
    }
    if let Some(turnover) = columns.turnover.as_mut() {
        filter(turnover);
    }
    let mut index = 0;
    columns.date.retain(|_| (keep[index], index += 1).0);
    let mut index = 0;
    columns.code.retain(|_| (keep[index], index += 1).0);
    for row in (5..columns.close.len()).step_by(97) {
        columns.close[row] = f64::NAN;
    }
    let bars = Bars::new(columns).expect("valid bars");
    let days = bars.calendar().len();
    let (mut sum, mut count) = (vec![0.0; days], vec![0usize; days]);
    for stock in 0..bars.codes().len() {
        let series = StockSeries::new(&bars, stock, 0);
        for (t, r) in change(&series.close, 1).iter().enumerate() {
            if r.is_finite() {
                sum[series.first_day + t] += r;
                count[series.first_day + t] += 1;
            }
        }
    }
    let dense: Vec<f64> =
        sum.iter().zip(&count).map(|(s, n)| if *n == 0 { f64::NAN } else { (1.0 + s / *n as f64).ln() }).collect();
    let market = market_log_returns(&bars);
    assert_eq!(market.len(), dense.len());
    for (day, (a, b)) in market.iter().zip(&dense).enumerate() {
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "day {day}: {a} vs {b}");
    }
    assert!(count.iter().any(|n| *n > 0 && *n < bars.codes().len()), "some days have holes");
}

/// The small market with what ingests meet: a stock listed late whose code sorts first
/// (every stock index moves when it joins), a stock suspended for 130 days, one delisted,
/// null closes and a day on which only some stocks trade.
fn market_with_gaps() -> BarsColumns {
    let mut columns = small_market();
    let dates = TradingCalendar::from_dates(columns.date.clone());
    let day = |index: usize| dates.date(index).expect("a day");
    let mut codes = columns.code.clone();
    codes.sort_unstable();
    codes.dedup();
    let (suspended, delisted, sparse) = (codes[3].clone(), codes[7].clone(), codes[11].clone());
    for row in 0..columns.date.len() {
        if columns.code[row] == codes[5] && columns.date[row] == day(250) {
            columns.close[row] = f64::NAN;
        }
        if columns.code[row] == codes[6] && (columns.date[row] == day(301) || columns.date[row] == day(120)) {
            columns.close[row] = f64::NAN;
            columns.open[row] = f64::NAN;
        }
    }
    // A newcomer whose code sorts first: a copy of another stock's bars from day 280.
    let newcomer: Vec<usize> =
        (0..columns.date.len()).filter(|&row| columns.code[row] == codes[9] && columns.date[row] >= day(280)).collect();
    for row in newcomer {
        columns.date.push(columns.date[row]);
        columns.code.push("0000".to_string());
        columns.open.push(columns.open[row] * 1.01);
        columns.high.push(columns.high[row] * 1.01);
        columns.low.push(columns.low[row] * 1.01);
        columns.close.push(columns.close[row] * 1.01);
        columns.volume.push(columns.volume[row] + 1.0);
        if let Some(turnover) = columns.turnover.as_mut() {
            let value = turnover[row];
            turnover.push(value);
        }
    }
    columns.rows_where(|date, code| {
        let suspended = code == suspended && date > day(170) && date < day(300);
        let delisted = code == delisted && date > day(200);
        !(suspended || delisted || code == sparse && date.ordinal() % 3 == 0)
    })
}

fn assert_panels_identical(a: &Panel, b: &Panel, context: &str) {
    assert_eq!(a.calendar().dates(), b.calendar().dates(), "{context}: calendars");
    assert_eq!(a.codes(), b.codes(), "{context}: codes");
    assert_eq!((a.day(), a.stock()), (b.day(), b.stock()), "{context}: rows");
    for (name, (x, y)) in a.feature_names().iter().zip(a.features().iter().zip(b.features())) {
        let differ = x.iter().zip(y).position(|(p, q)| !same_value(*p, *q));
        assert!(differ.is_none(), "{context}: feature {name} differs at row {differ:?}");
    }
    let bits =
        |values: &[f64]| values.iter().map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() }).collect::<Vec<_>>();
    for (h, (x, y)) in a.targets().iter().zip(b.targets()).enumerate() {
        let differ = bits(x).iter().zip(bits(y)).position(|(p, q)| *p != q);
        assert!(differ.is_none(), "{context}: target {} differs at row {differ:?}", a.horizons()[h]);
    }
    assert_eq!(a.adv().map(bits), b.adv().map(bits), "{context}: ADV");
}

#[test]
fn a_panel_continued_day_by_day_equals_a_full_build_bit_for_bit() {
    let columns = market_with_gaps();
    let spec = PanelSpec::default();
    let (whole, whole_state) = build_panel_with_state(&Bars::new(columns.clone()).expect("bars"), &spec);
    let dates = whole.calendar().dates().to_vec();
    // Cuts before, inside and after the suspension, the delisting and the listing; each
    // continued with one day, then a few, then the rest.
    for cut in [110, 171, 199, 279, 300, 396] {
        let upto = |last: usize| columns.rows_where(|date, _| date <= dates[last]);
        let (mut panel, mut state) = build_panel_with_state(&Bars::new(upto(cut)).expect("bars"), &spec);
        let mut last = cut;
        for next in [cut + 1, cut + 4, dates.len() - 1] {
            if next <= last || next >= dates.len() {
                continue;
            }
            let batch = columns.rows_where(|date, _| date > dates[last] && date <= dates[next]);
            (panel, state) = extend_panel(panel, &state, &Bars::new(batch).expect("bars")).expect("extends");
            let (expected, expected_state) = build_panel_with_state(&Bars::new(upto(next)).expect("bars"), &spec);
            let context = format!("cut after day {cut}, continued through day {next}");
            assert_panels_identical(&panel, &expected, &context);
            assert_eq!(format!("{state:?}"), format!("{expected_state:?}"), "{context}: state");
            last = next;
        }
        assert_panels_identical(&panel, &whole, &format!("cut after day {cut}"));
        assert_eq!(format!("{state:?}"), format!("{whole_state:?}"));
    }
}

#[test]
fn days_already_in_the_panel_or_before_its_end_are_refused() {
    let columns = market_with_gaps();
    let spec = PanelSpec::default();
    let dates = TradingCalendar::from_dates(columns.date.clone()).dates().to_vec();
    let (panel, state) =
        build_panel_with_state(&Bars::new(columns.rows_where(|date, _| date <= dates[300])).expect("bars"), &spec);
    let batch = |from: usize, to: usize| {
        Bars::new(columns.rows_where(|date, _| date >= dates[from] && date <= dates[to])).expect("bars")
    };
    let duplicate = extend_panel(panel.clone(), &state, &batch(300, 302)).map(|_| ()).expect_err("refused");
    assert_eq!(duplicate, ExtendError::Duplicate { date: dates[300], last: dates[300] });
    assert!(duplicate.to_string().contains("already in the panel"), "{duplicate}");
    // A date before the panel's end that it does not hold (a back-fill).
    let backfill = NaiveDate::from_ymd_opt(2000, 1, 3).expect("date");
    let mut early = columns.rows_where(|date, _| date == dates[301]);
    early.date.iter_mut().for_each(|date| *date = backfill);
    let out_of_order =
        extend_panel(panel.clone(), &state, &Bars::new(early).expect("bars")).map(|_| ()).expect_err("refused");
    assert_eq!(out_of_order, ExtendError::OutOfOrder { date: backfill, last: dates[300] });
    // Another panel's state.
    let (_, other) =
        build_panel_with_state(&Bars::new(columns.rows_where(|date, _| date <= dates[200])).expect("bars"), &spec);
    let mismatch = extend_panel(panel, &other, &batch(301, 302)).map(|_| ()).expect_err("refused");
    assert!(matches!(mismatch, ExtendError::StateMismatch(_)), "{mismatch}");
}

#[test]
fn weekdays_without_data_are_refused_unless_declared_closed() {
    let d = |day: u32| NaiveDate::from_ymd_opt(2025, 7, day).expect("date");
    // The panel ends Friday 18th; Monday 21st has no data.
    let panel = TradingCalendar::from_dates(vec![d(16), d(18)]);
    let missing = check_new_days(&panel, &[d(22)], &[]).expect_err("refused");
    assert_eq!(missing, ExtendError::Missing { dates: vec![d(21)], before: d(18), after: d(22) });
    assert!(missing.to_string().contains("--closed 2025-07-21"), "{missing}");
    assert_eq!(check_new_days(&panel, &[d(22)], &[d(21)]), Ok(()));
    assert_eq!(check_new_days(&panel, &[d(21), d(22)], &[]), Ok(()));
    // A gap inside the new days counts too.
    assert!(matches!(check_new_days(&panel, &[d(21), d(23)], &[]), Err(ExtendError::Missing { .. })));
    assert_eq!(check_new_days(&panel, &[d(18)], &[]), Err(ExtendError::Duplicate { date: d(18), last: d(18) }));
    assert_eq!(check_new_days(&panel, &[d(16)], &[]), Err(ExtendError::Duplicate { date: d(16), last: d(18) }));
    assert_eq!(check_new_days(&panel, &[d(17)], &[]), Err(ExtendError::OutOfOrder { date: d(17), last: d(18) }));
}
