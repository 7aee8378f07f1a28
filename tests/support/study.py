"""What the plot stage reads, as small literal documents: reports/metrics.json,
reports/validation.json, reports/tuning.json, the leaderboard and the card, for the report and
TRIPOD tests (the e2e tests check them on real runs)."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd


def insurance_study(n: int, seed: int, n_train: int) -> tuple[Any, Any, Any, Any]:
    """Tiny params on the insurance dataset, a generated insurance table of n rows validated as
    preprocess validates it, its schema, and (X, y) of its first n_train rows and of the rest."""
    from devtools.factories import insurance_frame
    from medcast.datasets import validate
    from medcast.features import infer_schema, split_xy
    from tests.conftest import tiny

    p = tiny("dataset=insurance")
    frame = validate(insurance_frame(n, seed=seed).astype(str), p.dataset)
    schema = infer_schema(frame, p.dataset)
    return p, schema, split_xy(frame.iloc[:n_train], schema), split_xy(frame.iloc[n_train:], schema)

METRICS = {"dataset.name": "insurance", "model": "ridge", "test.r2": 0.75, "test.rmse": 6000.0,
           "cv.r2": 0.74, "cv.rmse": 6050.0, "signal": True, "validation.r2_corrected": 0.73,
           "calibration.slope": 0.98, "validation.slope_corrected": 0.97, "test.mae": 4100.0,
           "cv.mae": 4200.0, "cv.r2_std": 0.03, "cv.rmse_std": 400.0, "cv.mae_std": 200.0,
           "interval.level": 0.9, "interval.coverage": 0.91, "interval.mean_width": 19000.0,
           "interval.method": "constant", "n_train": 1070, "n_test": 268,
           "n_dropped_missing_target": 0}

_METRIC = {"apparent": 0.75, "training": 0.76, "test": 0.74, "optimism": 0.02, "corrected": 0.73}
VALIDATION: dict[str, Any] = {
    "model": "ridge",
    "signal": {"signal": True, "best": "ridge", "cv_r2": 0.74, "rmse_difference": -5900.0,
               "low": -6500.0, "high": -5300.0, "null_rmse": 12000.0, "level": 0.95,
               "message": "ridge predicts charges better than its training mean (…)"},
    "selection": {"rule": "one_se", "reason": "best mean CV RMSE"},
    "bootstrap": {"n_boot": 200, "rule": None, "method": "Harrell",
                  "table": {m: dict(_METRIC) for m in ("r2", "rmse", "mae", "cal_slope",
                                                       "cal_intercept")}},
    "test": {m: {"value": 0.75, "low": 0.7, "high": 0.8} for m in ("r2", "rmse", "mae",
                                                                  "cal_slope", "cal_intercept")},
    "calibration": {"test": {"slope": 0.98, "intercept": 120.0, "citl": 30.0},
                    "corrected": {"slope": 0.97, "intercept": 150.0}},
    "stability": {"mape": 310.0, "n_boot": 200, "method": "Riley & Collins 2023"},
    "sample_size": {"parameters": 11, "anticipated_r2": 0.74, "r2_floored": False,
                    "available": 1070, "required": 245, "enough": True,
                    "criteria": [{"criterion": k, "name": n, "n": v} for k, n, v in
                                 ((1, "shrinkage", 97), (2, "r2 optimism", 58),
                                  (3, "residual sd", 245), (4, "intercept", 245))]},
    "subgroups": [{"feature": "smoker", "level": lv, "n": n, "r2": 0.5, "r2_low": 0.4,
                   "r2_high": 0.6, "rmse": 5000.0, "rmse_low": 4000.0, "rmse_high": 6000.0,
                   "mae": 4000.0, "mae_low": 3000.0, "mae_high": 5000.0, "citl": 10.0,
                   "citl_low": -100.0, "citl_high": 120.0, "coverage": 0.9,
                   "coverage_low": 0.85, "coverage_high": 0.95} for lv, n in (("no", 210),
                                                                            ("yes", 58))],
}
TUNING = {"n_trials": 3, "best_trial": 1, "best_params": {"alpha": 0.5}}
CARD = {"onnx_md5": "0" * 32, "params": {"alpha": 0.5}}


def no_signal(validation: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(validation)
    out["signal"].update(signal=False, message="no candidate beats the mean: the best, ridge, "
                                               "does not predict charges better than its "
                                               "training mean (…)")
    return out


def board() -> pd.DataFrame:
    return pd.DataFrame([
        {"rank": 1, "model": "ridge", "cv_r2": 0.74, "cv_rmse": 6050.0, "cv_rmse_std": 400.0,
         "vs_best": float("nan"), "vs_best_low": float("nan"), "vs_best_high": float("nan"),
         "vs_null": -5900.0, "vs_null_low": -6500.0, "vs_null_high": -5300.0, "selected": True,
         "fidelity": "full", "fidelity_note": float("nan")},
        {"rank": 2, "model": "mean", "cv_r2": -0.01, "cv_rmse": 12000.0, "cv_rmse_std": 600.0,
         "vs_best": 5900.0, "vs_best_low": 5300.0, "vs_best_high": 6500.0,
         "vs_null": float("nan"), "vs_null_low": float("nan"), "vs_null_high": float("nan"),
         "selected": False, "fidelity": "full", "fidelity_note": float("nan")},
    ])


def train_rows() -> tuple[Any, Any, Any, Any]:
    """(params, schema, X, y): 120 training rows of a 150-row tiny insurance study, one seed
    (what tests/test_train.py and tests/test_candidates.py fit their candidates on)."""
    p, schema, (X, y), _ = insurance_study(150, 1, 120)
    return p, schema, X, y
