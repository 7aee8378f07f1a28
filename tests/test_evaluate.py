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


def test_intervals_above_interval_max_rows_are_calibrated_within_a_sample_and_say_so(
        monkeypatch):
    """evaluate.interval_max_rows: with 1,500 of 6,000 training rows the folds, σ and q see
    only the sample, intervals.json names it, and the coverage on 4,000 new rows still reaches
    the level (the bound errs wide); at or above the table's size nothing changes."""
    import numpy as np

    from medcast import intervals, models
    from medcast.evaluate import calibrate
    from tests.support.synthetic import SCHEMA, heteroscedastic

    LEVEL = 0.9
    X, y = heteroscedastic(6000, seed=5)
    X_new, y_new = heteroscedastic(4000, seed=6)
    estimator = models.build("ridge", {"alpha": 1.0}, SCHEMA, 0).fit(X, y)
    predicted = estimator.predict(X_new)
    seen: list[int] = []
    real = intervals.oof_predictions

    def oof(estimator, X, *args, **kwargs):
        seen.append(len(X))
        return real(estimator, X, *args, **kwargs)

    monkeypatch.setattr(intervals, "oof_predictions", oof)
    model, lower, upper, detail = calibrate(estimator, X, y, X_new, y_new, predicted, SCHEMA,
                                            LEVEL, 5, 0, calibration_rows=1500)
    assert seen == [1500, 1500]  # the model's folds and σ's
    assert detail["calibration_sample"]["rows"] == 1500
    assert detail["calibration_sample"]["training_rows"] == 6000
    assert "evaluate.interval_max_rows" in detail["calibration_sample"]["rule"]
    coverage = intervals.covered(y_new, lower, upper).mean()
    assert coverage >= LEVEL - 0.015, coverage  # binomial sd on 4,000 rows: 0.5 points
    whole = calibrate(estimator, X, y, X_new, y_new, predicted, SCHEMA, LEVEL, 5, 0)
    at_size = calibrate(estimator, X, y, X_new, y_new, predicted, SCHEMA, LEVEL, 5, 0,
                        calibration_rows=6000)
    assert "calibration_sample" not in whole[3] and whole[3] == at_size[3]
    assert np.array_equal(whole[1], at_size[1])
