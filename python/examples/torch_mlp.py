#!/usr/bin/env python3
"""A walkforward external trainer: a PyTorch MLP, on the CPU or the job's device.

It fits each day's z-scored forward return at every horizon jointly (one output per
horizon, as the built-in `mlp` does), with AdamW and early stopping on the validation
days, and writes one `score_{h}` column per horizon. Missing features are 0 (the day's
median: features are robust z-scores).

Options: hidden ([128, 64]), dropout (0.1), learning_rate (1e-3), weight_decay (1e-4),
epochs (30), patience (4), batch_days (8).

    wf-worker --trainer torch-mlp=python/examples/torch_mlp.py --persistent

Not run in CI: PyTorch is too large a wheel for it. Run it with a Python that has torch,
polars and walkforward.
"""

import numpy as np
import polars as pl
import torch

import walkforward.trainer as wt

VERSION = f"torch-mlp 1 (torch {torch.__version__})"


def day_zscores(frame: pl.DataFrame, targets: list[str]) -> pl.DataFrame:
    return frame.with_columns(
        [((pl.col(t) - pl.col(t).mean().over("date")) / pl.col(t).std().over("date")).fill_nan(None).alias(t) for t in targets]
    )


def tensors(frame: pl.DataFrame, features: list[str], targets: list[str], device: torch.device):
    x = torch.tensor(frame.select(features).fill_null(0.0).to_numpy(), dtype=torch.float32, device=device)
    y = torch.tensor(frame.select(targets).fill_null(np.nan).to_numpy(), dtype=torch.float32, device=device)
    return x, y


def train_and_score(job: wt.Job) -> None:
    options = job.options
    device = torch.device(job.device if job.device.startswith("cuda") and torch.cuda.is_available() else "cpu")
    torch.manual_seed(job.seed)
    train = day_zscores(job.train, job.targets)
    fit, valid = train.filter(~pl.col("validation")), train.filter(pl.col("validation"))
    x, y = tensors(fit, job.features, job.targets, device)
    vx, vy = tensors(valid, job.features, job.targets, device)
    layers, width = [], len(job.features)
    for hidden in options.get("hidden", [128, 64]):
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Dropout(options.get("dropout", 0.1))]
        width = hidden
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, len(job.targets))).to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=options.get("learning_rate", 1e-3), weight_decay=options.get("weight_decay", 1e-4)
    )

    def loss(inputs, labels):
        known = ~torch.isnan(labels)
        return ((model(inputs) - torch.nan_to_num(labels)) ** 2)[known].mean()

    days = fit["date"].to_numpy()
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    batch = int(options.get("batch_days", 8))
    best, best_state, waited = float("inf"), None, 0
    generator = np.random.default_rng(job.seed)
    for _ in range(int(options.get("epochs", 30))):
        model.train()
        order = generator.permutation(len(starts))
        for first in range(0, len(order), batch):
            rows = np.concatenate([np.arange(starts[d], ends[d]) for d in order[first : first + batch]])
            optimiser.zero_grad()
            loss(x[rows], y[rows]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            current = loss(vx, vy).item() if len(vx) else 0.0
        if current < best:
            best, best_state, waited = current, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            waited += 1
            if waited >= int(options.get("patience", 4)):
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    score = job.score
    sx = torch.tensor(score.select(job.features).fill_null(0.0).to_numpy(), dtype=torch.float32, device=device)
    with torch.no_grad():
        predicted = model(sx).cpu().numpy().astype(np.float64)
    columns = [pl.Series(f"score_{h}", predicted[:, i]) for i, h in enumerate(job.horizons)]
    job.write_scores(score.select("date", "code").with_columns(columns))
    torch.save(model.state_dict(), job.model_dir / "model.pt")


if __name__ == "__main__":
    wt.main(train_and_score, version=VERSION)
