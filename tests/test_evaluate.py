"""medcast.evaluate's pure functions: metrics.json's keys and order (the columns of `dvc exp
show`), the trust keys, predictions.csv's columns and reports/validation.json's shape."""

from __future__ import annotations

import pandas as pd

from medcast.evaluate import metrics_report, predictions_frame, trust_keys, validation_report
from medcast.validation import Bootstrap
from tests.support.study import VALIDATION


class _Schema:
    dataset, n_dropped_missing_target = "diabetes", 2


META = {"model": "ridge", "cv": {"r2": 0.48, "rmse": 55.0, "mae": 44.0, "r2_std": 0.04,
                                 "rmse_std": 2.0, "mae_std": 1.5}}
TEST = {"r2": 0.45, "rmse": 54.0, "mae": 43.0}
TABLE = pd.DataFrame({"apparent": [0.5, 1.0, 0.0], "training": [0.52, 1.0, 0.0],
                      "test": [0.49, 0.97, 1.0], "optimism": [0.03, 0.03, -1.0],
                      "corrected": [0.47, 0.97, 1.0], "n_boot": [200, 200, 200]},
                     index=pd.Index(["r2", "cal_slope", "cal_intercept"], name="metric"))


def test_headline_then_at_most_four_trust_columns_then_the_rest():
    trust = trust_keys(False, TABLE, {"slope": 0.91, "intercept": 3.0, "citl": 1.0})
    report = metrics_report(META, TEST, _Schema(), 353, 89, {"interval.level": 0.9}, trust)
    assert list(report)[:10] == ["dataset.name", "model", "test.r2", "test.rmse", "cv.r2",
                                 "cv.rmse", "signal", "validation.r2_corrected",
                                 "calibration.slope", "validation.slope_corrected"]
    assert report["signal"] is False and report["validation.r2_corrected"] == 0.47
    assert report["validation.slope_corrected"] == 0.97
    assert list(report)[-4:] == ["interval.level", "n_train", "n_test", "n_dropped_missing_target"]


def test_predictions_carry_the_interval_and_the_bootstrap_range():
    frame = predictions_frame(pd.Series([1.0, 2.0]), [1.5, 1.5], None, [0.0, 0.0], [3.0, 3.0],
                              ([1.2, 1.1], [1.8, 1.9]))
    assert list(frame.columns) == ["actual", "predicted", "residual", "lower", "upper",
                                   "boot_low", "boot_high"]
    assert list(frame["residual"]) == [-0.5, 0.5]


def test_validation_json_holds_the_table_the_rule_and_the_signal():
    import numpy as np

    boot = Bootstrap(TABLE, np.zeros((20, 3)), "mlp is expensive to refit: 20 …")
    selection = {"signal": VALIDATION["signal"], "rule": "one_se", "reason": "best mean CV RMSE"}
    out = validation_report(META, selection, boot, VALIDATION["test"],
                            {"slope": 0.9, "intercept": 1.0, "citl": 0.5}, {"mape": 3.0},
                            VALIDATION["sample_size"], [])
    assert out["bootstrap"]["n_boot"] == 200 and out["bootstrap"]["rule"].startswith("mlp")
    assert out["bootstrap"]["table"]["r2"]["corrected"] == 0.47
    assert out["calibration"]["corrected"]["slope"] == 0.97
    assert out["stability"] == {"mape": 3.0, "n_boot": 20, "method": "Riley & Collins 2023"}
    assert out["signal"]["signal"] is True and out["selection"]["rule"] == "one_se"
