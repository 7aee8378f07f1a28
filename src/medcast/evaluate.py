"""Stage evaluate: score the tuned model on the held-out test set → reports/metrics.json and
reports/predictions.csv; calibrate conformal prediction intervals on the training split's
out-of-fold residuals (medcast.intervals) → models/interval, and measure their coverage on the
test set → reports/intervals.json. The export stage turns model and interval into one graph."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcast import intervals
from medcast.config import load_params
from medcast.errors import cli
from medcast.features import FeatureSchema, load_schema, read_frame, split_xy
from medcast.intervals import IntervalModel
from medcast.metrics import SUMMARY_KEYS, scores
from medcast.models import large
from medcast.models.io import load_meta, load_model

log = logging.getLogger("medcast.evaluate")


def predictions_frame(y_true: pd.Series, y_pred: Any, ids: pd.Series | None = None,
                      lower: Any = None, upper: Any = None) -> pd.DataFrame:
    """reports/predictions.csv: [id,] actual, predicted, residual[, lower, upper] per test
    row."""
    frame = pd.DataFrame({"actual": y_true.to_numpy(), "predicted": y_pred})
    frame["residual"] = frame["actual"] - frame["predicted"]
    if lower is not None and upper is not None:
        frame["lower"], frame["upper"] = lower, upper
    frame = frame.round(6)
    if ids is not None:
        frame.insert(0, str(ids.name), ids.to_numpy())
    return frame


def metrics_report(meta: dict[str, Any], test: dict[str, float], schema: FeatureSchema,
                   n_train: int, n_test: int, interval: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """reports/metrics.json: what experiments are compared on, with dotted names that are the
    same in `dvc exp show`, `dvc metrics diff` and MLflow (test.r2, cv.r2, cv.r2_std, …). Its
    key order is the column order of `dvc exp show`: dataset and model, then the headline scores
    (test R² and RMSE, CV R²) so that they fit a terminal, the other scores, the interval's
    level, test coverage, mean width and method (`interval`: medcast.intervals.interval_report),
    the row counts. Coverage per group is in reports/intervals.json; the tuned hyperparameters
    are in reports/tuning.json (and MLflow)."""
    cv = meta["cv"]
    scores_ = {"test.r2": test["r2"], "test.rmse": test["rmse"], "cv.r2": cv["r2"],
               "cv.rmse": cv["rmse"], "test.mae": test["mae"], "cv.mae": cv["mae"],
               **{f"cv.{k}": cv[k] for k in SUMMARY_KEYS if k.endswith("_std")}}
    return {
        "dataset.name": schema.dataset,
        "model": meta["model"],
        **{k: round(float(v), 6) for k, v in scores_.items()},
        **(interval or {}),
        "n_train": n_train,
        "n_test": n_test,
        "n_dropped_missing_target": schema.n_dropped_missing_target,
    }


def calibrate(estimator: Any, X_train: pd.DataFrame, y_train: pd.Series, X: pd.DataFrame,
              y: pd.Series, predicted: Any, schema: FeatureSchema, level: float, n_folds: int,
              seed: int, max_rows: int | None = None, groups: tuple[str, ...] = ()
              ) -> tuple[IntervalModel, np.ndarray, np.ndarray, dict[str, Any]]:
    """Intervals from the tuned pipeline's out-of-fold residuals on the training split (its
    hyperparameters refitted per fold, the folds of train/tune), their bounds on the test rows
    and reports/intervals.json (chosen method, calibration, coverage per group). With `groups`
    (evaluate.interval_groups) q is calibrated per cell of those categorical features
    (Mondrian conformal prediction, medcast.mondrian); the card then lists q per cell."""
    oof = intervals.oof_predictions(estimator, X_train, y_train, n_folds, seed, max_rows)
    model = intervals.fit_intervals(X_train, y_train, oof, schema, level, n_folds, seed, groups)
    lower, upper = model.bounds(X, predicted)
    detail = {
        **model.card(),
        "training_worst_group_gap": {k: round(v, 6) for k, v in model.worst_gap.items()},
        "coverage_by_group": intervals.coverage_by_group(y, lower, upper, X, predicted, schema),
    }
    if groups:  # the Mondrian cells, crossed levels included
        detail["coverage_by_cell"] = intervals.coverage_by_cell(model.cells, y, lower, upper, X)
    return model, lower, upper, detail


@cli
def main() -> None:
    params = load_params()
    paths = params.paths
    schema = load_schema(Path(paths.schema))
    X_train, y_train = split_xy(read_frame(Path(paths.train), schema), schema)
    n_train = len(X_train)
    test = read_frame(Path(paths.test), schema)
    X, y = split_xy(test, schema)
    model_dir = Path(paths.model_dir)
    meta = load_meta(model_dir)
    estimator = load_model(model_dir)
    predicted = estimator.predict(X)
    level = params.evaluate.interval_level
    # Fitted per fold on as many rows as tune's folds (cv.large.max_rows; all of them on
    # tables below it).
    max_rows = large.plan(meta["model"], meta["params"], n_train, params.cv.large).max_rows
    interval, lower, upper, detail = calibrate(
        estimator, X_train, y_train, X, y, predicted, schema, level, params.cv.folds,
        params.cv.seed, max_rows, params.evaluate.interval_groups)
    summary = intervals.interval_report(interval, y, lower, upper)
    report = metrics_report(meta, scores(y, predicted), schema, n_train, len(X), summary)
    Path(paths.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.metrics).write_text(json.dumps(report, indent=2) + "\n")
    Path(paths.intervals).write_text(json.dumps(detail, indent=2) + "\n")
    intervals.save_interval_model(interval, Path(paths.interval_model))
    ids = test[schema.id] if schema.id else None
    predictions_frame(y, predicted, ids, lower, upper).to_csv(paths.predictions, index=False)
    log.info("%s on %s: test R² %.3f, RMSE %.4g, MAE %.4g", meta["model"], schema.dataset,
             report["test.r2"], report["test.rmse"], report["test.mae"])
    log.info("%.0f %% intervals (%s width, chosen on training OOF residuals): test coverage "
             "%.1f %%, mean width %.4g", 100 * level, interval.method,
             100 * summary["interval.coverage"], summary["interval.mean_width"])


if __name__ == "__main__":
    main()
