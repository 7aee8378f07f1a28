"""Estimators for tests that need a fit to take time (importable by Dask worker processes)."""

from __future__ import annotations

import time

from sklearn.linear_model import Ridge


class SlowRidge(Ridge):
    """Ridge whose fit sleeps `delay` seconds first (a fold long enough to kill a worker in)."""

    def __init__(self, alpha: float = 1.0, delay: float = 1.0) -> None:
        super().__init__(alpha=alpha)
        self.delay = delay

    def fit(self, X, y, sample_weight=None):  # noqa: ANN001, ANN201 - scikit-learn's signature
        time.sleep(self.delay)
        return super().fit(X, y, sample_weight)
