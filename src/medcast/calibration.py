"""Calibration of predictions of a continuous outcome: the calibration line (observed regressed on
predicted, with calibration-in-the-large), a table by deciles of the prediction with t-intervals
of the observed mean, and a LOWESS calibration curve.

Methods: the calibration intercept and slope are the OLS fit y = a + b·ŷ that `rms::validate`
reports for an `ols` model (Harrell, Regression Modeling Strategies, 2nd ed., 2015, ch. 5;
Van Calster et al., "Calibration: the Achilles heel of predictive analytics", BMC Medicine
2019): slope 1 and intercept 0 when calibrated, a slope below 1 when predictions are too extreme
(overfitting). Calibration-in-the-large is mean(y − ŷ). The curve is Cleveland's (JASA 1979)
robust locally weighted regression (statsmodels' `lowess`), with R's default `delta`.
NumPy in, dicts and DataFrames out, no I/O; SciPy and statsmodels are imported inside.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def _pair(y: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype="float64").reshape(-1)
    p = np.asarray(pred, dtype="float64").reshape(-1)
    if len(y) != len(p) or not len(y):
        raise ValueError(f"y and pred must be non-empty and of one length, got {len(y)} and {len(p)}")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("y and pred must be finite numbers (no NaN or inf)")
    return y, p


def calibration_line(y: Any, pred: Any) -> dict[str, float]:
    """OLS of observed on predicted, y = intercept + slope·ŷ (Harrell 2015, ch. 5; what
    `rms::validate` reports as Intercept and Slope for an `ols` fit), and calibration-in-the-large
    citl = mean(y − ŷ). Sums are exactly rounded (math.fsum), so a worker process gives the same
    bits as the caller (see medcast.metrics.scores).

    Constant predictions (a model with no predictors) leave the slope undefined; then, as
    `rms::validate.ols` does for an intercept-only model, slope = 1 and intercept = citl
    (= mean(y) − ŷ): the predictions are read as right up to a shift, never as NaN."""
    y, p = _pair(y, pred)
    n = len(y)
    citl = math.fsum((y - p).tolist()) / n
    if np.ptp(p) == 0:
        return {"intercept": citl, "slope": 1.0, "citl": citl}
    mean_y = math.fsum(y.tolist()) / n
    mean_p = math.fsum(p.tolist()) / n
    dp = p - mean_p
    slope = math.fsum((dp * (y - mean_y)).tolist()) / math.fsum((dp * dp).tolist())
    return {"intercept": mean_y - slope * mean_p, "slope": slope, "citl": citl}


def quantile_bins(pred: Any, bins: int = 10) -> np.ndarray:
    """Bin number (0, 1, …) of each prediction among `bins` quantile bins, right-closed as
    `pandas.qcut(pred, bins, duplicates="drop")`: edges at the 0, 1/bins, …, 1 quantiles (linear
    interpolation), repeated edges merged (a value shared by many rows makes fewer bins).
    When the predictions take at most `bins` distinct values, each value is its own bin (qcut
    would merge some). Empty bins are skipped in the numbering."""
    p = np.asarray(pred, dtype="float64").reshape(-1)
    if bins < 1:
        raise ValueError(f"bins must be ≥ 1, got {bins}")
    values = np.unique(p)
    if len(values) <= bins:
        return np.searchsorted(values, p)
    inner = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1))[1:-1])
    raw = np.searchsorted(inner, p, side="left")  # x equal to an edge falls in the lower bin
    return np.unique(raw, return_inverse=True)[1].reshape(-1)


def decile_table(y: Any, pred: Any, bins: int = 10, level: float = 0.95) -> pd.DataFrame:
    """Observed against predicted by deciles (or `bins` quantile bins) of the prediction: one row
    per bin with bin (1 = lowest predictions), n, mean_predicted, mean_observed and the
    t-interval of the observed mean, mean ± t_{(1+level)/2, n−1}·s/√n (s with ddof=1; NaN for a
    bin of one row)."""
    from scipy.stats import t

    y, p = _pair(y, pred)
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    frame = pd.DataFrame({"bin": quantile_bins(p, bins) + 1, "predicted": p, "observed": y})
    table = frame.groupby("bin").agg(n=("observed", "size"), mean_predicted=("predicted", "mean"),
                                     mean_observed=("observed", "mean"), sd=("observed", "std"))
    n = table["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):  # one-row bins: t on 0 df and s are NaN, as intended
        half = np.where(n > 1, t.ppf((1 + level) / 2, np.maximum(n - 1, 1)), np.nan) * (
            table["sd"].to_numpy() / np.sqrt(n))
    table["observed_low"] = table["mean_observed"] - half
    table["observed_high"] = table["mean_observed"] + half
    return table.drop(columns="sd").reset_index()


def smooth_curve(y: Any, pred: Any, frac: float = 2 / 3, it: int = 3, points: int = 100,
                 delta: float | None = None) -> pd.DataFrame:
    """A LOWESS calibration curve (Cleveland, JASA 74:829–836, 1979; statsmodels'
    `nonparametric.lowess`): observed regressed locally on predicted, `frac` of the rows in
    each local fit, `it` robustifying iterations. `delta` (None: 1 % of the range of the
    predictions, R's `lowess` default) skips local fits between close points and interpolates,
    which keeps 10⁵ rows fast. Returns DataFrame(predicted, observed) on a sorted grid: the
    distinct predictions when there are at most `points` of them, else `points` evenly spaced
    values over their range (linear interpolation between the fits). Constant predictions
    give one row, (ŷ, mean y)."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    y, p = _pair(y, pred)
    if np.ptp(p) == 0:
        return pd.DataFrame({"predicted": [p[0]], "observed": [float(y.mean())]})
    step = 0.01 * float(np.ptp(p)) if delta is None else delta
    fit = lowess(y, p, frac=frac, it=it, delta=step, return_sorted=True)
    # Tied predictions may get (slightly) different fits: one value per distinct prediction.
    x, where = np.unique(fit[:, 0], return_inverse=True)
    fitted = np.bincount(where, weights=fit[:, 1]) / np.bincount(where)
    grid = x if len(x) <= points else np.linspace(x[0], x[-1], points)
    return pd.DataFrame({"predicted": grid, "observed": np.interp(grid, x, fitted)})
