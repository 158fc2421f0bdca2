#!/usr/bin/env python3
"""A walkforward external trainer: LightGBM gradient-boosted trees.

The choice, stated: **regression on each day's cross-sectional rank** of the primary
horizon's forward return (scaled to [0, 1]), not `lambdarank`. Ranks make every day weigh
the same whatever its volatility, as the built-in `gbdt` does with its transformed target;
and regression scores compare across days, which `lambdarank`'s per-query scores need not.
The validation rows (after the purge gap) drive early stopping.

Options (the spec's `options`, all optional):
    num_leaves (31), learning_rate (0.05), n_estimators (500), min_child_samples (100),
    feature_fraction (0.8), bagging_fraction (0.8), lambda_l2 (1.0),
    early_stopping_rounds (50), num_threads (1).

Register it on the workers with the Python that has lightgbm, polars and walkforward:

    wf-worker --trainer lightgbm=python/examples/lightgbm_ranker.py --persistent

(its `#!` line, or a wrapper script, must name that Python).
"""

import json
import sys

import lightgbm as lgb
import numpy as np
import polars as pl

import walkforward.trainer as wt

VERSION = f"lightgbm-ranker 1 (lightgbm {lgb.__version__})"


def day_rank(target: str) -> pl.Expr:
    """Each day's rank of `target`, scaled to [0, 1] (ties averaged)."""
    rank = pl.col(target).rank("average").over("date")
    count = pl.col(target).count().over("date")
    return ((rank - 1) / (count - 1).clip(lower_bound=1)).alias("label")


def train_and_score(job: wt.Job) -> None:
    options = job.options
    target = f"fwd_ret_{job.primary_horizon}"
    train = job.train.filter(pl.col(target).is_not_null()).with_columns(day_rank(target))
    fit = train.filter(~pl.col("validation"))
    valid = train.filter(pl.col("validation"))

    def matrix(frame: pl.DataFrame) -> np.ndarray:
        return frame.select(job.features).cast(pl.Float32).to_numpy()

    params = {
        "objective": "regression",
        "num_leaves": int(options.get("num_leaves", 31)),
        "learning_rate": float(options.get("learning_rate", 0.05)),
        "min_child_samples": int(options.get("min_child_samples", 100)),
        "feature_fraction": float(options.get("feature_fraction", 0.8)),
        "bagging_fraction": float(options.get("bagging_fraction", 0.8)),
        "bagging_freq": 1,
        "lambda_l2": float(options.get("lambda_l2", 1.0)),
        "num_threads": int(options.get("num_threads", 1)),
        "seed": job.seed,
        "deterministic": True,
        "verbosity": -1,
    }
    fitted = lgb.Dataset(matrix(fit), label=fit["label"].to_numpy(), feature_name=job.features)
    sets, callbacks = [], []
    if valid.height > 0:
        sets = [lgb.Dataset(matrix(valid), label=valid["label"].to_numpy(), reference=fitted)]
        callbacks = [lgb.early_stopping(int(options.get("early_stopping_rounds", 50)), verbose=False)]
    booster = lgb.train(
        params, fitted, num_boost_round=int(options.get("n_estimators", 500)), valid_sets=sets, callbacks=callbacks
    )
    score = job.score
    predictions = booster.predict(matrix(score), num_iteration=booster.best_iteration or None)
    job.write_scores(score.select("date", "code").with_columns(pl.Series("score", predictions, dtype=pl.Float64)))
    booster.save_model(str(job.model_dir / "model.txt"))
    (job.model_dir / "training.json").write_text(
        json.dumps({"best_iteration": booster.best_iteration, "fit_rows": fit.height, "validation_rows": valid.height})
    )
    print(f"{job.key[:12]}: {booster.best_iteration or booster.current_iteration()} trees", file=sys.stderr)


if __name__ == "__main__":
    wt.main(train_and_score, version=VERSION)
