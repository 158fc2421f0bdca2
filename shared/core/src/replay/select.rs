//! Choosing a schedule out of sample (walk-forward selection).
//!
//! A line's "best adaptive policy" is the one with the highest mean over the whole
//! period: a pick made with hindsight. A selector instead decides at each decision day
//! `d` (the finest cadence's retrain days) which schedule to follow, by each schedule's
//! mean over the matured days of a trailing lookback, `d − h − L ..= d − h − 1` (the
//! label of day `t` matures at `t + h + 1`, as for the performance trigger), and follows
//! it until the next decision. Its series uses nothing known only after the day it
//! stands for, and needs no training: every schedule's series is already replayed.
//!
//! A decision needs the whole lookback matured (`d ≥ h + L`), as the performance trigger
//! does; before the first such decision the selector follows the pool's first schedule
//! (spec order: the first fixed cadence, or the first policy of the grid). A tie goes to
//! the schedule listed first (means from running sums, equal up to their rounding, 10⁻⁹
//! relative, count as equal); a day on which a schedule has no value does not count towards its
//! mean, so schedules missing different days are compared over different days.

use serde::{Deserialize, Serialize};

/// One decision: from offset `day`, follow `schedule` (an index into the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub day: usize,
    pub schedule: usize,
}

/// The selector's decisions (only those that change the schedule followed) and the
/// series it earns.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub choices: Vec<Choice>,
    pub series: Vec<f64>,
}

/// Walk-forward selection over `pool` (series by day offset, all of one length), deciding
/// at `decisions` (ascending offsets) with horizon `horizon` and lookback `lookback`.
pub fn select(pool: &[&[f64]], decisions: &[usize], horizon: usize, lookback: usize) -> Selection {
    Selector::new(pool, decisions).select(horizon, lookback)
}

/// The running sums of a pool and its decision days, built once for selections with
/// several lookbacks.
#[derive(Debug)]
pub struct Selector<'a> {
    pool: &'a [&'a [f64]],
    days: usize,
    decisions: Vec<usize>,
    /// Per schedule: the running sum of its finite values and their running count.
    prefixes: Vec<(Vec<f64>, Vec<usize>)>,
}

impl<'a> Selector<'a> {
    pub fn new(pool: &'a [&'a [f64]], decisions: &[usize]) -> Self {
        let days = pool.iter().map(|s| s.len()).min().unwrap_or(0);
        let mut decisions: Vec<usize> = decisions.iter().copied().filter(|d| *d < days).collect();
        decisions.sort_unstable();
        decisions.dedup();
        let prefixes = pool
            .iter()
            .map(|series| {
                let (mut sums, mut counts) = (Vec::with_capacity(days + 1), Vec::with_capacity(days + 1));
                let (mut sum, mut count) = (0.0, 0);
                sums.push(sum);
                counts.push(count);
                for value in &series[..days] {
                    if value.is_finite() {
                        sum += *value;
                        count += 1;
                    }
                    sums.push(sum);
                    counts.push(count);
                }
                (sums, counts)
            })
            .collect();
        Selector { pool, days, decisions, prefixes }
    }

    /// [`select`] with `horizon` and `lookback`.
    pub fn select(&self, horizon: usize, lookback: usize) -> Selection {
        if self.pool.is_empty() {
            return Selection { choices: Vec::new(), series: Vec::new() };
        }
        let mut current = 0;
        let mut choices = vec![Choice { day: 0, schedule: 0 }];
        for day in self.decisions.iter().copied() {
            let Some(start) = day.checked_sub(horizon + lookback) else { continue };
            let end = start + lookback;
            let mut best: Option<(usize, f64)> = None;
            for (index, (sums, counts)) in self.prefixes.iter().enumerate() {
                let count = counts[end] - counts[start];
                if count == 0 {
                    continue;
                }
                let mean = (sums[end] - sums[start]) / count as f64;
                let tolerance = |m: f64| 1e-9 * m.abs().max(sums[end].abs()).max(1e-12);
                if best.is_none_or(|(_, best_mean)| mean > best_mean + tolerance(best_mean)) {
                    best = Some((index, mean));
                }
            }
            if let Some((schedule, _)) = best
                && schedule != current
            {
                current = schedule;
                choices.push(Choice { day, schedule });
            }
        }
        let mut series = Vec::with_capacity(self.days);
        for (index, choice) in choices.iter().enumerate() {
            let until = choices.get(index + 1).map_or(self.days, |next| next.day);
            series.extend_from_slice(&self.pool[choice.schedule][choice.day..until]);
        }
        Selection { choices, series }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_selector_follows_the_schedule_best_on_matured_days_only() {
        // Horizon 2, lookback 3. Schedule 1 is better on days 0..6, schedule 2 on days
        // 6..12 and worse before; schedule 0 is the default.
        let a = [0.0; 12];
        let b = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0];
        let c = [-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0];
        let selection = select(&[&a, &b, &c], &[0, 2, 4, 6, 8, 10], 2, 3);
        // Days 0, 2 and 4: the lookback has not matured whole (a decision needs
        // d ≥ h + L = 5): the default. Day 6 reads days 1..4: b. Day 8: days 3..6: b
        // (still). Day 10: days 5..8: b has 1 − 1 − 1, c −1 + 2 + 2: c.
        assert_eq!(
            selection.choices,
            vec![Choice { day: 0, schedule: 0 }, Choice { day: 6, schedule: 1 }, Choice { day: 10, schedule: 2 }]
        );
        let expected: Vec<f64> = [&a[..6], &b[6..10], &c[10..]].concat();
        assert_eq!(selection.series, expected);
    }

    #[test]
    fn an_empty_pool_selects_nothing_and_decisions_in_any_order_are_taken_in_order() {
        assert_eq!(select(&[], &[3, 1], 0, 1), Selection { choices: Vec::new(), series: Vec::new() });
        let a = [0.0, 0.0, 0.0, 0.0];
        let b = [1.0, 1.0, 1.0, 1.0];
        assert_eq!(select(&[&a, &b], &[3, 1, 3, 9], 0, 1), select(&[&a, &b], &[1, 3], 0, 1));
    }

    #[test]
    fn missing_values_do_not_count_and_ties_go_to_the_first() {
        let a = [1.0, 1.0, 1.0, 1.0];
        let b = [f64::NAN, 1.0, 1.0, 1.0];
        let c = [f64::NAN, f64::NAN, 5.0, 5.0];
        // Day 2, horizon 0, lookback 2: days 0 and 1. a: 1, b: 1 (one day), c: none.
        let selection = select(&[&b, &a, &c], &[2], 0, 2);
        assert_eq!(selection.choices, vec![Choice { day: 0, schedule: 0 }]);
        assert_eq!(selection.series.len(), 4);
    }

    proptest! {
        /// Changing any value on or after day `cut` never changes a choice made on or
        /// before it, nor the selected series before it, nor the schedule followed on
        /// day `cut + h`.
        #[test]
        fn no_choice_looks_ahead(
            values in proptest::collection::vec(proptest::collection::vec(-1.0f64..1.0, 40), 2..5),
            noise in proptest::collection::vec(-1.0f64..1.0, 200),
            horizon in 0usize..6,
            lookback in 1usize..12,
            cut in 0usize..40,
            step in 1usize..6,
        ) {
            let decisions: Vec<usize> = (0..40).step_by(step).collect();
            let pool: Vec<&[f64]> = values.iter().map(Vec::as_slice).collect();
            let before = select(&pool, &decisions, horizon, lookback);
            let changed: Vec<Vec<f64>> = values
                .iter()
                .enumerate()
                .map(|(s, series)| {
                    series.iter().enumerate().map(|(t, v)| if t >= cut { noise[(s * 40 + t) % 200] } else { *v }).collect()
                })
                .collect();
            let changed_pool: Vec<&[f64]> = changed.iter().map(Vec::as_slice).collect();
            let after = select(&changed_pool, &decisions, horizon, lookback);
            let until = |selection: &Selection, day: usize| -> Vec<Choice> {
                selection.choices.iter().copied().filter(|c| c.day <= day).collect()
            };
            prop_assert_eq!(until(&before, cut), until(&after, cut));
            prop_assert_eq!(&before.series[..cut], &after.series[..cut]);
            // A decision at `d` reads days before `d − h`: the schedule followed on day
            // `cut + h` is decided on values before `cut` only.
            let followed = |selection: &Selection, day: usize| {
                selection.choices.iter().rev().find(|c| c.day <= day).map(|c| c.schedule)
            };
            prop_assert_eq!(followed(&before, cut + horizon), followed(&after, cut + horizon));
        }
    }
}
