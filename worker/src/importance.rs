//! Permutation importance on a job's validation days: the last days of its training
//! window that early stopping held out, never a test day; every [`DAY_STRIDE`]-th of
//! them, counting back from the last.
//!
//! The measured days' inputs go through the trained model side by side, once as they
//! are and once per feature with that feature's values shuffled across each day's stocks
//! (a seeded permutation per feature and day). A model that reads a history of days
//! (`patchtst`) gets each stock's whole history of the feature from the same other stock:
//! one permutation of the day's stocks applied to every day of the lookback, so the
//! feature's own time series stays intact and only its link to the stock is broken. Each
//! pass gives the mean validation loss (the training loss of each day, as early stopping
//! measures it) and the mean RankIC of the primary horizon's scores against that
//! horizon's returns. A feature's importance is the rise in loss and the fall in RankIC.
//!
//! A model that starts with a product of its input (`linear`, `mlp`:
//! [`Ranker::input_weight`]) computes that product once; a shuffled feature changes it
//! by the feature's weight column times the change of its row (a rank-`lookback`
//! update), and the model goes on from there ([`Ranker::forward_from_product`]). The
//! same arithmetic up to float rounding, without the first layer's product per feature.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use wf_shared::importance::Importance;
use wf_shared::metric::{average_ranks, pearson};

use crate::WorkerError;
use crate::model::fused::matmul;
use crate::model::{Mode, Ranker};
use crate::train::{DayBatch, FeatureCube, TrainRequest, complete_rows, day_batch, day_loss, split_window};

/// Importance reads every `DAY_STRIDE`-th validation day, counting back from the last:
/// half the passes' arithmetic. Neighbouring days carry nearly the same information (the
/// features move slowly, and a 5-day label shares 4 of its days with the next day's), so
/// each second day adds little to the estimate (`cargo bench -p wf-coordinator --bench
/// diagnostics` prints the agreement with every day measured).
pub const DAY_STRIDE: usize = 2;

/// How [`measure`] evaluates: `stride` as [`DAY_STRIDE`]; `product` carries a shuffled
/// feature through [`Ranker::input_weight`] where the model has one (else every pass
/// runs the whole model).
#[derive(Debug, Clone, Copy)]
pub struct Method {
    pub stride: usize,
    pub product: bool,
}

impl Default for Method {
    fn default() -> Self {
        Self { stride: DAY_STRIDE, product: true }
    }
}

/// The importance of each feature of `request.panel` to `model`, trained as `request`
/// says, on the request window's validation days; not measured (empty) for a window
/// without validation days.
pub fn permutation_importance(
    model: &dyn Ranker,
    request: &TrainRequest<'_>,
    primary: u32,
    device: &Device,
) -> Result<Importance, WorkerError> {
    measure(model, request, primary, device, Method::default())
}

/// [`permutation_importance`] measured as `method` says.
pub fn measure(
    model: &dyn Ranker,
    request: &TrainRequest<'_>,
    primary: u32,
    device: &Device,
    method: Method,
) -> Result<Importance, WorkerError> {
    let TrainRequest { panel, window, horizons, horizon_weights, params, seed, .. } = request.clone();
    if window.is_empty() {
        return Ok(Importance::default());
    }
    let lookback = model.lookback();
    let longest = horizons.iter().copied().max().unwrap_or(1) as usize;
    let (_, validation_days) = split_window(window, params.validation_days as usize, longest);
    let mut days: Vec<usize> = validation_days.rev().step_by(method.stride.max(1)).collect();
    days.reverse();
    let batches: Vec<DayBatch> = days
        .into_iter()
        .map(|day| day_batch(panel, day, horizons, params.target, device))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let (Some(first), Some(last)) = (batches.first(), batches.last()) else { return Ok(Importance::default()) };
    let column = horizons.iter().position(|h| *h == primary).unwrap_or(0);
    let returns =
        panel.target(primary).ok_or_else(|| WorkerError::NoData(format!("no target for horizon {primary}")))?;
    // Each day's returns at the primary horizon on the rows its batch holds, ranked once:
    // only the scores change from pass to pass.
    let targets: Vec<&[f64]> = horizons.iter().filter_map(|h| panel.target(*h)).collect();
    let return_ranks: Vec<Vec<f64>> = batches
        .iter()
        .map(|batch| {
            let rows = complete_rows(panel, batch.day, &targets);
            average_ranks(&rows.iter().map(|row| returns[*row]).collect::<Vec<f64>>())
        })
        .collect();

    // Every measured day's inputs side by side: [lookback · F, Σ stocks], oldest day first.
    let cube = FeatureCube::build(panel, first.day.saturating_sub(lookback - 1), last.day, device)?;
    let inputs =
        batches.iter().map(|b| cube.input(b.day, &b.stocks, lookback)).collect::<candle_core::Result<Vec<_>>>()?;
    let widths: Vec<usize> = inputs.iter().map(|i| i.dim(1)).collect::<candle_core::Result<_>>()?;
    let features = panel.features().len();
    let total_width: usize = widths.iter().sum();
    let input = Tensor::cat(&inputs, 1)?;
    let mut values: Vec<f32> = input.flatten_all()?.to_vec1()?;
    let total: f64 = horizon_weights.iter().sum();
    let weights: Vec<f32> = horizon_weights.iter().map(|w| (w / total) as f32).collect();
    let horizon_weights = Tensor::from_vec(weights, horizons.len(), device)?;
    // The input's product, computed once, where the model starts with one.
    let product = match model.input_weight().filter(|_| method.product) {
        Some(weight) => Some((matmul(&weight, &input)?, weight)),
        None => None,
    };

    // The mean loss and RankIC of a pass's scores.
    let evaluate = |scores: Tensor| -> Result<(f64, f64), WorkerError> {
        let (mut loss, mut rank_ic, mut ranked) = (0.0, 0.0, 0usize);
        let mut offset = 0;
        for ((batch, width), return_ranks) in batches.iter().zip(&widths).zip(&return_ranks) {
            let day = scores.narrow(1, offset, *width)?;
            loss += f64::from(day_loss(&day, batch, params, &horizon_weights)?.to_scalar::<f32>()?);
            let primary: Vec<f64> = day.get(column)?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
            if let Some(ic) = pearson(&average_ranks(&primary), return_ranks) {
                rank_ic += ic;
                ranked += 1;
            }
            offset += width;
        }
        let rank_ic = if ranked == 0 { f64::NAN } else { rank_ic / ranked as f64 };
        Ok((loss / batches.len() as f64, rank_ic))
    };

    let (base_loss, base_rank_ic) = evaluate(match &product {
        Some((product, _)) => model.forward_from_product(product)?,
        None => model.forward(&input, Mode::Eval)?,
    })?;
    let mut importance = Importance {
        days: batches.len() as u32,
        base_loss,
        base_rank_ic,
        loss: Vec::with_capacity(features),
        rank_ic: Vec::with_capacity(features),
    };
    // Each day's permutation of its stocks, drawn by shuffling positions: the same draws
    // as shuffling the values themselves (a shuffle's swaps depend only on the length).
    let mut permutation: Vec<usize> = Vec::with_capacity(widths.iter().copied().max().unwrap_or(0));
    let mut kept = vec![0f32; lookback * total_width];
    let mut change = vec![0f32; lookback * total_width];
    for feature in 0..features {
        // The feature's row on each day of the lookback.
        let rows: Vec<std::ops::Range<usize>> = (0..lookback)
            .map(|lag| (lag * features + feature) * total_width..(lag * features + feature + 1) * total_width)
            .collect();
        for (lag, row) in rows.iter().enumerate() {
            kept[lag * total_width..(lag + 1) * total_width].copy_from_slice(&values[row.clone()]);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x1e57_0000 + feature as u64));
        let mut offset = 0;
        for width in &widths {
            permutation.clear();
            permutation.extend(0..*width);
            permutation.shuffle(&mut rng);
            for (lag, row) in rows.iter().enumerate() {
                let source = &kept[lag * total_width + offset..lag * total_width + offset + width];
                for (out, from) in values[row.start + offset..row.start + offset + width].iter_mut().zip(&permutation) {
                    *out = source[*from];
                }
            }
            offset += width;
        }
        let scores = match &product {
            Some((product, weight)) => {
                // W · shuffled = W · as is + W[:, rows] · (shuffled − as is).
                for (lag, row) in rows.iter().enumerate() {
                    let span = lag * total_width..(lag + 1) * total_width;
                    for ((out, new), old) in change[span.clone()].iter_mut().zip(&values[row.clone()]).zip(&kept[span])
                    {
                        *out = new - old;
                    }
                }
                let columns: Vec<u32> = (0..lookback).map(|lag| (lag * features + feature) as u32).collect();
                let columns = weight.index_select(&Tensor::new(columns.as_slice(), device)?, 1)?;
                let change = Tensor::from_slice(&change, (lookback, total_width), device)?;
                model.forward_from_product(&(product + matmul(&columns, &change)?)?)?
            }
            None => {
                model.forward(&Tensor::from_slice(&values, (lookback * features, total_width), device)?, Mode::Eval)?
            }
        };
        let (loss, rank_ic) = evaluate(scores)?;
        for (lag, row) in rows.iter().enumerate() {
            values[row.clone()].copy_from_slice(&kept[lag * total_width..(lag + 1) * total_width]);
        }
        importance.loss.push((loss - base_loss) as f32);
        importance.rank_ic.push((base_rank_ic - rank_ic) as f32);
    }
    Ok(importance)
}
