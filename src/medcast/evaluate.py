"""Stage evaluate: score the tuned model on the held-out test set → reports/metrics.json and
reports/predictions.csv; calibrate conformal prediction intervals on the training split's
out-of-fold residuals (medcast.intervals) and measure their coverage on the test set →
reports/intervals.json; export model and interval as one ONNX graph (models/model.onnx, checked
for parity on the whole test set) with its model card (models/model.json); register it in
MLflow (`champion`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcast import intervals, tracking
from medcast.config import load_params
from medcast.errors import cli
from medcast.features import FeatureSchema, load_schema, read_frame, split_xy
from medcast.intervals import IntervalModel
from medcast.metrics import SUMMARY_KEYS, scores
from medcast.models import large
from medcast.models.io import load_meta, load_model

log = logging.getLogger("medcast.evaluate")

PYFUNC_CODE = Path(__file__).with_name("mlflow_model.py")


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


def model_card(report: dict[str, Any], meta: dict[str, Any], schema: FeatureSchema,
               onnx_bytes: bytes, parity: dict[str, float], train_bytes: bytes,
               interval: dict[str, Any] | None = None) -> dict[str, Any]:
    """models/model.json: what the service validates requests against and shows at GET /model.

    Only what the stage's inputs determine, so the same inputs give the same bytes: the git
    revision is not one of them (it changes when dvc.lock is committed), so the card names the
    training split by its md5 (DVC's hash; `git log -S <md5> dvc.lock` finds the revisions) and
    the revision goes to MLflow (tag `git_revision`)."""
    from medcast.card import build_card, card_dict

    return card_dict(build_card(report, meta, schema, onnx_bytes, parity, train_bytes, interval))


def parity_rows(X: pd.DataFrame, schema: FeatureSchema, per_feature: int = 5) -> pd.DataFrame:
    """The test rows, plus copies of a few of them with each nullable feature missing and with
    all of them missing: the graph's imputation is checked even where the test split has no
    gap."""
    parts = [X]
    head = X.head(per_feature)
    for name in schema.nullable:
        blank = head.copy()
        blank[name] = None
        parts.append(blank)
    if len(schema.nullable) > 1:
        blank = head.copy()
        blank[schema.nullable] = None
        parts.append(blank)
    frame = pd.concat(parts, ignore_index=True)
    for name in schema.numeric:
        frame[name] = frame[name].astype("float64")
    return frame


def register(report: dict[str, Any], hyperparameters: dict[str, Any], model_dir: Path,
             schema_path: Path,
             example: pd.DataFrame, predicted: Any, served: list[Path]) -> str | None:
    """Log the tuned model (code-based pyfunc over the skops/.keras files: nothing pickled) and
    register it as `<dataset>`; the new version, having passed evaluation, becomes `champion`."""
    dataset = report["dataset.name"]
    mlflow = tracking.start(dataset)
    name = f"medcast-{dataset}"
    tags = tracking.run_tags("evaluate", candidate=report["model"])
    with mlflow.start_run(run_name=f"final-{report['model']}", tags=tags):
        mlflow.log_params({"dataset": dataset, "model": report["model"],
                           **{k: report[k] for k in ("interval.method",) if k in report},
                           **tracking.flat("hp", hyperparameters)})
        # metrics.json's numbers under metrics.json's names
        mlflow.log_metrics({k: v for k, v in report.items()
                            if isinstance(v, float)
                            and k.partition(".")[0] in ("test", "cv", "interval")})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"model_dir": str(model_dir), "schema": str(schema_path)},
            registered_model_name=name,
            signature=mlflow.models.infer_signature(example, predicted),
            input_example=example,
        )
        for path in served:  # the exact ONNX graph and card the service loads
            mlflow.log_artifact(str(path), artifact_path="serving")
    client = mlflow.MlflowClient()
    version = info.registered_model_version
    if version is None:
        return None
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    client.set_model_version_tag(name, str(version), "validated", "true")
    client.set_registered_model_alias(name, "champion", str(version))
    log.info("registered %s version %s as champion", name, version)
    return str(version)


def calibrate(estimator: Any, X_train: pd.DataFrame, y_train: pd.Series, X: pd.DataFrame,
              y: pd.Series, predicted: Any, schema: FeatureSchema, level: float, n_folds: int,
              seed: int, max_rows: int | None = None
              ) -> tuple[IntervalModel, np.ndarray, np.ndarray, dict[str, Any]]:
    """Intervals from the tuned pipeline's out-of-fold residuals on the training split (its
    hyperparameters refitted per fold, the folds of train/tune), their bounds on the test rows
    and reports/intervals.json (chosen method, calibration, coverage per group)."""
    oof = intervals.oof_predictions(estimator, X_train, y_train, n_folds, seed, max_rows)
    model = intervals.fit_intervals(X_train, y_train, oof, schema, level, n_folds, seed)
    lower, upper = model.bounds(X, predicted)
    detail = {
        **model.card(),
        "training_worst_group_gap": {k: round(v, 6) for k, v in model.worst_gap.items()},
        "coverage_by_group": intervals.coverage_by_group(y, lower, upper, X, predicted, schema),
    }
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
    # Fitted per fold on as many rows as tune's folds (train.large.max_rows; all of them on
    # tables below it).
    max_rows = large.plan(meta["model"], meta["params"], n_train, params.train.large).max_rows
    interval, lower, upper, detail = calibrate(
        estimator, X_train, y_train, X, y, predicted, schema, level, params.train.cv_folds,
        params.train.seed, max_rows)
    summary = intervals.interval_report(interval, y, lower, upper)
    report = metrics_report(meta, scores(y, predicted), schema, n_train, len(X), summary)
    Path(paths.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.metrics).write_text(json.dumps(report, indent=2) + "\n")
    Path(paths.intervals).write_text(json.dumps(detail, indent=2) + "\n")
    ids = test[schema.id] if schema.id else None
    predictions_frame(y, predicted, ids, lower, upper).to_csv(paths.predictions, index=False)
    log.info("%s on %s: test R² %.3f, RMSE %.4g, MAE %.4g", meta["model"], schema.dataset,
             report["test.r2"], report["test.rmse"], report["test.mae"])
    log.info("%.0f %% intervals (%s width, chosen on training OOF residuals): test coverage "
             "%.1f %%, mean width %.4g", 100 * level, interval.method,
             100 * summary["interval.coverage"], summary["interval.mean_width"])

    from medcast.onnx.export import save_onnx, to_onnx
    from medcast.onnx.intervals import with_intervals
    from medcast.onnx.parity import check_parity, tied_rows

    onnx_model = with_intervals(to_onnx(estimator, schema), interval, schema)
    rows = parity_rows(X, schema)
    tied = tied_rows(estimator, rows)
    # one graph run and one prediction for the prediction and both bounds
    parity = check_parity(estimator, onnx_model, rows, rtol=params.evaluate.parity_rtol,
                          tied=tied, bounds=interval.bounds)
    if parity.get("n_tied"):
        log.info("ONNX parity: %d rows left out, a tie at the model's k-th neighbour (either "
                 "neighbour is right)", parity["n_tied"])
    log.info("ONNX parity on %d rows (%d with a missing value): max relative difference %.2g "
             "(limit %.0e)", parity["n"], int(rows.isna().any(axis=1).sum()),
             parity["max_rel_diff"], params.evaluate.parity_rtol)
    save_onnx(onnx_model, paths.onnx)
    card_interval = {**interval.card(), "coverage": summary["interval.coverage"]}
    card = model_card(report, meta, schema, Path(paths.onnx).read_bytes(), parity,
                      Path(paths.train).read_bytes(), card_interval)
    Path(paths.card).write_text(json.dumps(card, indent=2) + "\n")
    register(report, meta["params"], model_dir, Path(paths.schema), X.head(5), predicted[:5],
             [Path(paths.onnx), Path(paths.card)])


if __name__ == "__main__":
    main()
