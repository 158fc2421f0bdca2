//! Ranking one day with a model: what `wf predict` serves.

use candle_core::Device;
use wf_worker::model::Ranker;

/// A day's ranking: the codes of the day's stocks with a score, by descending score
/// (ties by code), and their scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub codes: Vec<String>,
    pub scores: Vec<f64>,
}

/// Ranks `day` of `panel` with `model` at output `column`: what `wf predict` serves.
pub fn rank_day(
    model: &dyn Ranker,
    panel: &wf_shared::panel::Panel,
    day: usize,
    column: usize,
    device: &Device,
) -> candle_core::Result<Ranking> {
    let scores = wf_worker::train::score_day(model, panel, day, column, device)?;
    let codes: Vec<&str> =
        panel.stock()[panel.rows_of_day(day)].iter().map(|s| panel.codes()[*s as usize].as_str()).collect();
    let mut order: Vec<usize> = (0..scores.len()).filter(|i| scores[*i].is_finite()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(codes[*a].cmp(codes[*b])));
    Ok(Ranking {
        codes: order.iter().map(|i| codes[*i].to_string()).collect(),
        scores: order.iter().map(|i| scores[*i]).collect(),
    })
}
