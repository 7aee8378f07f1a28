"""Mondrian (group-conditional) conformal calibration: the conformal quantile q computed
separately within each cell of a taxonomy of the rows — here the cross of the levels of some
categorical features — so that coverage holds within each cell, not only on average (Vovk,
Gammerman & Shafer, *Algorithmic Learning in a Random World*, 2005, ch. 4; Vovk, Lindsay,
Nouretdinov & Gammerman 2003, "Mondrian confidence machine"; the equalized coverage of Romano,
Barber, Sabatti & Candès 2020, "With malice toward none").

Cells and their levels: a feature's levels are its declared categories, then any other value
seen in the calibration rows (sorted), then "(missing)" when the feature may be missing or is
missing in a row (a missing value is its own level, as the pipeline's imputer makes it). A
value is read as the exported graph receives it (medcast.onnx.contract.column: None/NaN → "",
else its text), and "" is "(missing)". A cell gets its own q when it holds at least
`min_cell_rows(level)` calibration rows: the fewest for which the ⌈(n+1)·level⌉-th smallest
score exists (9 at 90 %, 19 at 95 %), i.e. for which the within-cell guarantee is finite. A
smaller cell, and any row whose level was never seen (a value outside the levels, or
"(missing)" for a feature that never was), gets the pooled q of all rows: no within-cell
guarantee there, only the marginal one. `Cells.pooled` records which cells fell back.

Rows map to cells by one flat index into a table of q's (row-major; each feature has one extra
code, its last, for an unseen level, whose cells hold the pooled q): the exported graph does
the same lookup with LabelEncoder and Gather (medcast.onnx.bounds). NumPy/pandas only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medcast.datasets.spec import MISSING_LEVEL
from medcast.features import FeatureSchema
from medcast.onnx.contract import MISSING_TEXT, column


def conformal_quantile(scores: Any, level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest score (the largest when that exceeds n): with exchangeable
    rows, a new score falls at or below it with probability ≥ level."""
    values = np.sort(np.asarray(scores, dtype=float))
    if not len(values):
        raise ValueError("no residuals to calibrate intervals on")
    if not 0 < level < 1:
        raise ValueError(f"interval level must be between 0 and 1, got {level}")
    k = min(math.ceil((len(values) + 1) * level), len(values))
    return float(values[k - 1])


def min_cell_rows(level: float) -> int:
    """The fewest scores whose conformal quantile (the ⌈(n+1)·level⌉-th smallest) exists: n ≥
    level / (1 − level), computed with the same arithmetic as conformal_quantile."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be between 0 and 1, got {level}")
    n = max(1, math.floor(level / (1 - level)) - 1)
    while math.ceil((n + 1) * level) > n:
        n += 1
    return n


@dataclass(frozen=True)
class Cells:
    """The Mondrian taxonomy of an interval model and its q per cell. Cells are the cross of
    `levels` (one tuple per feature of `groups`), listed row-major (the last feature varies
    fastest); `q`, `n` and `pooled` follow that order."""

    groups: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    q: tuple[float, ...]  # the cell's conformal quantile (the pooled q where `pooled`)
    n: tuple[int, ...]  # calibration rows in the cell
    pooled: tuple[bool, ...]  # too few rows: the pooled q is used

    @property
    def shape(self) -> tuple[int, ...]:
        """Codes per feature: its levels and one more, the last, for an unseen level."""
        return tuple(len(lv) + 1 for lv in self.levels)

    def labels(self) -> list[str]:
        """"sex=1, smoker=yes" per cell, in cell order."""
        return [", ".join(f"{g}={v}" for g, v in zip(self.groups, cell, strict=True))
                for cell in itertools.product(*self.levels)]

    def codes(self, X: pd.DataFrame) -> np.ndarray:
        """Each row's flat index into table() (int64)."""
        return cell_codes(X, self.groups, self.levels)

    def indices(self) -> np.ndarray:
        """Each cell's flat index into table(), in cell order."""
        grid = np.arange(int(np.prod(self.shape))).reshape(self.shape)
        return grid[tuple(slice(0, len(lv)) for lv in self.levels)].reshape(-1)

    def table(self, pooled_q: float) -> np.ndarray:
        """q per flat index: the cells' q, and `pooled_q` wherever a feature's level is unseen."""
        table = np.full(self.shape, float(pooled_q))
        known = tuple(slice(0, len(lv)) for lv in self.levels)
        table[known] = np.reshape(np.asarray(self.q, dtype=float), [len(lv) for lv in self.levels])
        return table.reshape(-1)

    def card(self) -> dict[str, Any]:
        """The model card's view: groups, q and rows per cell by label, the pooled cells."""
        labels = self.labels()
        return {"groups": list(self.groups),
                "cell_q": {k: round(q, 9) for k, q in zip(labels, self.q, strict=True)},
                "cell_n": dict(zip(labels, self.n, strict=True)),
                "pooled_cells": [k for k, p in zip(labels, self.pooled, strict=True) if p]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and unrounded (meta.json: the export builds the graph from it)."""
        return {"groups": list(self.groups), "levels": [list(lv) for lv in self.levels],
                "q": list(self.q), "n": list(self.n), "pooled": list(self.pooled)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cells:
        return cls(tuple(data["groups"]), tuple(tuple(lv) for lv in data["levels"]),
                   tuple(float(q) for q in data["q"]), tuple(int(n) for n in data["n"]),
                   tuple(bool(p) for p in data["pooled"]))


def texts(values: Any) -> list[str]:
    """Values as the graph's string input holds them ("" for a missing one)."""
    return [str(v) for v in column(np.asarray(values, dtype=object), "category").reshape(-1)]


def group_levels(X: pd.DataFrame, schema: FeatureSchema, groups: Sequence[str]
                 ) -> tuple[tuple[str, ...], ...]:
    """Each group feature's levels (see the module docstring). Raises ValueError for a name
    that is not a categorical feature of `schema`."""
    features = {f.name: f for f in schema.features}
    out = []
    for name in groups:
        feature = features.get(name)
        if feature is None or feature.type != "category":
            raise ValueError(f"interval group '{name}' is not a categorical feature (categorical "
                             f"features: {', '.join(schema.categorical) or 'none'})")
        seen = texts(X[name])
        declared = [c for c in (feature.categories or ()) if c != MISSING_LEVEL]
        extra = sorted({v for v in seen if v not in (MISSING_TEXT, MISSING_LEVEL)} - set(declared))
        missing = feature.nullable or any(v in (MISSING_TEXT, MISSING_LEVEL) for v in seen)
        out.append((*declared, *extra, *([MISSING_LEVEL] if missing else [])))
    return tuple(out)


def cell_codes(X: pd.DataFrame, groups: Sequence[str], levels: Sequence[Sequence[str]]
               ) -> np.ndarray:
    """Flat row-major index of each row's cell; a level outside `levels` takes its feature's
    last code (unseen)."""
    flat = np.zeros(len(X), dtype=np.int64)
    for name, lv in zip(groups, levels, strict=True):
        lookup = {v: i for i, v in enumerate(lv)}
        if MISSING_LEVEL in lookup:
            lookup[MISSING_TEXT] = lookup[MISSING_LEVEL]
        code = np.array([lookup.get(v, len(lv)) for v in texts(X[name])], dtype=np.int64)
        flat = flat * (len(lv) + 1) + code
    return flat


def calibrate_cells(scores: Any, X: pd.DataFrame, schema: FeatureSchema, groups: Sequence[str],
                    level: float, pooled_q: float) -> Cells:
    """q per cell of `groups` from the calibration rows' conformity `scores` (one per row of
    X): the conformal quantile of the cell's scores, or `pooled_q` for a cell of fewer than
    min_cell_rows(level) rows."""
    scores = np.asarray(scores, dtype=float).reshape(-1)
    levels = group_levels(X, schema, groups)
    cells = Cells(tuple(groups), levels, (), (), ())
    codes = cells.codes(X)
    need = min_cell_rows(level)
    q, n, pooled = [], [], []
    for index in cells.indices():
        mine = scores[codes == index]
        small = len(mine) < need
        q.append(float(pooled_q) if small else conformal_quantile(mine, level))
        n.append(len(mine))
        pooled.append(small)
    return Cells(tuple(groups), levels, tuple(q), tuple(n), tuple(pooled))
