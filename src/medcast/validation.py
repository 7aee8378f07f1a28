"""How sure the study is about the selected model: its internal validation, as a clinical
prediction paper reports it (TRIPOD+AI, Collins et al., BMJ 2024, items 12e, 23, 24, 25).

Assembles, for the evaluate stage, from the tuned pipeline, the training and test splits:

* bootstrap internal validation (Harrell's optimism correction, as `rms::validate`;
  medcast.bootstrap): apparent, optimism and corrected R², RMSE, MAE, calibration slope and
  intercept; for an expensive candidate (the registry's `expensive`, the MLP) fewer refits by a
  stated rule (n_boot_for);
* 95 % percentile-bootstrap intervals of every test metric (the model held fixed);
* calibration on the test set (medcast.calibration): slope and intercept of observed on
  predicted, observed against predicted by deciles with 95 % intervals, a LOWESS curve;
* prediction stability (Riley & Collins, Biometrical Journal 2023) from the same bootstrap
  models: MAPE and each test patient's 2.5–97.5 % range of bootstrap predictions;
* the minimum sample size (Riley et al. 2019/2020, medcast.samplesize) for the predictor
  parameters actually fitted and the anticipated R² (the model's CV R², floored);
* performance per level of each subgroup column on the test set (medcast.subgroups).

Pure functions; the stage writes what they return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medcast import bootstrap, calibration, models, samplesize, subgroups
from medcast.datasets.spec import DatasetConfig
from medcast.features import FeatureSchema
from medcast.metrics import capped

# Test-row resamples for the intervals of test metrics (cheap: no refit).
TEST_BOOT = 2000
# An expensive candidate refits n_boot // EXPENSIVE_SHARE times, at least MIN_BOOT.
EXPENSIVE_SHARE = 10
MIN_BOOT = 20
# The anticipated R² of the sample-size criteria is the CV R², at least this (the criteria
# need R² > 0; a model with CV R² ≤ 0 has no signal, and the floor asks for the sample that
# would show an R² of 0.01).
R2_FLOOR = 0.01
# Subgroups: categorical features with at most this many levels (conf/dataset: `subgroup`).
MAX_LEVELS = 10
# Test patients drawn (seeded) for the instability plot's data.
INSTABILITY_PATIENTS = 200


def n_boot_for(model: str, requested: int) -> tuple[int, str]:
    """Bootstrap refits for `model`: evaluate.bootstrap, or for an expensive candidate a tenth
    of it (at least MIN_BOOT): the rule, stated in the report."""
    if requested and models.get(model).expensive:
        n = max(MIN_BOOT, requested // EXPENSIVE_SHARE)
        if n < requested:
            return n, (f"{model} is expensive to refit: {n} bootstrap refits instead of "
                       f"evaluate.bootstrap={requested} (a tenth, at least {MIN_BOOT})")
    return requested, ""


@dataclass(frozen=True)
class Bootstrap:
    """Harrell's table, the refitted models' test predictions (n_boot × n_test) and the rule
    that set n_boot."""

    optimism: pd.DataFrame
    test_preds: np.ndarray
    note: str


def internal_validation(estimator: Any, X: pd.DataFrame, y: pd.Series, X_test: pd.DataFrame,
                        model: str, n_boot: int, seed: int, n_jobs: int | None,
                        cluster: str | None, max_rows: int | None = None) -> Bootstrap:
    """Refit the tuned pipeline on n_boot bootstrap samples of the training rows (in n_jobs
    processes or on the cluster), scoring each on its sample and on the original rows.

    Above `max_rows` training rows (evaluate.bootstrap_max_rows) the bootstrap runs within a
    seeded sample of max_rows of them (drawn without replacement, in order): each refit fits
    max_rows rows and is scored on the sample, the apparent performance stays the tuned model's
    on every row. The optimism of a model fitted on fewer rows is larger (it shrinks as the
    rows grow: Steyerberg, Clinical Prediction Models, 2nd ed., 2019, ch. 5 and 17), so the
    corrected figures are conservative, as is the instability of those smaller models; the
    note says so."""
    n, note = n_boot_for(model, n_boot)
    apparent = bootstrap.performance(y, estimator.predict(X))
    if max_rows is not None and len(X) > max_rows:
        sampled = (f"the bootstrap ran within a seeded sample of {max_rows:,} of the "
                   f"{len(X):,} training rows (evaluate.bootstrap_max_rows): models fitted on "
                   "fewer rows are more optimistic, so the corrected figures and the "
                   "instability are conservative")
        note = f"{note}; {sampled}" if note else sampled
        keep = capped(np.arange(len(X)), max_rows, seed)
        X, y = X.iloc[keep], y.iloc[keep]
    tasks = bootstrap.refits(estimator, X, y, n, seed, X_test, n_jobs, cluster)
    preds = np.stack([t["test_pred"] for t in tasks])
    return Bootstrap(bootstrap.optimism_table(apparent, tasks), preds, note)


def test_performance(y: Any, pred: Any, seed: int) -> dict[str, dict[str, float]]:
    """Each test metric (bootstrap.performance) with its 95 % percentile-bootstrap interval."""
    point = bootstrap.performance(y, pred)
    bounds = bootstrap.test_intervals(y, pred, TEST_BOOT, seed)
    return {m: {"value": v, "low": bounds[m][0], "high": bounds[m][1]} for m, v in point.items()}


def predictor_parameters(estimator: Any, X: pd.DataFrame) -> int:
    """The predictor parameters the model fits: the columns its preprocessing hands the
    regressor (after one-hot encoding, missing-value indicators, splines, interactions)."""
    return int(np.asarray(estimator[:-1].transform(X.head(2))).shape[1])


def sample_size(estimator: Any, X: pd.DataFrame, y: pd.Series, cv_r2: float) -> dict[str, Any]:
    """Riley's four criteria for the parameters fitted and the anticipated R² (CV R², floored)
    against the training rows available."""
    p = predictor_parameters(estimator, X)
    r2 = max(cv_r2, R2_FLOOR)
    values = np.asarray(y, dtype=float)
    result = samplesize.riley_continuous(parameters=p, r2=r2, intercept=float(values.mean()),
                                         sd=float(values.std(ddof=1)))
    return {"parameters": p, "anticipated_r2": r2, "r2_floored": cv_r2 < R2_FLOOR,
            "available": len(values), "required": result["n"],
            "enough": len(values) >= result["n"],
            "criteria": [{k: c[k] for k in ("criterion", "name", "n")} for c in result["criteria"]]}


def subgroup_columns(schema: FeatureSchema, dataset: DatasetConfig) -> list[str]:
    """Categorical features with at most MAX_LEVELS levels, unless the dataset's column says
    `subgroup: false`; `subgroup: true` includes a categorical column with more."""
    out = []
    for f in schema.features:
        if f.type != "category":
            continue
        chosen = dataset.columns[f.name].subgroup
        if chosen or (chosen is None and len(f.categories or ()) <= MAX_LEVELS):
            out.append(f.name)
    return out


def subgroup_records(y: Any, pred: Any, lower: Any, upper: Any, X: pd.DataFrame,
                     columns: list[str], seed: int) -> list[dict[str, Any]]:
    """Per level of each subgroup column: n, R², RMSE, MAE, calibration-in-the-large and
    interval coverage on the test set, each with a 95 % bootstrap interval."""
    if not columns:
        return []
    table = subgroups.subgroup_table(y, pred, lower, upper, X[columns], TEST_BOOT // 2, seed)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


def calibration_report(y: Any, pred: Any) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Slope, intercept and calibration-in-the-large on the test set; the decile table and the
    smoothed curve (for the calibration plot and `dvc plots`)."""
    return (calibration.calibration_line(y, pred), calibration.decile_table(y, pred),
            calibration.smooth_curve(y, pred))


def instability_frame(pred: Any, test_preds: np.ndarray, seed: int) -> pd.DataFrame:
    """reports/instability.csv: for up to INSTABILITY_PATIENTS test patients (a seeded draw),
    their original prediction beside each bootstrap model's (long form, one row per pair)."""
    p = np.asarray(pred, dtype=float).reshape(-1)
    rows = capped(np.arange(len(p)), INSTABILITY_PATIENTS, seed)
    b = test_preds[:, rows]
    return pd.DataFrame({"patient": np.tile(rows, len(b)), "predicted": np.tile(p[rows], len(b)),
                         "bootstrap": b.reshape(-1)}).round(6)
