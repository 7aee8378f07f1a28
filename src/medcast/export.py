"""Stage export: the tuned model and its conformal interval as one ONNX graph
(models/model.onnx, checked against the native pipeline on the test rows, a bounded sample of
them on a large table, and on copies of some with each nullable feature missing; its size and
single-row latency measured against train.serving_budget), its model card (models/model.json,
medcast.card) with the per-patient explainer (background rows from the training split, checked
against `shap`: medcast.explain), the service's explanations of up to
export.explain_check_rows test rows (reports/explanations.csv, for the plot stage), and the
model's registration in MLflow (medcast.registry: `champion` only if better).

Reads models/tuned (tune), models/interval and reports/metrics.json (evaluate),
models/selection.json (train: whether any candidate beat the mean) and the splits; the graph
needs ONNX Runtime only (medcast.onnx)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast import explain
from medcast.config import load_params
from medcast.errors import cli
from medcast.features import FeatureSchema, load_schema, read_split
from medcast.intervals import load_interval_model
from medcast.models.io import load_meta, load_model
from medcast.parallel import n_workers
from medcast.params import ServingBudget
from medcast.serving_cost import measure_graph, over_budget

if TYPE_CHECKING:
    from medcast.card import ExplainerCard

log = logging.getLogger("medcast.export")

PYFUNC_CODE = Path(__file__).with_name("mlflow_model.py")
# metrics.json's families that MLflow records for the registered model.
LOGGED = ("test", "cv", "interval", "validation", "calibration")


def model_card(report: dict[str, Any], meta: dict[str, Any], schema: FeatureSchema,
               onnx_bytes: bytes, parity: dict[str, float], train_bytes: bytes,
               interval: dict[str, Any] | None = None,
               signal: dict[str, Any] | None = None,
               explainer: ExplainerCard | None = None) -> dict[str, Any]:
    """models/model.json (medcast.card): what the service validates requests against and shows
    at GET /model.

    Only what the stage's inputs determine, so the same inputs give the same bytes: the git
    revision is not one of them (it changes when dvc.lock is committed), so the card names the
    training split by its md5 (DVC's hash; `git log -S <md5> dvc.lock` finds the revisions) and
    the revision goes to MLflow (tag `git_revision`)."""
    from medcast.card import build_card, card_dict

    return card_dict(build_card(report, meta, schema, onnx_bytes, parity, train_bytes, interval,
                                signal, explainer))


def parity_sample(X: pd.DataFrame, schema: FeatureSchema, max_rows: int, seed: int,
                  per_pattern: int = 20) -> pd.DataFrame:
    """The test rows the parity check compares: all of them up to `max_rows`; above, a seeded
    sample of `max_rows` rows (in test order) that holds up to `per_pattern` rows of every
    pattern of missing values among the nullable features (a rare pattern is where a graph's
    imputation may be wrong), the rest drawn at random. The graph's cost on a large table
    (a kNN's holds every training row) then stays bounded; scoring still uses every row."""
    if len(X) <= max_rows:
        return X
    rng = np.random.default_rng(seed)
    patterns = (X[schema.nullable].isna().to_numpy() @ (1 << np.arange(len(schema.nullable)))
                if schema.nullable else np.zeros(len(X), dtype=np.int64))
    keep = np.zeros(len(X), dtype=bool)
    values = np.unique(patterns)
    quota = max(1, min(per_pattern, max_rows // (2 * len(values))))
    for value in values:
        where = np.flatnonzero(patterns == value)
        keep[rng.choice(where, size=min(quota, len(where)), replace=False)] = True
    rest = np.flatnonzero(~keep)
    keep[rng.choice(rest, size=max(0, max_rows - int(keep.sum())), replace=False)] = True
    return X.iloc[np.flatnonzero(keep)]


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


def _explain(params: Any, schema: FeatureSchema, estimator: Any, graph: bytes,
             X: pd.DataFrame) -> explain.Explained:
    """The explainer's background (training rows), the served explanations of a sample of test
    rows (with every pattern of missing values) and their check against shap (medcast.explain)."""
    train, y_train = read_split(Path(params.paths.train), schema)
    cfg, seed = params.export, params.cv.seed
    rows = parity_sample(X, schema, cfg.explain_check_rows, seed)
    explained = explain.explain_and_check(
        graph, estimator, schema, rows, explain.background(train, cfg.explain_background, seed),
        cfg.explain_coalitions, seed, float(y_train.std()))
    log.info("%s", explain.describe(explained.card, len(schema.names)))
    if (warning := explain.coverage_warning(explained.card)) is not None:
        log.warning("%s", warning)
    return explained


def served_cost(graph: bytes, schema: FeatureSchema, X: pd.DataFrame, budget: ServingBudget
                ) -> str | None:
    """Measure the served graph (the tuned model with its interval's bounds) as train measured
    its candidates (medcast.serving_cost), log its cost and return why it is over
    train.serving_budget (None: within it, or no limit set). Train kept the candidate within
    the budget and tune its refit; this checks the graph that is actually served."""
    cost = measure_graph(graph, schema, X.iloc[:1])
    log.info("served graph: %.3g MB, single-row prediction %.2f ms (fastest of repeated runs)",
             cost.onnx_mb, cost.ms)
    if not budget.active:
        return None
    over = over_budget(cost, budget)
    if over is not None:
        log.warning("the served graph is over train.serving_budget: %s", over)
    return over


@cli
def main() -> None:
    params = load_params()
    paths = params.paths
    schema = load_schema(Path(paths.schema))
    X, _ = read_split(Path(paths.test), schema)
    model_dir = Path(paths.model_dir)
    meta = load_meta(model_dir)
    estimator = load_model(model_dir)
    interval = load_interval_model(Path(paths.interval_model))
    report = json.loads(Path(paths.metrics).read_text())

    from medcast.onnx.bounds import with_intervals
    from medcast.onnx.export import save_onnx, to_onnx
    from medcast.onnx.parity import check_parity, tied_rows

    onnx_model = with_intervals(to_onnx(estimator, schema), interval, schema)
    sample = parity_sample(X, schema, params.export.parity_max_rows, params.cv.seed)
    rows = parity_rows(sample, schema)
    tied = tied_rows(estimator, rows)
    # one graph run and one prediction for the prediction and both bounds, on every core
    parity = check_parity(estimator, onnx_model, rows, rtol=params.export.parity_rtol,
                          tied=tied, bounds=interval.bounds, workers=n_workers(params.cv.n_jobs))
    if len(sample) < len(X):
        parity["sampled_from"] = len(X)
        log.info("ONNX parity on a sample of %d of the %d test rows (export.parity_max_rows, "
                 "every pattern of missing values in it)", len(sample), len(X))
    if parity.get("n_tied"):
        log.info("ONNX parity: %d rows left out, a tie at the model's k-th neighbour (either "
                 "neighbour is right)", parity["n_tied"])
    log.info("ONNX parity on %d rows (%d with a missing value): max relative difference %.2g "
             "(limit %.0e)", parity["n"], int(rows.isna().any(axis=1).sum()),
             parity["max_rel_diff"], params.export.parity_rtol)
    save_onnx(onnx_model, paths.onnx)
    graph = Path(paths.onnx).read_bytes()
    served_cost(graph, schema, X, params.train.serving_budget)
    explained = _explain(params, schema, estimator, graph, X)
    explained.table.to_csv(paths.explanations, index=False)
    card_interval = {**interval.card(), "coverage": report["interval.coverage"]}
    signal = json.loads(Path(paths.selection).read_text()).get("signal")
    card = model_card(report, meta, schema, graph, parity, Path(paths.train).read_bytes(),
                      card_interval,
                      signal and {"signal": signal["signal"], "message": signal["message"]},
                      explained.card)
    Path(paths.card).write_text(json.dumps(card, indent=2) + "\n")
    from medcast.registry import register

    register(report, meta["params"], {"model_dir": str(model_dir), "schema": paths.schema},
             X.head(5), estimator.predict(X.head(5)), [paths.onnx, paths.card],
             {"dataset": schema.dataset, "training_data_md5": card["training_data_md5"],
              "cv_rmse": repr(float(meta["cv"]["rmse"])),
              "signal": "true" if report.get("signal", True) else "false"},
             str(PYFUNC_CODE), LOGGED)


if __name__ == "__main__":
    main()
