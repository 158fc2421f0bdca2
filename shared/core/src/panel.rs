//! The panel: one row per (trading day, stock), sorted by day then stock code, with
//! cross-sectionally normalised features and forward-return targets as columns.
//!
//! Nulls are `NaN` in memory and nulls on disk. The panel is what models train on and
//! what dataset identity is computed over.

use std::ops::Range;
use std::sync::OnceLock;

use crate::calendar::TradingCalendar;
use crate::metric::average_ranks;

/// Name of the target column for horizon `h` (trading days).
pub fn target_name(horizon: u32) -> String {
    format!("fwd_ret_{horizon}")
}

/// The parts of a panel, before validation.
#[derive(Debug, Clone)]
pub struct PanelParts {
    pub calendar: TradingCalendar,
    pub codes: Vec<String>,
    /// Trading-day index of each row.
    pub day: Vec<u32>,
    /// Index into `codes` of each row.
    pub stock: Vec<u32>,
    pub feature_names: Vec<String>,
    pub features: Vec<Vec<f32>>,
    pub horizons: Vec<u32>,
    pub targets: Vec<Vec<f64>>,
    /// Mean traded value over the 20 trading days to each row's day (at least 15 of
    /// them), in the data's currency: the backtest's ADV (column [`ADV_COLUMN`]). Not a
    /// feature, never read by a model, and not part of the content hash; `None` for a
    /// panel written before it existed.
    pub adv: Option<Vec<f64>>,
}

/// The panel file's column of [`PanelParts::adv`].
pub const ADV_COLUMN: &str = "adv_20";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PanelError {
    #[error("column {column} has {found} rows, expected {expected}")]
    LengthMismatch { column: String, expected: usize, found: usize },
    #[error("rows are not sorted by (date, code) at row {row}")]
    NotSorted { row: usize },
    #[error("row {row} refers to a stock or day outside the panel")]
    OutOfRange { row: usize },
    #[error("{names} and {values} differ in length: {count_names} names, {count_values} columns")]
    NamesMismatch { names: &'static str, values: &'static str, count_names: usize, count_values: usize },
}

/// A validated panel.
#[derive(Debug, Clone)]
pub struct Panel {
    parts: PanelParts,
    day_offsets: Vec<usize>,
    /// Per feature, each row's rank within its day, computed on first use (see
    /// [`Panel::feature_day_ranks`]).
    feature_ranks: Vec<OnceLock<Vec<f32>>>,
}

impl Panel {
    pub fn new(parts: PanelParts) -> Result<Self, PanelError> {
        let rows = parts.day.len();
        let mismatch = |column: &str, found: usize| PanelError::LengthMismatch {
            column: column.to_string(),
            expected: rows,
            found,
        };
        if parts.stock.len() != rows {
            return Err(mismatch("code", parts.stock.len()));
        }
        if parts.feature_names.len() != parts.features.len() {
            return Err(PanelError::NamesMismatch {
                names: "feature names",
                values: "feature columns",
                count_names: parts.feature_names.len(),
                count_values: parts.features.len(),
            });
        }
        if parts.horizons.len() != parts.targets.len() {
            return Err(PanelError::NamesMismatch {
                names: "horizons",
                values: "target columns",
                count_names: parts.horizons.len(),
                count_values: parts.targets.len(),
            });
        }
        for (name, column) in parts.feature_names.iter().zip(&parts.features) {
            if column.len() != rows {
                return Err(mismatch(name, column.len()));
            }
        }
        for (horizon, column) in parts.horizons.iter().zip(&parts.targets) {
            if column.len() != rows {
                return Err(mismatch(&target_name(*horizon), column.len()));
            }
        }
        if let Some(adv) = &parts.adv
            && adv.len() != rows
        {
            return Err(mismatch(ADV_COLUMN, adv.len()));
        }
        for row in 0..rows {
            if parts.day[row] as usize >= parts.calendar.len() || parts.stock[row] as usize >= parts.codes.len() {
                return Err(PanelError::OutOfRange { row });
            }
            if row > 0 && (parts.day[row - 1], parts.stock[row - 1]) >= (parts.day[row], parts.stock[row]) {
                return Err(PanelError::NotSorted { row });
            }
        }
        let mut day_offsets = vec![0usize; parts.calendar.len() + 1];
        for day in &parts.day {
            day_offsets[*day as usize + 1] += 1;
        }
        for day in 0..parts.calendar.len() {
            day_offsets[day + 1] += day_offsets[day];
        }
        let feature_ranks = parts.features.iter().map(|_| OnceLock::new()).collect();
        Ok(Self { parts, day_offsets, feature_ranks })
    }

    pub fn rows(&self) -> usize {
        self.parts.day.len()
    }

    pub fn into_parts(self) -> PanelParts {
        self.parts
    }

    /// The panel of the rows of `days` only, on the same calendar and codes (so days and
    /// stock indices mean the same): what a job that reads only those days needs.
    pub fn days(&self, days: Range<usize>) -> Panel {
        let end = days.end.min(self.calendar().len());
        let start = days.start.min(end);
        let rows = self.day_offsets[start]..self.day_offsets[end];
        let parts = &self.parts;
        let parts = PanelParts {
            calendar: parts.calendar.clone(),
            codes: parts.codes.clone(),
            day: parts.day[rows.clone()].to_vec(),
            stock: parts.stock[rows.clone()].to_vec(),
            feature_names: parts.feature_names.clone(),
            features: parts.features.iter().map(|column| column[rows.clone()].to_vec()).collect(),
            horizons: parts.horizons.clone(),
            targets: parts.targets.iter().map(|column| column[rows.clone()].to_vec()).collect(),
            adv: parts.adv.as_ref().map(|column| column[rows.clone()].to_vec()),
        };
        let mut day_offsets = self.day_offsets.clone();
        for offset in &mut day_offsets {
            *offset = (*offset).clamp(rows.start, rows.end) - rows.start;
        }
        let feature_ranks = parts.features.iter().map(|_| OnceLock::new()).collect();
        Panel { parts, day_offsets, feature_ranks }
    }

    pub fn calendar(&self) -> &TradingCalendar {
        &self.parts.calendar
    }

    pub fn codes(&self) -> &[String] {
        &self.parts.codes
    }

    pub fn day(&self) -> &[u32] {
        &self.parts.day
    }

    pub fn stock(&self) -> &[u32] {
        &self.parts.stock
    }

    /// The rows of trading day `day` (empty past the end).
    pub fn rows_of_day(&self, day: usize) -> Range<usize> {
        if day >= self.parts.calendar.len() {
            return self.rows()..self.rows();
        }
        self.day_offsets[day]..self.day_offsets[day + 1]
    }

    /// Stocks with a row on each trading day.
    pub fn daily_universe(&self) -> Vec<usize> {
        self.day_offsets.windows(2).map(|pair| pair[1] - pair[0]).collect()
    }

    /// The panel with only the features `names`, in that order; `Err(name)` names the
    /// first that the panel lacks.
    pub fn select_features(mut self, names: &[String]) -> Result<Self, String> {
        let mut columns: Vec<Option<Vec<f32>>> =
            std::mem::take(&mut self.parts.features).into_iter().map(Some).collect();
        let mut features = Vec::with_capacity(names.len());
        for name in names {
            let index = self.parts.feature_names.iter().position(|n| n == name).ok_or_else(|| name.clone())?;
            features.push(columns[index].take().ok_or_else(|| name.clone())?);
        }
        self.parts.feature_names = names.to_vec();
        self.parts.features = features;
        self.feature_ranks = names.iter().map(|_| OnceLock::new()).collect();
        Ok(self)
    }

    pub fn feature_names(&self) -> &[String] {
        &self.parts.feature_names
    }

    pub fn features(&self) -> &[Vec<f32>] {
        &self.parts.features
    }

    pub fn feature(&self, name: &str) -> Option<&[f32]> {
        let index = self.parts.feature_names.iter().position(|n| n == name)?;
        Some(&self.parts.features[index])
    }

    /// Each row's average rank (1-based, ties sharing the mean of their places) among its
    /// day's finite values of feature `index`; NaN where the value is not finite. Computed
    /// on the first call and kept: every job on the panel reads the same ranks.
    pub fn feature_day_ranks(&self, index: usize) -> Option<&[f32]> {
        let column = self.parts.features.get(index)?;
        let ranks = self.feature_ranks.get(index)?.get_or_init(|| {
            let mut ranks = vec![f32::NAN; column.len()];
            for day in 0..self.parts.calendar.len() {
                let rows = self.rows_of_day(day);
                let finite: Vec<usize> = rows.filter(|row| column[*row].is_finite()).collect();
                let values: Vec<f64> = finite.iter().map(|row| f64::from(column[*row])).collect();
                for (row, rank) in finite.iter().zip(average_ranks(&values)) {
                    // Ranks are whole or half numbers far below 2^24: exact in f32.
                    ranks[*row] = rank as f32;
                }
            }
            ranks
        });
        Some(ranks)
    }

    pub fn horizons(&self) -> &[u32] {
        &self.parts.horizons
    }

    pub fn target(&self, horizon: u32) -> Option<&[f64]> {
        let index = self.parts.horizons.iter().position(|h| *h == horizon)?;
        Some(&self.parts.targets[index])
    }

    pub fn targets(&self) -> &[Vec<f64>] {
        &self.parts.targets
    }

    /// Each row's 20-day mean traded value (see [`PanelParts::adv`]).
    pub fn adv(&self) -> Option<&[f64]> {
        self.parts.adv.as_deref()
    }

    /// Row of (day, stock), if the panel has it.
    pub fn find_row(&self, day: usize, stock: usize) -> Option<usize> {
        let range = self.rows_of_day(day);
        let offset = self.parts.stock[range.clone()].binary_search(&(stock as u32)).ok()?;
        Some(range.start + offset)
    }
}
