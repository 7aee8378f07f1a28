"""Conformal prediction intervals from out-of-fold residuals: fitted on the training split only
(no rows held back), reported on the test split, exported into the served ONNX graph.

Method ("CV" split-conformal; Vovk's cross-conformal / Barber et al.'s jackknife family):

1. K-fold out-of-fold (OOF) predictions of the tuned pipeline on the training split (the same
   seeded folds as train/tune), residuals r_i = y_i − ŷ_oof(x_i).
2. A difficulty model σ(x) (a small gradient-boosting pipeline on the same preprocessing) learns
   |r| from the features. Its own predictions for the conformity scores are cross-fitted (each
   fold's σ comes from a σ-model that did not see that fold), so the scores stay honest.
3. Scores s_i = |r_i| / max(σ(x_i), floor) (adaptive) or s_i = |r_i| (constant width); q is their
   ⌈(n+1)·level⌉-th smallest value (the finite-sample conformal quantile).
4. The interval of a new x is ŷ(x) ± q·max(σ(x), floor) (adaptive) or ŷ(x) ± q (constant).
5. Mondrian (group-conditional) variant, with `groups` (params evaluate.interval_groups): q is
   computed separately within each cell of the cross of those categorical features' levels,
   for both variants, so coverage holds within each cell, not only on average (Vovk, Gammerman
   & Shafer, *Algorithmic Learning in a Random World*, 2005, ch. 4; Vovk et al. 2003, "Mondrian
   confidence machine"; Romano, Barber, Sabatti & Candès 2020, "With malice toward none").
   A cell of fewer than medcast.mondrian.min_cell_rows(level) calibration rows (9 at 90 %: too
   few for a finite conformal quantile) and a level never seen in training use the pooled q of
   step 3; the model records which cells fell back (medcast.mondrian.Cells).

Both variants are fitted; the one whose coverage on the training OOF rows is closest to the
level in its worst group (each category of each categorical feature, each quartile of the
prediction) is kept — constant width on a tie — and recorded as `method`.
The served interval is centred on the model refitted on every training row, not on the K fold
models (as CV+ would need, K graphs at serving time): the exact finite-sample guarantee of split
conformal then holds only approximately (OOF residuals come from models fitted on (K−1)/K of the
rows, so they err slightly wide). Calibration is measured instead: bench/coverage.py.
Pure functions over NumPy/pandas; scikit-learn is imported inside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcast.features import FeatureSchema
from medcast.metrics import capped, fold_indices
from medcast.mondrian import Cells, calibrate_cells, conformal_quantile

METHODS = ("adaptive", "constant")
# The difficulty model: a small, shallow boosting of |residual| (medcast.models' candidate, so
# it exports to ONNX exactly like a served model).
DIFFICULTY_MODEL = "gradient_boosting"
DIFFICULTY_PARAMS: dict[str, Any] = {"n_estimators": 100, "learning_rate": 0.05, "max_depth": 2,
                                     "subsample": 1.0, "min_samples_leaf": 20}
# σ(x) never goes below this share of the mean |OOF residual| (a boosted |r| may reach ~0).
FLOOR_SHARE = 0.25
# Groups with fewer rows than this are reported but do not decide the method.
MIN_GROUP = 10


@dataclass(frozen=True)
class IntervalModel:
    """What makes an interval from a prediction: ŷ ± q(x)·scale(x), q(x) = q, or the q of x's
    cell with Mondrian `cells`."""

    level: float
    method: str  # "adaptive" | "constant"
    q: float  # conformal quantile of the scores (target units for "constant"); pooled
    floor: float  # lower bound of σ(x) (target units; "adaptive" only)
    difficulty: Any | None = None  # fitted pipeline x → σ(x) ("adaptive" only)
    # Worst-group |coverage − level| on the training OOF rows, per method (how it was chosen).
    worst_gap: dict[str, float] = field(default_factory=dict)
    # Mondrian: q per cell of the group features (None: one q for every row).
    cells: Cells | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        return self.cells.groups if self.cells is not None else ()

    def row_q(self, X: pd.DataFrame) -> float | np.ndarray:
        """q for each row of X: its cell's (see medcast.mondrian), or the one pooled q."""
        if self.cells is None:
            return self.q
        return self.cells.table(self.q)[self.cells.codes(X)]

    def scale(self, X: pd.DataFrame) -> np.ndarray:
        if self.method != "adaptive" or self.difficulty is None:
            return np.ones(len(X))
        return np.maximum(np.asarray(self.difficulty.predict(X), dtype=float).reshape(-1),
                          self.floor)

    def bounds(self, X: pd.DataFrame, predicted: Any) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds for rows X whose point predictions are `predicted`."""
        pred = np.asarray(predicted, dtype=float).reshape(-1)
        half = self.row_q(X) * self.scale(X)
        return pred - half, pred + half

    def card(self) -> dict[str, Any]:
        """The model card's `interval` entry (what the service reports with each answer); with
        groups also `groups`, `cell_q` and `cell_n` by cell ("sex=2, smoker=yes") and the
        `pooled_cells` that use the pooled `q` (medcast.mondrian.Cells.card)."""
        card = {"level": self.level, "method": self.method, "q": round(self.q, 9),
                "floor": round(self.floor, 9)}
        return card if self.cells is None else {**card, **self.cells.card()}


def oof_predictions(estimator: Any, X: pd.DataFrame, y: pd.Series, n_folds: int, seed: int,
                    max_rows: int | None = None, n_jobs: int | None = 1,
                    cluster: str | None = None) -> np.ndarray:
    """Out-of-fold predictions of a fresh clone of `estimator` per fold (the seeded KFold of
    medcast.metrics.cross_validate: the folds train and tune score on), each fitted on at most
    max_rows of its rows as tune's folds were (cv.large.max_rows). The folds run in n_jobs
    processes (None: every core) or on the Dask cluster (medcast.parallel.ordered), one thread
    each; the predictions do not depend on where."""
    from medcast.parallel import ordered

    folds = list(fold_indices(len(X), n_folds, seed))
    calls = [(fold_predictions, (estimator, X, y, capped(fit_idx, max_rows, seed, k), val_idx))
             for k, (fit_idx, val_idx) in enumerate(folds)]
    out = np.empty(len(X))
    for (_, val_idx), pred in zip(folds, ordered(calls, n_jobs, cluster), strict=True):
        out[val_idx] = pred
    return out


def fold_predictions(estimator: Any, X: pd.DataFrame, y: pd.Series, fit_idx: Any,
                     val_idx: Any) -> np.ndarray:
    """One task of oof_predictions: a fresh clone fitted on fit_idx, its predictions on
    val_idx."""
    from sklearn.base import clone

    model = clone(estimator).fit(X.iloc[fit_idx], y.iloc[fit_idx])
    return np.asarray(model.predict(X.iloc[val_idx]), dtype=float).reshape(-1)


def difficulty_model(schema: FeatureSchema, seed: int) -> Any:
    from medcast import models

    return models.build(DIFFICULTY_MODEL, DIFFICULTY_PARAMS, schema, seed)


def group_masks(X: pd.DataFrame, predicted: Any, schema: FeatureSchema
                ) -> dict[str, np.ndarray]:
    """Boolean row masks per group: "<feature>=<category>" for each category seen of each
    categorical feature, and "prediction Q1".."Q4" (quartiles of `predicted`)."""
    out: dict[str, np.ndarray] = {}
    for name in schema.categorical:
        values = X[name].astype(object).where(X[name].notna(), None).to_numpy()
        for category in sorted({str(v) for v in values if v is not None}):
            out[f"{name}={category}"] = np.array([v is not None and str(v) == category
                                                  for v in values])
        if any(v is None for v in values):
            out[f"{name}=(missing)"] = np.array([v is None for v in values])
    pred = np.asarray(predicted, dtype=float).reshape(-1)
    if len(pred):
        edges = np.quantile(pred, [0.25, 0.5, 0.75])
        quartile = np.searchsorted(edges, pred, side="right")
        for k in range(4):
            out[f"prediction Q{k + 1}"] = quartile == k
    return out


def covered(y: Any, lower: Any, upper: Any) -> np.ndarray:
    y = np.asarray(y, dtype=float).reshape(-1)
    return (np.asarray(lower) <= y) & (y <= np.asarray(upper))


def coverage_by_group(y: Any, lower: Any, upper: Any, X: pd.DataFrame, predicted: Any,
                      schema: FeatureSchema) -> dict[str, dict[str, float]]:
    """{group: {"coverage": share covered, "n": rows, "mean_width": …}} (see group_masks)."""
    hit = covered(y, lower, upper)
    width = np.asarray(upper) - np.asarray(lower)
    return {
        name: {"coverage": round(float(hit[mask].mean()), 6), "n": int(mask.sum()),
               "mean_width": round(float(width[mask].mean()), 6)}
        for name, mask in group_masks(X, predicted, schema).items() if mask.any()
    }


def coverage_by_cell(cells: Cells | None, y: Any, lower: Any, upper: Any, X: pd.DataFrame
                     ) -> dict[str, dict[str, float]]:
    """coverage_by_group's figures per Mondrian cell ("sex=2, smoker=yes", see
    IntervalModel.cells) with rows in X; {} without cells."""
    if cells is None:
        return {}
    hit = covered(y, lower, upper)
    width = np.asarray(upper) - np.asarray(lower)
    codes = cells.codes(X)
    out = {}
    for label, cell in zip(cells.labels(), cells.indices(), strict=True):
        mask = codes == cell
        if mask.any():
            out[label] = {"coverage": round(float(hit[mask].mean()), 6), "n": int(mask.sum()),
                          "mean_width": round(float(width[mask].mean()), 6)}
    return out


def worst_gap(groups: dict[str, dict[str, float]], level: float) -> float:
    """The largest |coverage − level| over groups of at least MIN_GROUP rows."""
    gaps = [abs(g["coverage"] - level) for g in groups.values() if g["n"] >= MIN_GROUP]
    return max(gaps, default=0.0)


def calibrate_scores(scores: np.ndarray, X: pd.DataFrame, schema: FeatureSchema,
                     groups: Sequence[str], level: float
                     ) -> tuple[float, Cells | None, float | np.ndarray]:
    """The pooled conformal quantile of `scores`; with `groups`, also q per Mondrian cell
    (medcast.mondrian.calibrate_cells) and each row's q (else the pooled q again)."""
    q = conformal_quantile(scores, level)
    if not groups:
        return q, None, q
    cells = calibrate_cells(scores, X, schema, groups, level, q)
    return q, cells, cells.table(q)[cells.codes(X)]


def fit_both(X: pd.DataFrame, y: pd.Series, oof: Any, schema: FeatureSchema, level: float,
             n_folds: int, seed: int, groups: Sequence[str] = (), n_jobs: int | None = 1,
             cluster: str | None = None) -> dict[str, IntervalModel]:
    """Both variants calibrated on the OOF residuals of the training split (q per cell of
    `groups` when given: Mondrian), each with the worst-group gaps of both (how fit_intervals
    chooses)."""
    oof = np.asarray(oof, dtype=float).reshape(-1)
    residual = np.abs(np.asarray(y, dtype=float) - oof)
    q_const, const_cells, rows_const = calibrate_scores(residual, X, schema, groups, level)
    const_groups = coverage_by_group(y, oof - rows_const, oof + rows_const, X, oof, schema)
    # σ cross-fitted for the scores (each fold's from a model that did not see it), then
    # refitted on every row for serving.
    floor = FLOOR_SHARE * float(residual.mean()) or 1e-12
    target = pd.Series(residual, index=X.index)
    sigma = np.maximum(oof_predictions(difficulty_model(schema, seed), X, target, n_folds, seed,
                                       n_jobs=n_jobs, cluster=cluster), floor)
    q_adapt, adapt_cells, rows_adapt = calibrate_scores(residual / sigma, X, schema, groups,
                                                        level)
    adapt_groups = coverage_by_group(y, oof - rows_adapt * sigma, oof + rows_adapt * sigma, X,
                                     oof, schema)
    gaps = {"adaptive": worst_gap(adapt_groups, level), "constant": worst_gap(const_groups, level)}
    difficulty = difficulty_model(schema, seed).fit(X, target)
    # The constant variant keeps the fitted difficulty model too (unused by its bounds): the
    # saved interval model then always has the same files.
    return {"adaptive": IntervalModel(level, "adaptive", q_adapt, floor, difficulty, gaps,
                                      adapt_cells),
            "constant": IntervalModel(level, "constant", q_const, 0.0, difficulty, gaps,
                                      const_cells)}


def choose(variants: dict[str, IntervalModel]) -> IntervalModel:
    """The variant with the smaller worst-group gap; constant width on a tie."""
    gaps = variants["constant"].worst_gap
    return variants["adaptive" if gaps["adaptive"] < gaps["constant"] else "constant"]


def fit_intervals(X: pd.DataFrame, y: pd.Series, oof: Any, schema: FeatureSchema, level: float,
                  n_folds: int, seed: int, groups: Sequence[str] = (), n_jobs: int | None = 1,
                  cluster: str | None = None) -> IntervalModel:
    """Calibrate both variants (Mondrian over the cells of `groups` when given: q per cell,
    the pooled q for a cell too small or a level unseen) and keep the one better calibrated
    per group. The σ folds run as oof_predictions' (n_jobs, cluster)."""
    return choose(fit_both(X, y, oof, schema, level, n_folds, seed, groups, n_jobs, cluster))


def interval_report(model: IntervalModel, y: Any, lower: Any, upper: Any
                    ) -> dict[str, Any]:
    """metrics.json's flat interval keys on the test split."""
    width = np.asarray(upper) - np.asarray(lower)
    return {
        "interval.level": model.level,
        "interval.coverage": round(float(covered(y, lower, upper).mean()), 6),
        "interval.mean_width": round(float(width.mean()), 6),
        "interval.method": model.method,
    }


def save_interval_model(model: IntervalModel, directory: Path) -> None:
    """models/interval/: the difficulty pipeline (skops, as a tuned model is saved) and the
    interval's numbers in meta.json, unrounded (the export builds the graph from them)."""
    from medcast.models.io import save_model

    meta = {"level": model.level, "method": model.method, "q": model.q, "floor": model.floor,
            "worst_gap": model.worst_gap}
    if model.cells is not None:  # Mondrian (without: the same bytes as before groups existed)
        meta["cells"] = model.cells.to_dict()
    save_model(model.difficulty, directory, meta)


def load_interval_model(directory: Path) -> IntervalModel:
    """What save_interval_model wrote (only allow-listed types are loaded)."""
    from medcast.models.io import load_meta, load_model

    meta = load_meta(directory)
    return IntervalModel(level=meta["level"], method=meta["method"], q=meta["q"],
                         floor=meta["floor"], difficulty=load_model(directory),
                         worst_gap=meta.get("worst_gap", {}),
                         cells=Cells.from_dict(meta["cells"]) if meta.get("cells") else None)
