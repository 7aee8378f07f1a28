"""Regression scores (r2, rmse, mae) and the seeded K-fold cross-validation every stage shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("r2", "rmse", "mae")
# What summarize() returns, in this order (metrics.json and `dvc exp show` columns).
SUMMARY_KEYS = (*METRICS, *(f"{m}_std" for m in METRICS))


def scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "r2": float(r2_score(y_true, y_pred)),
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }


def summarize(folds: list[dict[str, float]]) -> dict[str, float]:
    """Mean and (population) standard deviation of each metric over folds: r2, rmse, mae (the
    means), then r2_std, rmse_std, mae_std. The same names in metrics.json and MLflow."""
    values = {m: np.array([f[m] for f in folds], dtype=float) for m in METRICS}
    means = {m: float(v.mean()) for m, v in values.items()}
    stds = {f"{m}_std": float(v.std()) for m, v in values.items()}
    return {**means, **stds}


def split_scores(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{"test": {"r2": …}, "cv": {"r2": …, "r2_std": …}} from metrics.json's dotted names."""
    out: dict[str, dict[str, float]] = {"test": {}, "cv": {}}
    for key, value in report.items():
        split, _, name = key.partition(".")
        if split in out and name:
            out[split][name] = value
    return out


def cross_validate(
    estimator: Any,
    X: pd.DataFrame,
    y: pd.Series,
    n_folds: int,
    seed: int,
    on_fold: Callable[[int, list[dict[str, float]]], None] | None = None,
) -> list[dict[str, float]]:
    """Fit a fresh clone per fold (shuffled KFold, seeded); return each fold's validation scores.
    `on_fold(k, scores_so_far)` may raise (e.g. Optuna pruning) to stop early."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    folds: list[dict[str, float]] = []
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (fit_idx, val_idx) in enumerate(splitter.split(X)):
        model = clone(estimator).fit(X.iloc[fit_idx], y.iloc[fit_idx])
        folds.append(scores(y.iloc[val_idx], model.predict(X.iloc[val_idx])))
        if on_fold is not None:
            on_fold(k, folds)
    return folds
