"""A synthetic heteroscedastic table for the interval tests (tests/test_intervals.py,
tests/test_evaluate.py): y = 2x + noise, the noise 8 times larger in one group."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medcast.features import Feature, FeatureSchema, typed

SCHEMA = FeatureSchema("synthetic", "y", "units", (
    Feature("x", "float", None, -10, 10),
    Feature("group", "category", None, categories=("calm", "wild")),
))


def heteroscedastic(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """y = 2x + noise, the noise 8 times larger in group "wild" (a fifth of the rows), as
    smokers' costs are in insurance."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n).round(3)
    wild = rng.random(n) < 0.2
    y = 2 * x + rng.normal(0, 1, n) * np.where(wild, 8.0, 1.0)
    X = typed(pd.DataFrame({"x": x, "group": np.where(wild, "wild", "calm")}), SCHEMA)
    return X, pd.Series(y, name="y")
