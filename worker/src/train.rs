//! Training: one trading day (all its stocks) is one batch.
//!
//! The batches are built once per job: features `[F, stocks]` (a null feature reads 0, the
//! cross-sectional median of a robust z-score), targets z-scored per day and horizon
//! `[H, stocks]`, and their softmax over stocks, the ListNet target distribution. Stocks
//! are the last dimension (see [`crate::model::Ranker`]). Rows with any null target are
//! left out of training.
//!
//! Loss of a day, per horizon `j`: `listnet_weight · CE(softmax(y_j), softmax(s_j)) +
//! mse_weight · mean((s_j − y_j)²)`, averaged over horizons with the horizon weights.
//! Softmax and log-softmax are composed from differentiable primitives (Candle's fused
//! versions have no backward pass; see FINDINGS.md).
//!
//! AdamW, linear warm-up, global-norm gradient clipping. Early stopping watches the
//! last `validation_days` of the window; the training part ends `h` days before them, so
//! no training label overlaps the validation days. The best epoch's weights are kept.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{D, Device, Tensor};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wf_shared::Panel;
use wf_shared::target::TargetTransform;

use crate::WorkerError;
use wf_shared::model::TrainParams;

use crate::model::{Mode, Ranker};

/// One day's training tensors: which stocks (columns of the [`FeatureCube`]), their
/// z-scored targets `[H, stocks]` and the ListNet target distribution.
#[derive(Debug)]
pub struct DayBatch {
    pub day: usize,
    pub stocks: Tensor,
    /// `stocks` are every panel stock in id order.
    pub every_stock: bool,
    pub targets: Tensor,
    pub target_distribution: Tensor,
}

/// Every feature of every stock on a run of days, `[days, F, stocks]` (null → 0, a stock
/// without a row that day → 0), built once per job. A model's input for a day is a slice
/// of it: the last `lookback` days of that day's stocks, `[lookback · F, stocks]`.
#[derive(Debug)]
pub struct FeatureCube {
    values: Tensor,
    first_day: usize,
    days: usize,
}

impl FeatureCube {
    /// The cube of days `first ..= last`.
    pub fn build(panel: &Panel, first: usize, last: usize, device: &Device) -> candle_core::Result<Self> {
        let (stocks, features) = (panel.codes().len(), panel.features().len());
        let days = last + 1 - first;
        let mut values = vec![0f32; days * features * stocks];
        // Day by day and feature by feature: each run of writes is one day's slice of one
        // panel column, read in order, rather than `features` places `stocks` apart per row.
        for (day, cube_day) in (first..=last).zip(values.chunks_exact_mut(features * stocks)) {
            for (column, out) in panel.features().iter().zip(cube_day.chunks_exact_mut(stocks)) {
                scatter_day(panel, day, column, out);
            }
        }
        Ok(Self { values: Tensor::from_vec(values, (days, features, stocks), device)?, first_day: first, days })
    }

    /// Every stock's last `lookback` days up to `day`: `[lookback · F, all stocks]`,
    /// oldest day first. Days before the cube read as zeros.
    pub fn window(&self, day: usize, lookback: usize) -> candle_core::Result<Tensor> {
        let (_, features, all_stocks) = self.values.dims3()?;
        let end = day + 1 - self.first_day;
        debug_assert!(end <= self.days);
        let available = end.min(lookback);
        let window = self.values.narrow(0, end - available, available)?;
        let window = if available < lookback {
            let zeros =
                Tensor::zeros((lookback - available, features, all_stocks), self.values.dtype(), self.values.device())?;
            Tensor::cat(&[&zeros, &window], 0)?
        } else {
            window
        };
        window.reshape((lookback * features, all_stocks))
    }

    /// The input of `day` for `stocks` (u32 panel stock ids): `[lookback · F, stocks]`,
    /// oldest day first. Days before the cube read as zeros.
    pub fn input(&self, day: usize, stocks: &Tensor, lookback: usize) -> candle_core::Result<Tensor> {
        self.window(day, lookback)?.index_select(stocks, 1)
    }
}

/// Writes one feature `column` of `day` into `out`, one place per panel stock: a null
/// reads 0 (the cross-sectional median of a robust z-score); a stock without a row that
/// day keeps what `out` held (zeros).
fn scatter_day(panel: &Panel, day: usize, column: &[f32], out: &mut [f32]) {
    let rows = panel.rows_of_day(day);
    for (stock, value) in panel.stock()[rows.clone()].iter().zip(&column[rows]) {
        out[*stock as usize] = if value.is_finite() { *value } else { 0.0 };
    }
}

/// Whether `stocks` are all `count` panel stocks in id order (no gather needed).
fn every_stock(stocks: &[u32], count: usize) -> bool {
    stocks.len() == count && stocks.iter().enumerate().all(|(i, s)| *s as usize == i)
}

/// The rows of `day` with a finite value in every one of `targets`: the stocks a day
/// trains and validates on.
pub fn complete_rows(panel: &Panel, day: usize, targets: &[&[f64]]) -> Vec<usize> {
    panel.rows_of_day(day).filter(|row| targets.iter().all(|t| t[*row].is_finite())).collect()
}

/// The batch of `day` for `horizons`; `None` with fewer than 2 complete rows.
pub fn day_batch(
    panel: &Panel,
    day: usize,
    horizons: &[u32],
    transform: TargetTransform,
    device: &Device,
) -> Result<Option<DayBatch>, WorkerError> {
    let targets: Vec<&[f64]> = horizons
        .iter()
        .map(|h| {
            panel.target(*h).ok_or_else(|| WorkerError::NoData(format!("the panel has no target for horizon {h}")))
        })
        .collect::<Result<_, _>>()?;
    let rows = complete_rows(panel, day, &targets);
    if rows.len() < 2 {
        return Ok(None);
    }
    // Each horizon's returns transformed across the day's stocks (z-scores by default).
    let mut normalised = Vec::with_capacity(rows.len() * horizons.len());
    for target in &targets {
        let values: Vec<f64> = rows.iter().map(|r| target[*r]).collect();
        normalised.extend(transform.apply(&values).into_iter().map(|v| v as f32));
    }
    let targets = Tensor::from_vec(normalised, (horizons.len(), rows.len()), device)?;
    let stocks: Vec<u32> = rows.iter().map(|row| panel.stock()[*row]).collect();
    Ok(Some(DayBatch {
        day,
        every_stock: every_stock(&stocks, panel.codes().len()),
        stocks: Tensor::from_vec(stocks, rows.len(), device)?,
        target_distribution: softmax_over_stocks(&targets)?,
        targets,
    }))
}

impl DayBatch {
    /// The columns of the feature window this day trains on (`None`: all of them).
    pub fn columns(&self) -> Option<&Tensor> {
        (!self.every_stock).then_some(&self.stocks)
    }
}

fn softmax_over_stocks(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?;
    let exp = shifted.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

fn log_softmax_over_stocks(x: &Tensor) -> candle_core::Result<Tensor> {
    // The shift only keeps exp() finite; it cancels out, so no gradient flows through it.
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// The loss of one day's scores `[H, stocks]`.
pub fn day_loss(
    scores: &Tensor,
    batch: &DayBatch,
    params: &TrainParams,
    horizon_weights: &Tensor,
) -> candle_core::Result<Tensor> {
    if params.target == TargetTransform::Sign {
        // The logistic loss of above-median labels: mean(softplus(s) − y·s), with
        // softplus(s) = max(s, 0) + ln(1 + e^−|s|) (stable for any s).
        let softplus = (scores.relu()? + scores.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
        let logistic = softplus.sub(&scores.mul(&batch.targets)?)?.mean(D::Minus1)?;
        return logistic.mul(horizon_weights)?.sum_all();
    }
    let listnet = batch.target_distribution.mul(&log_softmax_over_stocks(scores)?)?.sum(D::Minus1)?.neg()?;
    let mse = scores.sub(&batch.targets)?.sqr()?.mean(D::Minus1)?;
    let per_horizon = (listnet.affine(params.listnet_weight, 0.0)? + mse.affine(params.mse_weight, 0.0)?)?;
    per_horizon.mul(horizon_weights)?.sum_all()
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    pub epochs: u32,
    pub best_epoch: u32,
    pub best_validation_loss: f64,
    /// Mean training and validation loss per epoch.
    pub history: Vec<(f64, f64)>,
    pub seconds: f64,
    pub device: String,
    pub training_days: usize,
    pub validation_days: usize,
    /// Where `seconds` went.
    #[serde(default)]
    pub time: TrainTime,
}

impl TrainStats {
    /// The statistics of a job whose model was not trained here (a factor, or an external
    /// trainer's, which ran `seconds` on `training_days` and `validation_days`).
    pub fn untrained(device: &Device, seconds: f64, training_days: usize, validation_days: usize) -> Self {
        Self {
            epochs: 0,
            best_epoch: 0,
            best_validation_loss: f64::NAN,
            history: Vec::new(),
            seconds,
            device: crate::device::device_name(device),
            training_days,
            validation_days,
            time: TrainTime::default(),
        }
    }
}

/// Where a training's time went, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainTime {
    /// Building the day batches, the feature cube and the gathered inputs.
    pub inputs: f64,
    /// The training steps: forward, loss, backward and optimizer.
    pub steps: f64,
    /// The validation passes after each epoch and keeping the best epoch's weights.
    pub validation: f64,
    /// Training steps taken.
    pub step_count: u64,
}

/// Splits a training window into (training days, validation days): the validation days
/// are the last ones, and the training part stops `horizon` days earlier (purge).
pub fn split_window(window: Range<usize>, validation_days: usize, horizon: usize) -> (Range<usize>, Range<usize>) {
    let validation = validation_days.min(window.len() / 4);
    if validation == 0 {
        return (window.clone(), window.end..window.end);
    }
    let validation_start = window.end - validation;
    (window.start..validation_start.saturating_sub(horizon).max(window.start), validation_start..window.end)
}

/// What to train on: the panel's days of `window`, the horizons and their loss weights,
/// the settings, and the seed of shuffles and dropout.
#[derive(Debug, Clone)]
pub struct TrainRequest<'a> {
    pub panel: &'a Panel,
    pub window: Range<usize>,
    pub horizons: &'a [u32],
    pub horizon_weights: &'a [f64],
    pub params: &'a TrainParams,
    pub seed: u64,
    /// Set when the worker shuts down: training stops between two steps with
    /// [`WorkerError::Stopped`].
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> TrainRequest<'a> {
    /// The request of a planned job: its training window, the sweep's horizons and seed,
    /// trained with `params` and the horizon weights `weights`
    /// (`params.horizon_weights_for(config)`); no stop flag.
    pub fn of_job(
        panel: &'a Panel,
        config: &'a wf_shared::spec::SweepConfig,
        job: &wf_shared::plan::Job,
        params: &'a TrainParams,
        weights: &'a [f64],
    ) -> Self {
        Self {
            panel,
            window: job.train_days.clone(),
            horizons: &config.horizons,
            horizon_weights: weights,
            params,
            seed: job.seed,
            stop: None,
        }
    }
}

/// Trains `model` as `request` says.
pub fn train(model: &dyn Ranker, request: &TrainRequest<'_>, device: &Device) -> Result<TrainStats, WorkerError> {
    let TrainRequest { panel, window, horizons, horizon_weights, params, seed, stop } = request.clone();
    let stopped = || stop.is_some_and(|stop| stop.load(Ordering::Relaxed));
    if window.is_empty() {
        return Err(WorkerError::NoData("the training window is empty".into()));
    }
    let started = Instant::now();
    let longest = horizons.iter().copied().max().unwrap_or(1) as usize;
    let (train_days, validation_days) = split_window(window.clone(), params.validation_days as usize, longest);
    let batches = |days: Range<usize>| -> Result<Vec<DayBatch>, WorkerError> {
        Ok(days
            .map(|d| day_batch(panel, d, horizons, params.target, device))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect())
    };
    let training = batches(train_days)?;
    let validation = batches(validation_days)?;
    let lookback = model.lookback();
    let cube = FeatureCube::build(panel, window.start.saturating_sub(lookback - 1), window.end - 1, device)?;
    if training.is_empty() {
        return Err(WorkerError::NoData("no training day has two stocks with complete targets".into()));
    }
    // A history-free model reads one day: gather each day's stocks once per job rather
    // than once per step (the gather was 6% of a jp-panel MLP job's CPU time). Models with a lookback
    // gather after their first layer (`Ranker::forward_columns`).
    let gather = |batches: &[DayBatch]| -> candle_core::Result<Vec<Option<Tensor>>> {
        batches.iter().map(|b| (lookback == 1).then(|| cube.input(b.day, &b.stocks, 1)).transpose()).collect()
    };
    let (training_inputs, validation_inputs) = (gather(&training)?, gather(&validation)?);
    let forward = |batch: &DayBatch, input: &Option<Tensor>, mode: Mode<'_>| match input {
        Some(input) => model.forward(input, mode),
        None => model.forward_columns(&cube.window(batch.day, lookback)?, batch.columns(), mode),
    };
    let total: f64 = horizon_weights.iter().sum();
    let weights: Vec<f32> = horizon_weights.iter().map(|w| (w / total) as f32).collect();
    let horizon_weights = Tensor::from_vec(weights, horizons.len(), device)?;

    let variables: Vec<_> = model.variables().into_iter().map(|(_, v)| v).collect();
    let adamw = ParamsAdamW { lr: params.learning_rate, weight_decay: params.weight_decay, ..ParamsAdamW::default() };
    let mut optimizer = Optimizer::new(variables.clone(), adamw, device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_7a1e);
    let mut order: Vec<usize> = (0..training.len()).collect();
    let mut history = Vec::new();
    let (mut best_loss, mut best_epoch, mut best_weights) = (f64::INFINITY, 0u32, None);
    let mut time = TrainTime { inputs: started.elapsed().as_secs_f64(), ..TrainTime::default() };
    for epoch in 0..params.epochs {
        let epoch_started = Instant::now();
        order.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        for index in &order {
            if stopped() {
                return Err(WorkerError::Stopped);
            }
            let batch = &training[*index];
            let warmup = ((time.step_count + 1) as f64 / f64::from(params.warmup_steps.max(1))).min(1.0);
            optimizer.set_learning_rate(params.learning_rate * warmup);
            let input = &training_inputs[*index];
            // The model's own backward where it has one (the same gradients, fewer passes
            // over memory: see `Tape`), autograd's otherwise.
            let tape = match input {
                Some(input) => model.forward_taped(input, Mode::Train(&mut rng))?,
                None => None,
            };
            let scores = match &tape {
                Some(tape) => tape.scores().clone(),
                None => forward(batch, input, Mode::Train(&mut rng))?,
            };
            let loss = day_loss(&scores, batch, params, &horizon_weights)?;
            epoch_loss += f64::from(loss.to_scalar::<f32>()?);
            let grads = loss.backward()?;
            let grads = match tape {
                Some(tape) => tape.backward(&grads)?,
                None => grads,
            };
            optimizer.step(grads, params.clip_norm)?;
            time.step_count += 1;
        }
        time.steps += epoch_started.elapsed().as_secs_f64();
        let validation_started = Instant::now();
        let validation_loss = if validation.is_empty() {
            epoch_loss / training.len() as f64
        } else {
            let mut sum = 0.0;
            for (batch, input) in validation.iter().zip(&validation_inputs) {
                let scores = forward(batch, input, Mode::Eval)?;
                sum += f64::from(day_loss(&scores, batch, params, &horizon_weights)?.to_scalar::<f32>()?);
            }
            sum / validation.len() as f64
        };
        history.push((epoch_loss / training.len() as f64, validation_loss));
        let improved = validation_loss < best_loss;
        if improved {
            best_loss = validation_loss;
            best_epoch = epoch;
            best_weights =
                Some(variables.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<Vec<_>>>()?);
        }
        time.validation += validation_started.elapsed().as_secs_f64();
        if !improved && epoch - best_epoch >= params.patience {
            break;
        }
    }
    if let Some(weights) = best_weights {
        for (variable, weight) in variables.iter().zip(weights) {
            variable.set(&weight)?;
        }
    }
    Ok(TrainStats {
        epochs: history.len() as u32,
        best_epoch,
        best_validation_loss: best_loss,
        history,
        seconds: started.elapsed().as_secs_f64(),
        device: crate::device::device_name(device),
        training_days: training.len(),
        validation_days: validation.len(),
        time,
    })
}

/// AdamW after global-norm gradient clipping. On the CPU one plain loop per variable does
/// the clipping scale, both moments and the decayed, bias-corrected update: Candle's
/// `AdamW` runs a dozen tensor ops per variable and the clipping three more, each with
/// its own allocation, which for small models cost as much as the forward pass. Same
/// formulas as Candle's `AdamW`; on other devices that one is used.
enum Optimizer {
    Fused(FusedAdamW),
    Candle { adamw: AdamW, variables: Vec<candle_core::Var> },
}

impl Optimizer {
    fn new(variables: Vec<candle_core::Var>, params: ParamsAdamW, device: &Device) -> candle_core::Result<Self> {
        Ok(if device.is_cpu() {
            Self::Fused(FusedAdamW::new(variables, params)?)
        } else {
            Self::Candle { adamw: AdamW::new(variables.clone(), params)?, variables }
        })
    }

    fn set_learning_rate(&mut self, lr: f64) {
        match self {
            Self::Fused(fused) => fused.params.lr = lr,
            Self::Candle { adamw, .. } => adamw.set_learning_rate(lr),
        }
    }

    fn step(&mut self, mut grads: candle_core::backprop::GradStore, clip: f64) -> candle_core::Result<()> {
        match self {
            Self::Fused(fused) => fused.step(&grads, clip),
            Self::Candle { adamw, variables } => {
                clip_gradients(&mut grads, variables, clip)?;
                adamw.step(&grads)
            }
        }
    }
}

/// The CPU optimizer: the moments live in plain vectors.
struct FusedAdamW {
    variables: Vec<candle_core::Var>,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
    params: ParamsAdamW,
    steps: i32,
}

impl FusedAdamW {
    fn new(variables: Vec<candle_core::Var>, params: ParamsAdamW) -> candle_core::Result<Self> {
        let zeros: Vec<Vec<f32>> = variables.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        Ok(Self { variables, first: zeros.clone(), second: zeros, params, steps: 0 })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore, clip: f64) -> candle_core::Result<()> {
        let gradients: Vec<Option<Vec<f32>>> = self
            .variables
            .iter()
            .map(|v| grads.get(v.as_tensor()).map(|g| g.flatten_all()?.to_vec1::<f32>()).transpose())
            .collect::<candle_core::Result<_>>()?;
        let norm = gradients.iter().flatten().flatten().map(|g| f64::from(*g).powi(2)).sum::<f64>().sqrt();
        let scale = if norm > clip && norm > 0.0 { (clip / norm) as f32 } else { 1.0 };
        self.steps += 1;
        let p = &self.params;
        let (beta1, beta2, eps) = (p.beta1 as f32, p.beta2 as f32, p.eps as f32);
        let correct1 = 1.0 / (1.0 - p.beta1.powi(self.steps)) as f32;
        let correct2 = 1.0 / (1.0 - p.beta2.powi(self.steps)) as f32;
        let (lr, decay) = (p.lr as f32, (1.0 - p.lr * p.weight_decay) as f32);
        for (index, gradient) in gradients.into_iter().enumerate() {
            let Some(gradient) = gradient else { continue };
            let variable = &self.variables[index];
            let mut theta = variable.flatten_all()?.to_vec1::<f32>()?;
            let (m, v) = (&mut self.first[index], &mut self.second[index]);
            for (((theta, g), m), v) in theta.iter_mut().zip(&gradient).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = g * scale;
                *m = *m * beta1 + g * (1.0 - beta1);
                *v = *v * beta2 + g * g * (1.0 - beta2);
                let step = (*m * correct1) / ((*v * correct2).sqrt() + eps);
                *theta = *theta * decay - step * lr;
            }
            variable.set(&Tensor::from_vec(theta, variable.shape(), variable.device())?)?;
        }
        Ok(())
    }
}

/// Scales every gradient so their global L2 norm is at most `limit`.
fn clip_gradients(
    grads: &mut candle_core::backprop::GradStore,
    variables: &[candle_core::Var],
    limit: f64,
) -> candle_core::Result<()> {
    let mut squared = 0.0f64;
    for variable in variables {
        if let Some(grad) = grads.get(variable.as_tensor()) {
            squared += f64::from(grad.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = squared.sqrt();
    if norm <= limit || norm == 0.0 {
        return Ok(());
    }
    let scale = limit / norm;
    for variable in variables {
        if let Some(grad) = grads.remove(variable.as_tensor()) {
            grads.insert(variable.as_tensor(), grad.affine(scale, 0.0)?);
        }
    }
    Ok(())
}

/// Scores of every day of `days` (each in panel row order) at horizon column `column`,
/// reading one feature cube for the whole range.
pub fn score_range(
    model: &dyn Ranker,
    panel: &Panel,
    days: Range<usize>,
    column: usize,
    device: &Device,
) -> candle_core::Result<Vec<Vec<f64>>> {
    Ok(score_range_columns(model, panel, days, device)?
        .into_iter()
        .map(|mut columns| if column < columns.len() { columns.swap_remove(column) } else { Vec::new() })
        .collect())
}

/// Scores of every day of `days` at every horizon column: `[day][column][row]`, rows in
/// panel order (a day without rows has no columns).
pub fn score_range_columns(
    model: &dyn Ranker,
    panel: &Panel,
    days: Range<usize>,
    device: &Device,
) -> candle_core::Result<Vec<Vec<Vec<f64>>>> {
    let (Some(first), Some(last)) = (days.clone().next(), days.clone().last()) else { return Ok(Vec::new()) };
    let lookback = model.lookback();
    if lookback == 1 {
        return score_batched(model, panel, days, device);
    }
    let cube = FeatureCube::build(panel, first.saturating_sub(lookback - 1), last, device)?;
    days.map(|day| {
        let rows = panel.rows_of_day(day);
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let stocks = &panel.stock()[rows.clone()];
        let columns = if every_stock(stocks, panel.codes().len()) {
            None
        } else {
            Some(Tensor::from_vec(stocks.to_vec(), rows.len(), device)?)
        };
        let scores = model.forward_columns(&cube.window(day, lookback)?, columns.as_ref(), Mode::Eval)?;
        Ok(scores.to_vec2::<f32>()?.into_iter().map(|column| column.into_iter().map(f64::from).collect()).collect())
    })
    .collect()
}

/// Days scored by one forward pass of a model without history.
const SCORE_BATCH_DAYS: usize = 32;

/// [`score_range_columns`] of a model that reads only the day itself: the days go through
/// the model `SCORE_BATCH_DAYS` at a time, all stocks of each side by side, `[F, days ·
/// stocks]` (one large product per layer instead of one small one per day; a stock
/// absent on a day is scored on zeros and dropped).
fn score_batched(
    model: &dyn Ranker,
    panel: &Panel,
    days: Range<usize>,
    device: &Device,
) -> candle_core::Result<Vec<Vec<Vec<f64>>>> {
    let (stocks, features) = (panel.codes().len(), panel.features().len());
    let all: Vec<usize> = days.collect();
    let mut scored = Vec::with_capacity(all.len());
    for batch in all.chunks(SCORE_BATCH_DAYS) {
        let width = batch.len() * stocks;
        let mut values = vec![0f32; features * width];
        // Feature by feature: each panel column is read in order and written in order.
        for (column, out) in panel.features().iter().zip(values.chunks_exact_mut(width)) {
            for (day, out) in batch.iter().zip(out.chunks_exact_mut(stocks)) {
                scatter_day(panel, *day, column, out);
            }
        }
        let input = Tensor::from_vec(values, (features, width), device)?;
        let scores = model.forward(&input, Mode::Eval)?.to_vec2::<f32>()?;
        for (slot, day) in batch.iter().enumerate() {
            let rows = panel.rows_of_day(*day);
            if rows.is_empty() {
                scored.push(Vec::new());
                continue;
            }
            let row_stocks = &panel.stock()[rows];
            scored.push(
                scores
                    .iter()
                    .map(|column| {
                        row_stocks.iter().map(|stock| f64::from(column[slot * stocks + *stock as usize])).collect()
                    })
                    .collect(),
            );
        }
    }
    Ok(scored)
}

/// Scores of `day`'s rows at horizon column `column`, in panel row order.
pub fn score_day(
    model: &dyn Ranker,
    panel: &Panel,
    day: usize,
    column: usize,
    device: &Device,
) -> candle_core::Result<Vec<f64>> {
    Ok(score_range(model, panel, day..day + 1, column, device)?.pop().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};
    use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};

    use super::{FusedAdamW, clip_gradients, split_window};

    /// Early stopping's validation days come after a purge gap of `horizon` days: the
    /// label of the last training day (its close `horizon` days later) is dated before
    /// the first validation day.
    #[test]
    fn validation_days_follow_a_horizon_long_gap() {
        for (start, len, validation, horizon) in [(0, 252, 21, 5), (100, 126, 21, 20), (7, 504, 30, 1), (0, 40, 21, 5)]
        {
            let window = start..start + len;
            let (train, held_out) = split_window(window.clone(), validation, horizon);
            assert_eq!(held_out.end, window.end);
            assert_eq!(held_out.len(), validation.min(len / 4));
            assert_eq!(train.start, window.start);
            assert_eq!(held_out.start - train.end, horizon, "{window:?}: the gap is not {horizon} days");
            assert!(train.end - 1 + horizon < held_out.start, "a training label reaches the validation days");
        }
    }

    /// The CPU optimizer follows Candle's AdamW after clipping, step for step, on a loss
    /// whose gradient norm starts above the clipping limit.
    #[test]
    fn the_fused_optimizer_matches_candles_adamw_with_clipping() {
        let device = Device::Cpu;
        let start: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let target = Tensor::from_vec((0..24).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<f32>>(), (4, 6), &device)
            .unwrap_or_else(|e| panic!("{e}"));
        let params = ParamsAdamW { lr: 0.05, weight_decay: 0.01, ..ParamsAdamW::default() };
        let var = |_: ()| Var::from_tensor(&Tensor::from_vec(start.clone(), (4, 6), &device)?);
        let (ours, theirs) = (var(()).unwrap_or_else(|e| panic!("{e}")), var(()).unwrap_or_else(|e| panic!("{e}")));
        let mut fused = FusedAdamW::new(vec![ours.clone()], params.clone()).unwrap_or_else(|e| panic!("{e}"));
        let mut adamw = AdamW::new(vec![theirs.clone()], params).unwrap_or_else(|e| panic!("{e}"));
        let loss = |v: &Var| v.as_tensor().sub(&target)?.sqr()?.sum_all()?.backward();
        for step in 0..20 {
            let grads = loss(&ours).unwrap_or_else(|e| panic!("{e}"));
            fused.step(&grads, 1.0).unwrap_or_else(|e| panic!("{e}"));
            let mut grads = loss(&theirs).unwrap_or_else(|e| panic!("{e}"));
            clip_gradients(&mut grads, std::slice::from_ref(&theirs), 1.0).unwrap_or_else(|e| panic!("{e}"));
            adamw.step(&grads).unwrap_or_else(|e| panic!("{e}"));
            let difference: f32 = (ours.as_tensor() - theirs.as_tensor())
                .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(difference < 1e-5, "step {step}: the optimizers differ by {difference}");
        }
        let moved: f32 = (ours.as_tensor()
            - Tensor::from_vec(start, (4, 6), &device).unwrap_or_else(|e| panic!("{e}")))
        .and_then(|d| d.abs()?.sum_all()?.to_scalar())
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(moved > 0.1, "the weights moved by {moved} only");
    }
}
