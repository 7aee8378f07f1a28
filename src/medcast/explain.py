"""The export's per-patient explanations (issue 25): the background rows the card carries, the
service's explanations of test rows computed exactly as the service computes them, and their
check against an independent reference. Pure functions; medcast.export reads and writes.

* **background** — `export.explain_background` rows of the training split, drawn without
  replacement with seed `cv.seed`, kept in training order; in the card as JSON rows in card
  feature order (numbers as floats, categories as strings, null where missing).
* **served** — medcast.shapley on the exported graph as the service runs it (the same
  medcast.onnx.cut.CutGraph: cut to its `prediction` output and split at its door; fed as
  medcast.onnx.contract says: float32 with NaN, strings with "" for a missing category), with
  the plan the card's budget gives (`shapley.plan(m, explain_coalitions, cv.seed, B)`), one
  graph call per patient: what `POST /predict?explain=true` answers for these rows.
* **check** — the same Shapley values computed two independent ways on the same background:
  medcast.shapley in exact mode (every coalition) on the graph, and `shap`'s ExactExplainer with
  `maskers.Independent` on the native model (the tuned scikit-learn/Keras pipeline), which shap
  feeds its masked rows as numbers (categories as level codes) that `native_predict` turns back
  into a DataFrame with the training dtypes. The largest difference, contributions and base
  value alike, must be ≤ 1e-3 × the training target's standard deviation, else ArtifactError.
  It catches a graph that differs from the model off the data (coalition rows mix patients),
  a background whose card rows are not the training rows, and a wrong feed or Shapley sum.
  For a sampling plan, `margin_coverage` is the share of served contributions within their
  stated 95 % margin of the exact ones (plus the graph's float32 rounding: `slack`).
* **more than 12 features** — exact enumeration costs 2^m coalitions per background row (2^13 ×
  50 = 409,600 model rows per patient), so neither side can be exact over every feature. Then
  each compared row is checked on a seeded subset of 12 of its features (every feature is
  in some row's subset), the others held at the patient's own values on both sides: an exact
  Shapley game of 12 players, same tolerance. What that leaves unchecked is the sampling
  estimator over all m features (tests/test_shapley.py's business) and `margin_coverage`,
  which is then not measured (absent from the card) and the stage log says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast import shapley
from medcast.errors import ArtifactError
from medcast.features import FeatureSchema
from medcast.metrics import capped

if TYPE_CHECKING:
    from medcast.card import ExplainerCard

EXACT_MAX_FEATURES = 12  # the largest game compared exactly: 2^12 coalitions per background row
# shap's maskers run loops that numba compiles on their first call in a process: about 8 s here
# whatever the work (more under coverage). Run as Python they cost about 0.7 µs per masked
# background row, against 0.1 µs compiled (2 cores, shap 0.51, numba 0.68). A check of fewer
# masked rows than this runs them as Python: at most ~7 s, never slower than the compile alone.
JIT_MIN_MASKED_ROWS = 10_000_000
RTOL = 1e-3  # the check's tolerance, in standard deviations of the training target
VALUE_PREFIX = "value:"  # the explained rows' feature values in reports/explanations.csv

CardRow = list[float | str | None]


def background(train: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` rows of the training features (all of them if fewer), drawn without replacement by
    numpy's default_rng(seed), in training order (metrics.capped)."""
    return train.iloc[capped(np.arange(len(train)), n, seed)]


def card_rows(frame: pd.DataFrame, schema: FeatureSchema) -> list[CardRow]:
    """Rows as the card holds them: card feature order, numbers as float, categories as str,
    None where missing."""
    kinds = [f.type for f in schema.features]
    return [[None if pd.isna(v) else (str(v) if kind == "category" else float(v))
             for v, kind in zip(row, kinds, strict=True)]
            for row in frame[schema.names].itertuples(index=False)]


@dataclass(frozen=True)
class Codes:
    """The numeric matrix shap masks: numbers as float64, a category as its level's index
    (NaN: missing); `frame` turns such rows back into the native model's DataFrame."""

    schema: FeatureSchema
    levels: dict[str, list[str]]  # a category's levels, card order first
    dtypes: dict[str, Any]  # the training split's dtype of each feature

    @classmethod
    def of(cls, schema: FeatureSchema, *frames: pd.DataFrame) -> Codes:
        levels = {}
        for f in schema.features:
            if f.type == "category":
                known = [str(c) for c in f.categories or ()]
                seen = sorted({str(v) for fr in frames for v in fr[f.name].dropna()} - set(known))
                levels[f.name] = known + seen
        return cls(schema, levels, {n: frames[0][n].dtype for n in schema.names})

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.schema.names)), dtype=np.float64)
        for j, name in enumerate(self.schema.names):
            if name in self.levels:
                index = {level: k for k, level in enumerate(self.levels[name])}
                out[:, j] = [np.nan if pd.isna(v) else index[str(v)] for v in frame[name]]
            else:
                out[:, j] = pd.to_numeric(frame[name]).to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def frame(self, matrix: np.ndarray) -> pd.DataFrame:
        data = {}
        for j, name in enumerate(self.schema.names):
            values = matrix[:, j]
            if name in self.levels:
                levels = np.array(self.levels[name] + [None], dtype=object)
                codes = np.where(np.isnan(values), len(levels) - 1, values).astype(np.int64)
                data[name] = pd.Series(levels[codes], dtype=self.dtypes[name])
            else:
                data[name] = pd.Series(values, dtype=self.dtypes[name])
        return pd.DataFrame(data)


def native_predict(estimator: Any, codes: Codes, session: Any = None,
                   ties: list[int] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The model shap explains: shap's masked rows (codes) → DataFrame → the native predict.

    A kNN's prediction is not unique where its k-th and (k+1)-th nearest training points are
    equally far (medcast.onnx.parity.tied_rows): scikit-learn and the graph may count either,
    and both answers are the model's. Coalition rows mix a patient's values with a background
    row's (and a missing value's imputed median), so such ties are common there (9 of 12 rows
    of a generated table had one). On those rows, with `session` (the graph), the reference
    takes the graph's answer, and `ties` counts the calls that had any."""
    from medcast.onnx.parity import tied_rows
    from medcast.onnx.runtime import predict_onnx

    def f(matrix: np.ndarray) -> np.ndarray:
        frame = codes.frame(np.atleast_2d(matrix))
        out = np.asarray(estimator.predict(frame), dtype=np.float64).reshape(-1)
        tied = tied_rows(estimator, frame) if session is not None else None
        if tied is not None and tied.any():
            out[tied] = predict_onnx(session, frame[tied])
            if ties is not None:
                ties.append(int(tied.sum()))
        return out

    return f


def compared_features(m: int, n_rows: int, seed: int) -> list[np.ndarray]:
    """Per compared row, the features whose Shapley game is computed exactly: all of them up
    to EXACT_MAX_FEATURES; above, a seeded subset of that many (sorted), every feature in turn
    first so that each one is checked."""
    if m <= EXACT_MAX_FEATURES:
        return [np.arange(m)] * n_rows
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_rows):
        first = i % m
        others = rng.choice(np.delete(np.arange(m), first), EXACT_MAX_FEATURES - 1, replace=False)
        out.append(np.sort(np.append(others, first)))
    return out


def _sub_predict(predict: shapley.Predict, x: list[Any], dtypes: list[Any], free: np.ndarray
                 ) -> shapley.Predict:
    """`predict` of a game on the features `free`: the others held at the patient's values."""
    if len(free) == len(x):
        return predict

    def sub(columns: list[np.ndarray]) -> np.ndarray:
        n = len(columns[0])
        full = [np.full(n, v, dtype=dtype) for v, dtype in zip(x, dtypes, strict=True)]
        for j, col in zip(free, columns, strict=True):
            full[j] = col
        return predict(full)

    return sub


def _sub_native(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, free: np.ndarray
                ) -> Callable[[np.ndarray], np.ndarray]:
    if len(free) == len(x):
        return f

    def sub(matrix: np.ndarray) -> np.ndarray:
        full = np.tile(x, (len(matrix), 1))
        full[:, free] = matrix
        return f(full)

    return sub


def reference_values(estimator: Any, codes: Codes, rows: pd.DataFrame, bg: pd.DataFrame,
                     free: list[np.ndarray], session: Any = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """shap's ExactExplainer (maskers.Independent on every background row) on the native
    model: per row, its base value then the contributions of its `free` features; and per row
    whether a kNN tie in one of its coalition rows took the graph's answer (native_predict)."""
    import shap

    x_codes, bg_codes = codes.encode(rows), codes.encode(bg)
    out, tied = [], []
    for x, keep in zip(x_codes, free, strict=True):
        ties: list[int] = []
        f = native_predict(estimator, codes, session, ties)
        masker = shap.maskers.Independent(bg_codes[:, keep], max_samples=len(bg_codes))
        explainer = shap.ExactExplainer(_sub_native(f, x, keep), masker)
        e = explainer(x[keep][None, :], max_evals=2 ** len(keep), silent=True)
        out.append(np.concatenate([np.ravel(e.base_values)[:1], np.ravel(e.values)]))
        tied.append(bool(ties))
    return np.array(out), np.array(tied, dtype=bool)


def masked_rows(free: list[np.ndarray], n_background: int) -> int:
    """The background rows shap's ExactExplainer masks for the check: every coalition of each
    row's compared features, on every background row."""
    return sum(2 ** len(keep) for keep in free) * n_background


def import_shap(masked: int) -> Any:
    """shap, its numba loops compiled only if the check masks at least JIT_MIN_MASKED_ROWS
    rows. numba reads its DISABLE_JIT setting (the documented NUMBA_DISABLE_JIT) when a
    function is decorated, that is on shap's import; the setting is restored at once. A shap
    imported before in this process is returned as it is."""
    import sys

    if "shap" in sys.modules:
        return sys.modules["shap"]
    from numba.core import config

    previous = config.DISABLE_JIT
    config.DISABLE_JIT = masked < JIT_MIN_MASKED_ROWS
    try:
        import shap
    finally:
        config.DISABLE_JIT = previous
    return shap


def exact_values(predict: shapley.Predict, xs: list[list[Any]], columns: list[np.ndarray],
                 free: list[np.ndarray]) -> np.ndarray:
    """medcast.shapley in exact mode on the graph: per row, base value and contributions of
    its `free` features."""
    out = []
    for x, keep in zip(xs, free, strict=True):
        plan = shapley.plan(len(keep), 2 ** len(keep), 0)
        dtypes = [c.dtype for c in columns]
        e = shapley.explain(_sub_predict(predict, x, dtypes, keep), [x[j] for j in keep],
                            [columns[j] for j in keep], plan)
        out.append(np.concatenate([[e.base_value], e.contributions]))
    return np.array(out)


@dataclass(frozen=True)
class Explained:
    """What the export keeps of the explanations: the card's explainer and the table of
    reports/explanations.csv."""

    card: ExplainerCard
    table: pd.DataFrame


def explain_and_check(graph: bytes, estimator: Any, schema: FeatureSchema, rows: pd.DataFrame,
                      bg: pd.DataFrame, coalitions: int, seed: int, target_sd: float,
                      graph_background: Sequence[CardRow] | None = None) -> Explained:
    """Explain `rows` (test rows) as the service will and check the exact values against shap
    (module docstring). `bg` is the background as training rows: shap takes them as they are,
    the graph as the card's rows (`graph_background` replaces those: tests give wrong ones).
    Raises ArtifactError when the check fails."""
    from medcast.card import ExplainerCard, ExplainerCheck
    from medcast.onnx.cut import CutGraph
    from medcast.onnx.runtime import batch_rows, inference_session

    m = len(schema.names)
    bg_rows = card_rows(bg, schema)
    graph_model = CutGraph.of(graph, [(f.name, f.type) for f in schema.features],
                              inference_session)
    columns = graph_model.columns(bg_rows if graph_background is None else graph_background)
    served_plan = shapley.plan(m, coalitions, seed, len(bg_rows))
    xs = [graph_model.patient(r) for r in card_rows(rows, schema)]
    served_predict = graph_model.predict()
    served = [shapley.explain(served_predict, x, columns, served_plan) for x in xs]

    free = compared_features(m, len(rows), seed)
    shap = import_shap(masked_rows(free, len(bg)))
    subset = m > EXACT_MAX_FEATURES
    if served_plan.method == "exact" and not subset:  # every coalition already, as served
        exact = np.array([[e.base_value, *e.contributions] for e in served])
    else:
        exact = exact_values(graph_model.predict(batch_rows(graph)), xs, columns, free)
    reference, tied = reference_values(estimator, Codes.of(schema, rows, bg), rows, bg, free,
                                       inference_session(graph))
    tolerance = RTOL * target_sd
    diff = np.abs(exact - reference)
    diff[~np.isfinite(exact) | ~np.isfinite(reference)] = np.inf
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    max_diff = float(diff[worst])
    what = (f"shap {shap.__version__} ExactExplainer, maskers.Independent"
            + (f", on {EXACT_MAX_FEATURES} of the {m} features per row (the rest held at the "
               "patient's values)" if subset else ""))
    if not max_diff <= tolerance:
        i, k = int(worst[0]), int(worst[1])
        name = "the base value" if k == 0 else f"feature '{schema.names[free[i][k - 1]]}'"
        raise ArtifactError(
            f"explanations differ from {what} on the native model: test row index "
            f"{rows.index[i]}, {name}: {exact[i, k]:.6g} from the graph (medcast.shapley, "
            f"exact), {reference[i, k]:.6g} from shap (|difference| {max_diff:.3g} > "
            f"{tolerance:.3g}, {RTOL:g} × the target's standard deviation; "
            f"{int((diff > tolerance).sum())} values over): the graph, the card's background "
            "or the explanation code is wrong")

    coverage = None
    if served_plan.method == "sampling" and not subset:
        phi = np.array([e.contributions for e in served])
        margin = np.array([e.margin for e in served])
        inside = np.abs(phi - exact[:, 1:]) <= margin + slack(served, target_sd)
        coverage = round(float(inside.mean()), 4)
    n_tied = int(tied.sum())
    check = ExplainerCheck(reference=what, n=len(rows),
                           max_abs_diff=float(f"{max_diff:.4g}"),
                           tolerance=float(f"{tolerance:.4g}"), margin_coverage=coverage,
                           n_tied=n_tied or None)
    card = ExplainerCard(background=bg_rows, coalitions=coalitions, seed=seed,
                         method=served_plan.method, check=check)
    return Explained(card, explanations_table(rows, served, schema))


def slack(served: Sequence[shapley.Explanation], target_sd: float) -> float:
    """What a served contribution may differ from the exact one beyond its margin: the graph's
    float32 rounding (4 units in the last place of the largest |prediction|; a model without
    interactions of three or more features has margin 0, and its two computations differ by
    rounding alone), and at least 1e-9 × the target's standard deviation."""
    largest = max((abs(e.prediction) for e in served), default=0.0)
    return max(1e-9 * target_sd, 4 * float(np.finfo(np.float32).eps) * largest)


def explanations_table(rows: pd.DataFrame, served: Sequence[shapley.Explanation],
                       schema: FeatureSchema) -> pd.DataFrame:
    """reports/explanations.csv: per explained row, each feature's contribution (column named
    like the feature), base_value, prediction, then the feature values (`value:<name>`)."""
    names = schema.names
    table = pd.DataFrame([e.contributions for e in served], columns=names, dtype=np.float64)
    table["base_value"] = [e.base_value for e in served]
    table["prediction"] = [e.prediction for e in served]
    values = rows[names].reset_index(drop=True)
    values.columns = [VALUE_PREFIX + n for n in names]
    return pd.concat([table, values], axis=1)


def describe(card: ExplainerCard, m: int) -> str:
    """The stage log's line about the check."""
    c = card.check
    assert c is not None
    line = (f"explanations ({card.method}, {len(card.background)} background rows) checked on "
            f"{c.n} test rows against {c.reference}: max |difference| {c.max_abs_diff:.3g} "
            f"(limit {c.tolerance:.3g})")
    if c.n_tied:
        line += (f"; on {c.n_tied} rows a coalition tied at the model's k-th neighbour, where "
                 "shap's side took the graph's neighbour (either is the model's)")
    if c.margin_coverage is not None:
        line += f"; {c.margin_coverage:.1%} of the served contributions within their 95 % margin"
    elif card.method == "sampling":
        line += (f"; the sampling margin's coverage is not measured with {m} features "
                 f"(exact values of all of them would cost 2^{m} coalitions per row)")
    return line


LOW_COVERAGE = 0.9  # below it, the stage warns that the stated margins are too narrow


def coverage_warning(card: ExplainerCard) -> str | None:
    """The stage's warning when the served sampling margins cover clearly less than 95 % of
    the exact contributions on the checked rows (few pairs of orders per background row and
    skewed marginal contributions: docs/explanations.md), else None."""
    coverage = card.check.margin_coverage if card.check is not None else None
    if coverage is None or coverage >= LOW_COVERAGE:
        return None
    return (f"the served explanations' 95 % margins held only {coverage:.1%} of the exact "
            "contributions on the checked test rows: the stated error is too small for this "
            "model; raise export.explain_coalitions (more orders per background row) or lower "
            "export.explain_background")


def mean_abs(table: pd.DataFrame) -> pd.Series:
    """Mean |contribution| per feature of reports/explanations.csv, largest first."""
    features = [c for c in table.columns if not c.startswith(VALUE_PREFIX)
                and c not in ("base_value", "prediction")]
    return table[features].abs().mean().sort_values(ascending=False, kind="stable")
