"""Regression scores (r2, rmse, mae) and the seeded K-fold cross-validation every stage shares."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("r2", "rmse", "mae")
# What summarize() returns, in this order (metrics.json and `dvc exp show` columns).
SUMMARY_KEYS = (*METRICS, *(f"{m}_std" for m in METRICS))


def scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """R², RMSE and MAE (scikit-learn's definitions), with exactly rounded sums (math.fsum):
    NumPy's sums take SIMD paths that depend on where an array starts in memory, and arrays
    that reach a worker process by pickle start elsewhere than the caller's; these sums give
    the same bits in any process."""
    y = np.asarray(y_true, dtype="float64").reshape(-1)
    p = np.asarray(y_pred, dtype="float64").reshape(-1)
    n = len(y)
    error = (y - p).tolist()
    ss_res = math.fsum(e * e for e in error)
    mean = math.fsum(y.tolist()) / n
    ss_tot = math.fsum((v - mean) ** 2 for v in y.tolist())
    r2 = 1.0 - ss_res / ss_tot if ss_tot else (1.0 if ss_res == 0 else 0.0)
    return {"r2": r2, "rmse": math.sqrt(ss_res / n), "mae": math.fsum(abs(e) for e in error) / n}


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


def fold_indices(n_rows: int, n_folds: int, seed: int, repeats: int = 1) -> list[tuple[Any, Any]]:
    """(fit rows, validation rows) of each fold: shuffled K-fold, seeded, `repeats` times
    reshuffled (scikit-learn's RepeatedKFold); fold k is fold k % n_folds of repeat
    k // n_folds, and the first repeat is KFold(shuffle=True, random_state=seed)'s split."""
    from sklearn.model_selection import KFold, RepeatedKFold

    if repeats == 1:
        splitter: Any = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter = RepeatedKFold(n_splits=n_folds, n_repeats=repeats, random_state=seed)
    return list(splitter.split(np.zeros((n_rows, 1))))


def capped(rows: Any, max_rows: int | None, seed: int, k: int | None = None) -> Any:
    """At most max_rows of `rows`, drawn without replacement by numpy's default_rng and kept in
    their original order; all of them when max_rows is None or not exceeded. The draw is seeded
    by (seed, k) for fold k of a cross-validation, by seed alone when k is None (the one sample
    a stage draws: permutation importance, the bootstrap's, the explainer's background)."""
    rows = np.asarray(rows)
    if max_rows is None or len(rows) <= max_rows:
        return rows
    rng = np.random.default_rng(seed if k is None else [seed, k])
    return np.sort(rng.choice(rows, max_rows, replace=False))


def fit_score(estimator: Any, X: pd.DataFrame, y: pd.Series, fit_rows: Any,
              val_rows: Any) -> dict[str, float]:
    """Fit a fresh clone on fit_rows; its scores on val_rows (one task of a cross-validation)."""
    from sklearn.base import clone

    model = clone(estimator).fit(X.iloc[fit_rows], y.iloc[fit_rows])
    return scores(y.iloc[val_rows], model.predict(X.iloc[val_rows]))


def cross_validate(
    estimator: Any,
    X: pd.DataFrame,
    y: pd.Series,
    n_folds: int,
    seed: int,
    on_fold: Callable[[int, list[dict[str, float]]], None] | None = None,
    n_jobs: int | None = 1,
    cluster: str | None = None,
    max_rows: int | None = None,
    repeats: int = 1,
) -> list[dict[str, float]]:
    """Fit a fresh clone per fold (shuffled K-fold, seeded, `repeats` times: fold_indices);
    return each fold's validation scores.
    Folds run in n_jobs processes (None: every core) or on the Dask cluster at `cluster`; the
    scores do not depend on where. `on_fold(k, scores_so_far)` is called in fold order and may
    raise (e.g. Optuna pruning) to stop early. `max_rows` caps the rows each fold fits on (a
    seeded subsample); every validation row is still scored."""
    from medcast.parallel import ordered

    calls = [(fit_score, (estimator, X, y, capped(fit, max_rows, seed, k), val))
             for k, (fit, val) in enumerate(fold_indices(len(X), n_folds, seed, repeats))]
    folds: list[dict[str, float]] = []
    results = ordered(calls, n_jobs, cluster)
    try:
        for k, fold in enumerate(results):
            folds.append(fold)
            if on_fold is not None:
                on_fold(k, folds)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            with warnings.catch_warnings():  # "tasks ... have been cancelled": as intended
                warnings.simplefilter("ignore", UserWarning)
                close()
    return folds
