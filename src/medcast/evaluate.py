"""Stage evaluate: score the tuned model on the held-out test set, once → reports/metrics.json
and reports/predictions.csv; calibrate conformal prediction intervals on the training split's
out-of-fold residuals (medcast.intervals) → models/interval, and measure their coverage on the
test set → reports/intervals.json; say how sure all this is (medcast.validation: bootstrap
internal validation, intervals of every test metric, calibration, prediction stability, sample
size, subgroups) → reports/validation.json, calibration*.csv, instability.csv. The export stage
turns model and interval into one graph."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcast import bootstrap, intervals, models, validation
from medcast.config import load_params
from medcast.errors import cli
from medcast.features import FeatureSchema, load_schema, read_frame, split_xy
from medcast.intervals import IntervalModel
from medcast.metrics import SUMMARY_KEYS, capped, scores
from medcast.models import large
from medcast.models.io import load_meta, load_model
from medcast.validation import Bootstrap

log = logging.getLogger("medcast.evaluate")


def predictions_frame(y_true: pd.Series, y_pred: Any, ids: pd.Series | None = None,
                      lower: Any = None, upper: Any = None,
                      stable: tuple[Any, Any] | None = None) -> pd.DataFrame:
    """reports/predictions.csv: [id,] actual, predicted, residual[, lower, upper][, boot_low,
    boot_high] per test row: the prediction interval's bounds, and the 2.5–97.5 % range of the
    bootstrap models' predictions for the patient (its instability, medcast.validation)."""
    frame = pd.DataFrame({"actual": y_true.to_numpy(), "predicted": y_pred})
    frame["residual"] = frame["actual"] - frame["predicted"]
    if lower is not None and upper is not None:
        frame["lower"], frame["upper"] = lower, upper
    if stable is not None:
        frame["boot_low"], frame["boot_high"] = stable
    frame = frame.round(6)
    if ids is not None:
        frame.insert(0, str(ids.name), ids.to_numpy())
    return frame


def metrics_report(meta: dict[str, Any], test: dict[str, float], schema: FeatureSchema,
                   n_train: int, n_test: int, interval: dict[str, Any] | None = None,
                   trust: dict[str, Any] | None = None) -> dict[str, Any]:
    """reports/metrics.json: what experiments are compared on, with dotted names that are the
    same in `dvc exp show`, `dvc metrics diff` and MLflow (test.r2, cv.r2, cv.r2_std, …). Its
    key order is the column order of `dvc exp show`: dataset and model, then the headline scores
    (test R² and RMSE, CV R²) so that they fit a terminal; then how far to trust them (`trust`:
    `signal`, whether any candidate beats the mean; the optimism-corrected R²; the calibration
    slope on the test set and optimism-corrected: trust_keys); the other scores, the interval's
    level, test coverage, mean width and method (medcast.intervals.interval_report), the row
    counts. Intervals of every metric, the bootstrap table, sample size and subgroups are in
    reports/validation.json; coverage per group in reports/intervals.json; the tuned
    hyperparameters in reports/tuning.json (and MLflow)."""
    cv = meta["cv"]
    head = {"test.r2": test["r2"], "test.rmse": test["rmse"], "cv.r2": cv["r2"],
            "cv.rmse": cv["rmse"]}
    rest = {"test.mae": test["mae"], "cv.mae": cv["mae"],
            **{f"cv.{k}": cv[k] for k in SUMMARY_KEYS if k.endswith("_std")}}
    return {
        "dataset.name": schema.dataset,
        "model": meta["model"],
        **{k: round(float(v), 6) for k, v in head.items()},
        **(trust or {}),
        **{k: round(float(v), 6) for k, v in rest.items()},
        **(interval or {}),
        "n_train": n_train,
        "n_test": n_test,
        "n_dropped_missing_target": schema.n_dropped_missing_target,
    }


def trust_keys(signal: bool, optimism: pd.DataFrame, calibration: dict[str, float]
               ) -> dict[str, Any]:
    """The four columns after the headline scores: signal, validation.r2_corrected,
    calibration.slope (test), validation.slope_corrected (optimism-corrected)."""
    return {"signal": bool(signal),
            "validation.r2_corrected": round(float(optimism.loc["r2", "corrected"]), 6),
            "calibration.slope": round(float(calibration["slope"]), 6),
            "validation.slope_corrected": round(float(optimism.loc["cal_slope", "corrected"]), 6)}


def calibrate(estimator: Any, X_train: pd.DataFrame, y_train: pd.Series, X: pd.DataFrame,
              y: pd.Series, predicted: Any, schema: FeatureSchema, level: float, n_folds: int,
              seed: int, max_rows: int | None = None, groups: tuple[str, ...] = (),
              calibration_rows: int | None = None, n_jobs: int | None = 1,
              cluster: str | None = None
              ) -> tuple[IntervalModel, np.ndarray, np.ndarray, dict[str, Any]]:
    """Intervals from the tuned pipeline's out-of-fold residuals on the training split (its
    hyperparameters refitted per fold, the folds of train/tune), their bounds on the test rows
    and reports/intervals.json (chosen method, calibration, coverage per group). With `groups`
    (evaluate.interval_groups) q is calibrated per cell of those categorical features
    (Mondrian conformal prediction, medcast.mondrian); the card then lists q per cell.

    Above `calibration_rows` training rows (evaluate.interval_max_rows) the whole calibration
    (folds, residuals, σ, q) runs within a seeded sample of that many (metrics.capped), and
    intervals.json says so (`calibration_sample`). The served model stays fitted on every
    row: its errors are no larger than those of fold models fitted on fewer rows, so the
    intervals err wide (conservative), as the (K−1)/K rows of every fold already make them;
    the test coverage is measured on every test row either way. Given n calibration scores,
    the coverage follows a Beta distribution with standard deviation about √(level·(1−level)/n):
    0.1 points at 100,000 and 90 % (Vovk 2012, "Conditional validity of inductive conformal
    predictors"; Angelopoulos & Bates 2023, "Conformal prediction: a gentle introduction",
    §3.2)."""
    rows = capped(np.arange(len(X_train)), calibration_rows, seed)
    sampled = len(rows) < len(X_train)
    X_cal, y_cal = (X_train.iloc[rows], y_train.iloc[rows]) if sampled else (X_train, y_train)
    oof = intervals.oof_predictions(estimator, X_cal, y_cal, n_folds, seed, max_rows, n_jobs,
                                    cluster)
    model = intervals.fit_intervals(X_cal, y_cal, oof, schema, level, n_folds, seed, groups,
                                    n_jobs, cluster)
    lower, upper = model.bounds(X, predicted)
    sample = ({"calibration_sample": {
        "rows": len(rows), "training_rows": len(X_train),
        "rule": f"calibrated within a seeded sample of {len(rows):,} of the {len(X_train):,} "
                "training rows (evaluate.interval_max_rows): fold models fitted on fewer rows "
                "err more than the served model, so the intervals err wide"}}
              if sampled else {})
    detail = {
        **model.card(),
        **sample,
        "folds": n_folds,
        "training_worst_group_gap": {k: round(v, 6) for k, v in model.worst_gap.items()},
        "coverage_by_group": intervals.coverage_by_group(y, lower, upper, X, predicted, schema),
    }
    if groups:  # the Mondrian cells, crossed levels included
        detail["coverage_by_cell"] = intervals.coverage_by_cell(model.cells, y, lower, upper, X)
    return model, lower, upper, detail


def validation_report(meta: dict[str, Any], selection: dict[str, Any], boot: Bootstrap,
                      test: dict[str, Any], calib: dict[str, float], stability: dict[str, Any],
                      size: dict[str, Any], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """reports/validation.json: how sure the study is (medcast.validation), from the run."""
    table = boot.optimism
    return {
        "model": meta["model"],
        "signal": selection["signal"],
        "selection": {"rule": selection.get("rule"), "reason": selection["reason"]},
        "bootstrap": {"n_boot": int(table["n_boot"].iloc[0]), "rule": boot.note or None,
                      "method": "Harrell's optimism correction (rms::validate)",
                      "table": {m: {k: float(v) for k, v in row.items() if k != "n_boot"}
                                for m, row in table.iterrows()}},
        "test": test,
        "calibration": {"test": calib,
                        "corrected": {"slope": float(table.loc["cal_slope", "corrected"]),
                                      "intercept": float(table.loc["cal_intercept", "corrected"])}},
        "stability": {"mape": stability["mape"], "n_boot": int(len(boot.test_preds)),
                      "method": "Riley & Collins 2023"},
        "sample_size": size,
        "subgroups": groups,
    }


def _write(paths: Any, report: dict[str, Any], detail: dict[str, Any], validation: dict[str, Any],
           frames: dict[str, pd.DataFrame]) -> None:
    Path(paths.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.metrics).write_text(json.dumps(report, indent=2) + "\n")
    Path(paths.intervals).write_text(json.dumps(detail, indent=2) + "\n")
    Path(paths.validation).write_text(json.dumps(validation, indent=2, ensure_ascii=False) + "\n")
    for key, frame in frames.items():
        frame.to_csv(getattr(paths, key), index=False)


@cli
def main() -> None:
    params = load_params()
    paths, cfg, cv = params.paths, params.evaluate, params.cv
    schema = load_schema(Path(paths.schema))
    X_train, y_train = split_xy(read_frame(Path(paths.train), schema), schema)
    test = read_frame(Path(paths.test), schema)
    X, y = split_xy(test, schema)
    model_dir = Path(paths.model_dir)
    meta, estimator = load_meta(model_dir), load_model(model_dir)
    selection = json.loads(Path(paths.selection).read_text())
    predicted = estimator.predict(X)
    # Fitted per fold on as many rows as tune's folds (cv.large.max_rows; all of them on
    # tables below it).
    max_rows = large.plan(meta["model"], meta["params"], len(X_train), cv.large).max_rows
    # More folds than the comparison's: out-of-fold models fitted on 19/20 of the rows err
    # nearly as the served model does (on 4/5 the intervals came out too wide: bench.coverage);
    # an expensive candidate keeps cv.folds.
    folds = cv.folds if models.get(meta["model"]).expensive else cfg.interval_folds
    interval, lower, upper, detail = calibrate(
        estimator, X_train, y_train, X, y, predicted, schema, cfg.interval_level, folds,
        cv.seed, max_rows, tuple(cfg.interval_groups), cfg.interval_max_rows, cv.n_jobs,
        cv.cluster)
    boot = validation.internal_validation(estimator, X_train, y_train, X, meta["model"],
                                          cfg.bootstrap, cv.seed, cv.n_jobs, cv.cluster,
                                          cfg.bootstrap_max_rows)
    stability = bootstrap.stability(predicted, boot.test_preds)
    calib, deciles, curve = validation.calibration_report(y, predicted)
    summary = intervals.interval_report(interval, y, lower, upper)
    report = metrics_report(meta, scores(y, predicted), schema, len(X_train), len(X), summary,
                            trust_keys(selection["signal"]["signal"], boot.optimism, calib))
    groups = validation.subgroup_records(
        y, predicted, lower, upper, X, validation.subgroup_columns(schema, params.dataset), cv.seed)
    size = validation.sample_size(estimator, X_train, y_train, meta["cv"]["r2"])
    ids = test[schema.id] if schema.id else None
    _write(paths, report, detail, validation_report(
        meta, selection, boot, validation.test_performance(y, predicted, cv.seed), calib,
        stability, size, groups), {
        "predictions": predictions_frame(y, predicted, ids, lower, upper,
                                         (stability["low"], stability["high"])),
        "calibration": deciles,
        "calibration_curve": curve,
        "instability": validation.instability_frame(predicted, boot.test_preds, cv.seed)})
    intervals.save_interval_model(interval, Path(paths.interval_model))
    _log(meta, schema, report, interval, summary, boot, size, selection)


def _log(meta: dict[str, Any], schema: FeatureSchema, report: dict[str, Any],
         interval: IntervalModel, summary: dict[str, Any], boot: Bootstrap,
         size: dict[str, Any], selection: dict[str, Any]) -> None:
    log.info("%s on %s: test R² %.3f, RMSE %.4g, MAE %.4g", meta["model"], schema.dataset,
             report["test.r2"], report["test.rmse"], report["test.mae"])
    log.info("%.0f %% intervals (%s width, chosen on training OOF residuals): test coverage "
             "%.1f %%, mean width %.4g", 100 * interval.level, interval.method,
             100 * summary["interval.coverage"], summary["interval.mean_width"])
    table = boot.optimism
    log.info("bootstrap validation (%d refits%s): R² apparent %.3f, optimism %.3f, corrected "
             "%.3f; calibration slope corrected %.3f", int(table["n_boot"].iloc[0]),
             f"; {boot.note}" if boot.note else "", table.loc["r2", "apparent"],
             table.loc["r2", "optimism"], table.loc["r2", "corrected"],
             table.loc["cal_slope", "corrected"])
    if not size["enough"]:
        log.warning("sample size: %d training rows, fewer than the %d that Riley et al.'s criteria "
                    "ask for %d predictor parameters at an anticipated R² of %.2f",
                    size["available"], size["required"], size["parameters"], size["anticipated_r2"])
    if not selection["signal"]["signal"]:
        log.warning("%s", selection["signal"]["message"])


if __name__ == "__main__":
    main()
