"""Bootstrap validation of a fitted model: Harrell's optimism-corrected performance, percentile
intervals of test-set performance, and the instability of individual predictions.

Methods:
- Optimism correction (Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 17;
  Harrell, Regression Modeling Strategies, 2nd ed., 2015, ch. 5; `rms::validate`): refit the
  whole modelling procedure on B bootstrap samples; optimism = mean_b(performance of model b on
  its bootstrap sample − performance of model b on the original rows); corrected = apparent −
  optimism. The same formula for every metric: for an error (rmse, mae) the optimism is
  negative (the apparent error is too small) and the corrected error larger than the apparent.
- Test-set intervals: the percentile bootstrap of the test rows (Efron & Tibshirani 1993,
  ch. 13), the model held fixed.
- Prediction instability (Riley & Collins, "Stability of clinical prediction models developed
  using statistical or machine learning methods", Biometrical Journal 65:2200302, 2023): each
  bootstrap model's predictions for the same individuals; the mean absolute prediction error
  (MAPE) |p̂_b − p̂| and each individual's 2.5–97.5 % range of p̂_b.
Refits run through medcast.parallel.ordered (processes or Dask, results in order). Row draws
are seeded per bootstrap sample, so sample b is the same whatever n_boot and wherever it runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medcast.calibration import calibration_line
from medcast.metrics import scores

METRICS = ("r2", "rmse", "mae", "cal_slope", "cal_intercept")
_CELLS = 2_000_000  # resampled values held at once by test_intervals (memory bound)


def performance(y: Any, pred: Any) -> dict[str, float]:
    """r2, rmse, mae (medcast.metrics.scores: the project's numbers) and the calibration slope
    and intercept (medcast.calibration.calibration_line: OLS of y on ŷ, as `rms::validate`)."""
    line = calibration_line(y, pred)
    return {**scores(y, pred), "cal_slope": line["slope"], "cal_intercept": line["intercept"]}


def resamples(n_rows: int, n_boot: int, seed: int | Sequence[int]) -> list[np.ndarray]:
    """n_boot bootstrap draws of n_rows row positions with replacement; draw b comes from
    np.random.default_rng([*seed, b]) alone, so it does not change when n_boot grows."""
    key = [seed] if isinstance(seed, int | np.integer) else list(seed)
    return [np.random.default_rng([*key, b]).integers(0, n_rows, n_rows) for b in range(n_boot)]


def refit_task(estimator: Any, X: pd.DataFrame, y: pd.Series, rows: np.ndarray,
               X_test: pd.DataFrame | None = None) -> dict[str, Any]:
    """One bootstrap replicate (a module-level function, so worker processes can run it): a
    fresh clone of `estimator` fitted on X.iloc[rows], y.iloc[rows]; its performance on those
    rows (`apparent`), on all original rows (`original`), and its predictions for X_test
    (`test_pred`, float64; empty when X_test is None)."""
    from sklearn.base import clone

    model = clone(estimator).fit(X.iloc[rows], y.iloc[rows])
    pred = np.asarray(model.predict(X), dtype="float64").reshape(-1)
    y_all = np.asarray(y, dtype="float64")
    test_pred = (np.empty(0) if X_test is None
                 else np.asarray(model.predict(X_test), dtype="float64").reshape(-1))
    return {"apparent": performance(y_all[rows], pred[rows]), "original": performance(y_all, pred),
            "test_pred": test_pred}


def refits(estimator: Any, X: pd.DataFrame, y: pd.Series, n_boot: int, seed: int,
           X_test: pd.DataFrame | None = None, n_jobs: int | None = 1,
           cluster: str | None = None) -> list[dict[str, Any]]:
    """refit_task on each of resamples(len(X), n_boot, seed), in n_jobs processes or on the Dask
    cluster at `cluster` (medcast.parallel.ordered); the results, in draw order, do not depend
    on where they ran."""
    from medcast.parallel import ordered

    calls = [(refit_task, (estimator, X, y, rows, X_test)) for rows in resamples(len(X), n_boot, seed)]
    return list(ordered(calls, n_jobs, cluster))


def optimism_table(apparent: dict[str, float], tasks: list[dict[str, Any]]) -> pd.DataFrame:
    """Harrell's bootstrap table (as `rms::validate` prints it), one row per metric: apparent (the
    model fitted on all rows, scored on them), training = mean_b apparent_b, test = mean_b
    original_b, optimism = training − test, corrected = apparent − optimism, n_boot. For rmse
    and mae the optimism comes out negative and the corrected error above the apparent one."""
    if not tasks:
        raise ValueError("no bootstrap replicates to average")
    rows = {}
    for m in METRICS:
        training = math.fsum(t["apparent"][m] for t in tasks) / len(tasks)
        test = math.fsum(t["original"][m] for t in tasks) / len(tasks)
        optimism = training - test
        rows[m] = {"apparent": apparent[m], "training": training, "test": test,
                   "optimism": optimism, "corrected": apparent[m] - optimism, "n_boot": len(tasks)}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("metric")
    return table.astype({"n_boot": int})


def _batch(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """performance() of each row of 2-D arrays (one bootstrap sample a row), vectorized (NumPy
    sums: equal to performance() to rounding), with the same conventions for a constant y
    (r2 = 1 if perfect else 0, as scores()) and a constant ŷ (slope 1, intercept = citl)."""
    n = y.shape[1]
    e = y - p
    ss_res = (e * e).sum(axis=1)
    dy = y - y.mean(axis=1, keepdims=True)
    dp = p - p.mean(axis=1, keepdims=True)
    flat_y = y.max(axis=1) == y.min(axis=1)
    flat_p = p.max(axis=1) == p.min(axis=1)
    ss_tot = np.where(flat_y, 1.0, (dy * dy).sum(axis=1))
    slope = np.where(flat_p, 1.0, (dp * dy).sum(axis=1) / np.where(flat_p, 1.0, (dp * dp).sum(axis=1)))
    return {"r2": np.where(flat_y, (ss_res == 0).astype(float), 1 - ss_res / ss_tot),
            "rmse": np.sqrt(ss_res / n), "mae": np.abs(e).mean(axis=1), "cal_slope": slope,
            "cal_intercept": np.where(flat_p, e.mean(axis=1), y.mean(axis=1) - slope * p.mean(axis=1))}


def test_intervals(y: Any, pred: Any, n_boot: int, seed: int,
                   level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13) of every metric of
    performance() on a test set, the model fixed: the (1 − level)/2 and (1 + level)/2 quantiles
    (linear interpolation) over resamples(len(y), n_boot, seed) of the test rows."""
    y = np.asarray(y, dtype="float64").reshape(-1)
    p = np.asarray(pred, dtype="float64").reshape(-1)
    if len(y) != len(p) or len(y) < 2 or n_boot < 1:
        raise ValueError(f"need ≥ 2 rows of y and pred of one length and n_boot ≥ 1, got "
                         f"{len(y)}, {len(p)}, {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    draws = resamples(len(y), n_boot, seed)
    step = max(1, _CELLS // len(y))
    parts = [_batch(y[np.stack(draws[i:i + step])], p[np.stack(draws[i:i + step])])
             for i in range(0, n_boot, step)]
    q = [(1 - level) / 2, (1 + level) / 2]
    out = {}
    for m in METRICS:
        low, high = np.quantile(np.concatenate([part[m] for part in parts]), q)
        out[m] = (float(low), float(high))
    return out


def stability(pred: Any, boot_preds: Any, level: float = 0.95) -> dict[str, Any]:
    """Riley & Collins' (2023) instability of individual predictions: `pred` the original
    model's predictions for n individuals, `boot_preds` (n_boot × n) those of the bootstrap
    models for the same individuals (refit_task's test_pred, stacked). Returns mape = mean over
    individuals and models of |p̂_b − p̂|, mape_by_patient (the mean over models, per
    individual), and low/high: each individual's (1 − level)/2 and (1 + level)/2 quantiles of
    p̂_b (2.5 and 97.5 % by default) — the bounds of an instability plot."""
    p = np.asarray(pred, dtype="float64").reshape(-1)
    boot = np.asarray(boot_preds, dtype="float64")
    if boot.ndim != 2 or boot.shape[1] != len(p) or not len(boot):
        raise ValueError(f"boot_preds must be n_boot × {len(p)}, got shape {boot.shape}")
    by_patient = np.abs(boot - p).mean(axis=0)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {"mape": float(by_patient.mean()), "mape_by_patient": by_patient, "low": low, "high": high}
