//! The trading calendar: the sorted set of distinct dates of a panel.
//!
//! Every offset in walkforward (horizons, windows, cadences, model age) counts trading
//! days on this calendar, never calendar days. Market holidays are simply absent.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Sorted, distinct trading dates. Index `i` is "trading day i".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingCalendar {
    dates: Vec<NaiveDate>,
}

impl TradingCalendar {
    /// Builds a calendar from dates in any order, with or without repeats.
    pub fn from_dates(mut dates: Vec<NaiveDate>) -> Self {
        dates.sort_unstable();
        dates.dedup();
        Self { dates }
    }

    /// Weekday (Monday to Friday) calendar of `days` trading days starting at the first
    /// weekday on or after `start`: the calendar of the synthetic market.
    pub fn business_days(start: NaiveDate, days: usize) -> Self {
        use chrono::{Datelike, Weekday};
        let dates = start
            .iter_days()
            .filter(|date| !matches!(date.weekday(), Weekday::Sat | Weekday::Sun))
            .take(days)
            .collect();
        Self { dates }
    }

    pub fn len(&self) -> usize {
        self.dates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dates.is_empty()
    }

    pub fn dates(&self) -> &[NaiveDate] {
        &self.dates
    }

    /// The date of trading day `index`, if the calendar has it.
    pub fn date(&self, index: usize) -> Option<NaiveDate> {
        self.dates.get(index).copied()
    }

    pub fn first(&self) -> Option<NaiveDate> {
        self.dates.first().copied()
    }

    pub fn last(&self) -> Option<NaiveDate> {
        self.dates.last().copied()
    }

    /// Index of `date` when it is a trading day.
    pub fn index_of(&self, date: NaiveDate) -> Option<usize> {
        self.dates.binary_search(&date).ok()
    }

    /// Index of the first trading day on or after `date` (`len()` when past the end).
    pub fn index_on_or_after(&self, date: NaiveDate) -> usize {
        self.dates.partition_point(|d| *d < date)
    }

    /// Index of the last trading day on or before `date` (`None` before the first).
    pub fn index_on_or_before(&self, date: NaiveDate) -> Option<usize> {
        self.dates.partition_point(|d| *d <= date).checked_sub(1)
    }

    /// The calendar cut after `last_index` (inclusive): what was known at that close.
    pub fn truncated(&self, last_index: usize) -> Self {
        let end = (last_index + 1).min(self.dates.len());
        Self { dates: self.dates[..end].to_vec() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn from_dates_sorts_and_removes_repeats() {
        let calendar = TradingCalendar::from_dates(vec![date(2024, 1, 3), date(2024, 1, 2), date(2024, 1, 3)]);
        assert_eq!(calendar.dates(), &[date(2024, 1, 2), date(2024, 1, 3)]);
        assert_eq!(calendar.index_of(date(2024, 1, 3)), Some(1));
        assert_eq!(calendar.index_of(date(2024, 1, 4)), None);
        assert_eq!(calendar.index_on_or_after(date(2024, 1, 1)), 0);
        assert_eq!(calendar.index_on_or_after(date(2024, 1, 4)), 2);
        assert_eq!(calendar.index_on_or_before(date(2024, 1, 1)), None);
        assert_eq!(calendar.index_on_or_before(date(2024, 1, 2)), Some(0));
        assert_eq!(calendar.index_on_or_before(date(2024, 1, 9)), Some(1));
    }

    #[test]
    fn business_days_skip_weekends() {
        // 2024-01-05 is a Friday.
        let calendar = TradingCalendar::business_days(date(2024, 1, 5), 3);
        assert_eq!(calendar.dates(), &[date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 9)]);
    }
}
