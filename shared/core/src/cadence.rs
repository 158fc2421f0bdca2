//! Retraining cadences and the retrain dates they select on a trading calendar.
//!
//! - `Nd` (`5d`, `10d`, `21d`, `63d`, any N ≥ 1): every N trading days from a common anchor,
//!   the first trading day on or after the evaluation start. Multiples share dates:
//!   `63d ⊂ 21d`, `10d ⊂ 5d`.
//! - `weekly`, `biweekly`, `monthly`, `quarterly`: the first trading day of each period on
//!   the full calendar. Biweekly takes every second Monday-based week counted from
//!   1970-01-05, so it does not depend on the start; `quarterly ⊂ monthly`,
//!   `biweekly ⊂ weekly`.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::calendar::TradingCalendar;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Cadence {
    TradingDays(u32),
    Weekly,
    Biweekly,
    Monthly,
    Quarterly,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cadence {0:?} (expected Nd with N >= 1, e.g. 5d or 21d, or weekly, biweekly, monthly, quarterly)")]
pub struct ParseCadenceError(String);

impl FromStr for Cadence {
    type Err = ParseCadenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseCadenceError(text.to_string());
        match text {
            "weekly" => Ok(Self::Weekly),
            "biweekly" => Ok(Self::Biweekly),
            "monthly" => Ok(Self::Monthly),
            "quarterly" => Ok(Self::Quarterly),
            _ => {
                let days = text.strip_suffix('d').ok_or_else(error)?;
                let days: u32 = days.parse().map_err(|_| error())?;
                if days == 0 || days.to_string() != text[..text.len() - 1] {
                    return Err(error());
                }
                Ok(Self::TradingDays(days))
            }
        }
    }
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TradingDays(days) => write!(f, "{days}d"),
            Self::Weekly => f.write_str("weekly"),
            Self::Biweekly => f.write_str("biweekly"),
            Self::Monthly => f.write_str("monthly"),
            Self::Quarterly => f.write_str("quarterly"),
        }
    }
}

impl TryFrom<String> for Cadence {
    type Error = ParseCadenceError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Cadence> for String {
    fn from(cadence: Cadence) -> Self {
        cadence.to_string()
    }
}

/// Monday 1970-01-05: week 0 of the biweekly parity.
fn week_index(date: NaiveDate) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 5).unwrap_or_default();
    (date - epoch).num_days().div_euclid(7)
}

impl Cadence {
    /// Period id of a date for calendar-aligned cadences (`None` for `Nd`).
    fn period(self, date: NaiveDate) -> Option<i64> {
        match self {
            Self::TradingDays(_) => None,
            Self::Weekly => Some(week_index(date)),
            Self::Biweekly => Some(week_index(date).div_euclid(2)),
            Self::Monthly => Some(i64::from(date.year()) * 12 + i64::from(date.month0())),
            Self::Quarterly => Some(i64::from(date.year()) * 4 + i64::from(date.month0() / 3)),
        }
    }

    /// Trading-day indices of the retrain dates in `first ..= last`.
    pub fn retrain_days(self, calendar: &TradingCalendar, first: usize, last: usize) -> Vec<usize> {
        let dates = calendar.dates();
        let last = last.min(dates.len().saturating_sub(1));
        if dates.is_empty() || first > last {
            return Vec::new();
        }
        match self {
            Self::TradingDays(step) => (first..=last).step_by(step as usize).collect(),
            Self::Biweekly => (first..=last)
                .filter(|day| {
                    let week = week_index(dates[*day]);
                    week.rem_euclid(2) == 0 && (*day == 0 || week_index(dates[day - 1]) != week)
                })
                .collect(),
            _ => (first..=last)
                .filter(|day| *day == 0 || self.period(dates[*day]) != self.period(dates[day - 1]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn parses_and_prints_every_form() {
        for text in ["5d", "21d", "63d", "weekly", "biweekly", "monthly", "quarterly"] {
            let cadence: Cadence = text.parse().expect("valid cadence");
            assert_eq!(cadence.to_string(), text);
        }
        for bad in ["0d", "d", "3w", "05d", "-5d", "Weekly", ""] {
            assert!(bad.parse::<Cadence>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn calendar_aligned_dates_are_first_trading_days_of_their_period() {
        // Weekdays of 2024 with 2024-01-01 (a holiday) missing.
        let calendar = TradingCalendar::business_days(date(2024, 1, 2), 130);
        let dates = |c: Cadence| -> Vec<NaiveDate> {
            c.retrain_days(&calendar, 0, calendar.len() - 1).iter().filter_map(|d| calendar.date(*d)).collect()
        };
        let monthly = dates(Cadence::Monthly);
        assert_eq!(&monthly[..3], &[date(2024, 1, 2), date(2024, 2, 1), date(2024, 3, 1)]);
        let quarterly = dates(Cadence::Quarterly);
        assert_eq!(quarterly, vec![date(2024, 1, 2), date(2024, 4, 1), date(2024, 7, 1)]);
        let weekly = dates(Cadence::Weekly);
        assert_eq!(&weekly[..3], &[date(2024, 1, 2), date(2024, 1, 8), date(2024, 1, 15)]);
        assert!(weekly.iter().skip(1).all(|d| d.weekday() == chrono::Weekday::Mon));
        let biweekly = dates(Cadence::Biweekly);
        assert!(biweekly.iter().all(|d| weekly.contains(d)));
        assert!((biweekly.len() as i64 - weekly.len() as i64 / 2).abs() <= 1);
    }

    #[test]
    fn trading_day_cadences_count_from_the_anchor() {
        let calendar = TradingCalendar::business_days(date(2024, 1, 2), 100);
        assert_eq!(Cadence::TradingDays(21).retrain_days(&calendar, 10, 99), vec![10, 31, 52, 73, 94]);
        assert!(Cadence::TradingDays(5).retrain_days(&calendar, 50, 40).is_empty());
    }
}
