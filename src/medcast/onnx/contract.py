"""The feed contract of an exported medcast graph, shared by the export, its parity check and
the service (serve/model.py). NumPy only, so that serving stays light.

* one input per feature, named exactly like the feature (dots and spaces included), shape
  [N, 1]: float32 for numeric features (int ones included), string for categorical ones;
* a missing value is NaN (numbers) or the empty string (categories): the graph imputes it as
  the pipeline does (median + indicator, the "(missing)" level);
* one output, `prediction`, shape [N, 1], float32, in target units; a graph exported with
  intervals (medcast.onnx.bounds) also has `lower` and `upper`, same shape and type: the
  bounds of the conformal prediction interval at the level its model card states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

OUTPUT_NAME = "prediction"
# Inside the graph (medcast.onnx.export.decimal_nodes): the nodes that turn each float32 numeric
# input into the double a CSV parser would give are named with this prefix, and the double of
# feature F is the tensor F + DOUBLE_SUFFIX (medcast.onnx.cut splits the graph there).
DECIMAL_PREFIX = "medcast_in_"
DOUBLE_SUFFIX = "__f64"
INTERVAL_OUTPUTS = ("lower", "upper")  # the interval's bounds, beside `prediction`
MISSING_TEXT = ""  # a missing category, as fed to the graph
# ONNX Runtime's name of each feature type's input tensor.
ORT_TYPES = {"int": "tensor(float)", "float": "tensor(float)", "category": "tensor(string)"}


def is_text(feature_type: str) -> bool:
    return feature_type == "category"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def column(values: Sequence[Any], feature_type: str) -> np.ndarray:
    """The [N, 1] input of one feature from its values; None or NaN is a missing value."""
    if is_text(feature_type):
        text = [MISSING_TEXT if _missing(v) else str(v) for v in values]
        return np.array(text, dtype=object).reshape(-1, 1)
    return np.array(values, dtype=np.float32).reshape(-1, 1)  # None → NaN


def feed(features: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
         ) -> dict[str, np.ndarray]:
    """The graph's inputs for rows given as tuples in feature order; `features` is
    [(name, type), ...] in that order."""
    if len(rows) == 1:  # the service's hot path: one patient, no transposition
        row = rows[0]
        out = {}
        for i, (name, kind) in enumerate(features):
            value = row[i]
            if kind == "category":
                out[name] = np.array([[MISSING_TEXT if _missing(value) else str(value)]],
                                     dtype=object)
            else:
                out[name] = np.array([[value]], dtype=np.float32)  # None → NaN
        return out
    columns = list(zip(*rows, strict=True))
    return {name: column(columns[i], kind) for i, (name, kind) in enumerate(features)}
