"""Stage train: cross-validate every candidate (K folds, seeded), fit each on the training set
for train/test scores, write the leaderboard and the selected candidate; log each to MLflow."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcast import models, tracking
from medcast.config import TrainConfig, load_params
from medcast.errors import cli
from medcast.features import FeatureSchema, load_schema, read_split
from medcast.metrics import METRICS, cross_validate, scores, summarize

log = logging.getLogger("medcast.train")


@dataclass
class CandidateResult:
    model: str
    params: dict[str, Any]
    folds: list[dict[str, float]]
    cv: dict[str, float]
    train: dict[str, float]
    test: dict[str, float]
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def evaluate_candidate(
    name: str,
    hp: dict[str, Any],
    cfg: TrainConfig,
    schema: FeatureSchema,
    X: pd.DataFrame,
    y: pd.Series,
    X_test: pd.DataFrame,
    y_test: pd.Series,
) -> CandidateResult:
    """K-fold CV on the training set, then one fit on all of it for train and test scores."""
    params = dict(hp)
    estimator = models.build(name, params, schema, cfg.seed)
    start = time.perf_counter()

    def progress(k: int, folds: list[dict[str, float]]) -> None:
        # Only slow candidates (the MLP) report each fold; fast ones would flood the log.
        if time.perf_counter() - start > 5:
            log.info("  %s fold %d/%d: RMSE %.4g", name, k + 1, cfg.cv_folds, folds[-1]["rmse"])

    folds = cross_validate(estimator, X, y, cfg.cv_folds, cfg.seed, progress)
    fitted = estimator.fit(X, y)
    seconds = time.perf_counter() - start
    target = fitted.named_steps["model"]
    return CandidateResult(
        model=name,
        params=params,
        folds=folds,
        cv=summarize(folds),
        train=scores(y, fitted.predict(X)),
        test=scores(y_test, fitted.predict(X_test)),
        seconds=seconds,
        history=target_units(getattr(target.regressor_, "history_", {}), target.transformer_),
    )


def target_units(history: dict[str, list[float]], scaler: Any) -> dict[str, list[float]]:
    """The MLP learns a standardised target: report its MAE curves in the target's units."""
    scale = float(scaler.scale_[0])
    return {
        k: [v * scale for v in vals] if k.endswith("mae") else vals for k, vals in history.items()
    }


def select(results: list[CandidateResult], forced: str | None) -> CandidateResult:
    """The forced candidate, else the lowest mean CV RMSE (ties: listed order)."""
    if forced is not None:
        return next(r for r in results if r.model == forced)
    return min(results, key=lambda r: r.cv["rmse"])


def leaderboard(results: list[CandidateResult]) -> pd.DataFrame:
    """Scores only: the wall-clock fit time goes to MLflow (`fit_seconds`) and the log, never
    into this DVC output, so the same inputs give the same bytes."""
    rows = []
    for r in sorted(results, key=lambda r: r.cv["rmse"]):
        row: dict[str, Any] = {"model": r.model}
        row.update({f"cv_{k}": v for k, v in r.cv.items()})
        row.update({f"train_{m}": r.train[m] for m in METRICS})
        row.update({f"test_{m}": r.test[m] for m in METRICS})
        rows.append(row)
    table = pd.DataFrame(rows)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def history_frame(history: dict[str, list[float]]) -> pd.DataFrame:
    """Per-epoch MAE, validation MAE and learning rate (an empty table when no MLP ran)."""
    cols = ["epoch", "mae", "val_mae", "learning_rate"]
    if not history:
        return pd.DataFrame(columns=cols)
    n = len(history["loss"])
    return pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "mae": history.get("mae", [float("nan")] * n),
            "val_mae": history.get("val_mae", [float("nan")] * n),
            "learning_rate": history.get("learning_rate", [float("nan")] * n),
        }
    )[cols]


def _log_mlflow(dataset: str, cfg: TrainConfig, results: list[CandidateResult], chosen: str) -> None:
    mlflow = tracking.start(dataset)
    for r in results:
        with mlflow.start_run(
            run_name=f"cv-{r.model}", tags=tracking.run_tags("train", candidate=r.model)
        ):
            # Named as in params.yaml (train.*) and conf/model (hp.*), as `dvc exp show` does.
            mlflow.log_params({"dataset": dataset, "model": r.model,
                               "train.cv_folds": cfg.cv_folds, "train.seed": cfg.seed,
                               **tracking.flat("hp", r.params)})
            for k, fold in enumerate(r.folds):
                mlflow.log_metrics(tracking.flat("fold", fold), step=k)
            mlflow.log_metrics({**tracking.flat("cv", r.cv), **tracking.flat("train", r.train),
                                **tracking.flat("test", r.test), "fit_seconds": r.seconds,
                                "selected": float(r.model == chosen)})


@cli
def main() -> None:
    params = load_params()
    cfg, paths = params.train, params.paths
    models.check_configs(list(params.models))
    schema = load_schema(Path(paths.schema))
    X, y = read_split(Path(paths.train), schema)
    X_test, y_test = read_split(Path(paths.test), schema)

    results = []
    names = params.candidates
    for i, name in enumerate(names, 1):
        r = evaluate_candidate(name, params.models[name].defaults, cfg, schema, X, y, X_test,
                               y_test)
        log.info("[%d/%d] %-17s CV RMSE %.4g ± %.3g, R² %.3f (%.1fs)", i, len(names),
                 name, r.cv["rmse"], r.cv["rmse_std"], r.cv["r2"], r.seconds)
        results.append(r)
    chosen = select(results, cfg.select)
    log.info("selected %s (%s)", chosen.model, "forced" if cfg.select else "best mean CV RMSE")

    table = leaderboard(results)
    Path(paths.leaderboard).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.leaderboard_csv, index=False)
    Path(paths.leaderboard).write_text(json.dumps(table.to_dict(orient="records"), indent=2) + "\n")
    folds = pd.DataFrame(
        [{"model": r.model, "fold": k, **f} for r in results for k, f in enumerate(r.folds)]
    )
    folds.to_csv(paths.cv_scores, index=False)
    mlp = next((r for r in results if r.history), None)
    history_frame(mlp.history if mlp else {}).to_csv(paths.history, index=False)
    Path(paths.selection).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.selection).write_text(json.dumps({
        "model": chosen.model,
        "reason": "forced by train.select" if cfg.select else "best mean CV RMSE",
        "params": chosen.params,
        "cv": chosen.cv,
    }, indent=2) + "\n")
    _log_mlflow(schema.dataset, cfg, results, chosen.model)


if __name__ == "__main__":
    main()
