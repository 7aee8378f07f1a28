"""Performance per subgroup on the test set: for each column of a table of groupings (sex, age
band, site, …) and each of its levels, n, R², RMSE, MAE, calibration-in-the-large and the
coverage of the prediction intervals, each with a bootstrap percentile interval.

Method: a stratified percentile bootstrap (percentile intervals: Efron & Tibshirani, An
Introduction to the Bootstrap, 1993, ch. 13; several samples: Davison & Hinkley, Bootstrap
Methods and their Application, 1997, ch. 3): each level's rows are resampled within the level,
so its n is the same in every resample, the model held fixed. Resample b of a level comes from
np.random.default_rng([seed, crc32(column), crc32(level), b]): a level's interval does not
change when other columns, levels or more resamples are added.

fairlearn's MetricFrame (0.15: `n_boot`, `ci_quantiles`, `random_state`; lower/upper could ride
along as `sample_params`) was evaluated and not used: its bootstrap resamples the whole table
and splits each resample again, so a level's size changes from resample to resample and a small
level is missing from some resamples, whose quantiles then come from fewer values (nanquantile)
without saying so. Resampling within the level is the stratified bootstrap asked for here, and
pandas/NumPy do it in a few lines without another dependency.
Levels: missing values are their own level "(missing)"; levels are listed in the column's
category order or sorted. A level of fewer than 2 rows gets its metrics where they are defined
and NaN intervals; R² is NaN where the level's y is constant (no variance to explain), also in
a resample, and such resamples are left out of R²'s interval.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from medcast.bootstrap import resamples
from medcast.datasets.spec import MISSING_LEVEL
from medcast.metrics import scores

METRICS = ("r2", "rmse", "mae", "citl", "coverage")
_CELLS = 2_000_000  # resampled values held at once (memory bound)


def level_metrics(y: np.ndarray, pred: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, float]:
    """R², RMSE, MAE (medcast.metrics.scores; R² NaN when y is constant), citl = mean(y − ŷ)
    and coverage = share of y within [lower, upper]."""
    s = scores(y, pred)
    return {"r2": s["r2"] if np.ptp(y) > 0 else math.nan, "rmse": s["rmse"], "mae": s["mae"],
            "citl": math.fsum((y - pred).tolist()) / len(y),
            "coverage": float(np.mean((lower <= y) & (y <= upper)))}


def _batch(y: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, np.ndarray]:
    """level_metrics of each row of 2-D arrays (one resample a row), vectorized."""
    e = y - p
    ss_res = (e * e).sum(axis=1)
    dy = y - y.mean(axis=1, keepdims=True)
    flat = y.max(axis=1) == y.min(axis=1)
    ss_tot = np.where(flat, 1.0, (dy * dy).sum(axis=1))
    return {"r2": np.where(flat, np.nan, 1 - ss_res / ss_tot), "rmse": np.sqrt(ss_res / y.shape[1]),
            "mae": np.abs(e).mean(axis=1), "citl": e.mean(axis=1),
            "coverage": ((lo <= y) & (y <= hi)).mean(axis=1)}


def _intervals(arrays: tuple[np.ndarray, ...], n_boot: int, key: list[int],
               level: float) -> dict[str, tuple[float, float]]:
    n = len(arrays[0])
    if n < 2 or n_boot < 1:
        return {m: (math.nan, math.nan) for m in METRICS}
    draws = resamples(n, n_boot, key)
    step = max(1, _CELLS // n)
    parts = []
    for i in range(0, n_boot, step):
        rows = np.stack(draws[i:i + step])
        parts.append(_batch(*(a[rows] for a in arrays)))
    q = [(1 - level) / 2, (1 + level) / 2]
    out = {}
    for m in METRICS:
        values = np.concatenate([part[m] for part in parts])
        values = values[~np.isnan(values)]
        out[m] = tuple(float(v) for v in np.quantile(values, q)) if len(values) else (math.nan, math.nan)
    return out


def levels(column: pd.Series) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per level of a grouping column: category order for a categorical
    column, else sorted values (by their text when they do not sort); "(missing)" last."""
    present = column.dropna()
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = [c for c in column.cat.categories if (present == c).any()]
    else:
        values = list(pd.unique(present))
        try:
            values = sorted(values)
        except TypeError:
            values = sorted(values, key=str)
    out = [(str(v), (column == v).to_numpy(dtype=bool)) for v in values]
    missing = column.isna().to_numpy()
    return out + ([(MISSING_LEVEL, missing)] if missing.any() else [])


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def subgroup_table(y: Any, pred: Any, lower: Any, upper: Any, groups: pd.DataFrame, n_boot: int,
                   seed: int, level: float = 0.95) -> pd.DataFrame:
    """One row per (column of `groups`, level): feature, level, n, and for each of r2, rmse,
    mae, citl and coverage the value and its `level` stratified percentile bootstrap interval
    (<metric>_low, <metric>_high). `groups` is aligned with y, pred, lower and upper by
    position (one row per test row); a numeric column gives one level per distinct value, so
    bin it first (e.g. age bands)."""
    arrays = tuple(np.asarray(a, dtype="float64").reshape(-1) for a in (y, pred, lower, upper))
    if len({len(a) for a in arrays} | {len(groups)}) != 1:
        raise ValueError("y, pred, lower, upper and groups must have one row per test row, got "
                         f"{[len(a) for a in arrays]} and {len(groups)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    rows = []
    for column in groups.columns:
        for label, mask in levels(groups[column].reset_index(drop=True)):
            part = tuple(a[mask] for a in arrays)
            point = level_metrics(*part)
            ci = _intervals(part, n_boot, [seed, _crc(str(column)), _crc(label)], level)
            row: dict[str, Any] = {"feature": str(column), "level": label, "n": int(mask.sum())}
            for m in METRICS:
                row.update({m: point[m], f"{m}_low": ci[m][0], f"{m}_high": ci[m][1]})
            rows.append(row)
    columns = ["feature", "level", "n", *(f"{m}{s}" for m in METRICS for s in ("", "_low", "_high"))]
    return pd.DataFrame(rows, columns=columns)
