from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medcast.metrics import cross_validate, scores, summarize


def test_scores_match_definitions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 6.0])
    s = scores(y, p)
    assert s["rmse"] == pytest.approx(1.0)
    assert s["mae"] == pytest.approx(0.5)
    assert s["r2"] == pytest.approx(1 - 4 / 5)


def test_summarize_mean_and_std():
    out = summarize([{"r2": 0.4, "rmse": 2.0, "mae": 1.0}, {"r2": 0.6, "rmse": 4.0, "mae": 3.0}])
    assert out["r2"] == pytest.approx(0.5)
    assert out["rmse_std"] == pytest.approx(1.0)
    assert list(out) == ["r2", "rmse", "mae", "r2_std", "rmse_std", "mae_std"]  # metrics.json order


def test_cross_validate_is_seeded_and_uses_every_fold():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=list("abc"))
    y = pd.Series(X["a"] * 2 + rng.normal(size=60))
    seen = []
    a = cross_validate(LinearRegression(), X, y, 5, seed=1, on_fold=lambda k, f: seen.append(k))
    b = cross_validate(LinearRegression(), X, y, 5, seed=1)
    c = cross_validate(LinearRegression(), X, y, 5, seed=2)
    assert seen == [0, 1, 2, 3, 4]
    assert a == b
    assert a != c
    assert all(math.isfinite(f["rmse"]) for f in a)


def test_cross_validate_in_two_processes_scores_as_in_one_and_stops_when_told():
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=list("abc"))
    y = pd.Series(X["a"] * 2 + rng.normal(size=80))
    forest = RandomForestRegressor(n_estimators=10, random_state=0)
    assert cross_validate(forest, X, y, 4, seed=1, n_jobs=2) == cross_validate(forest, X, y, 4, 1)

    seen = []

    def stop_after_two(k, folds):
        seen.append(k)
        if k == 1:
            raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        cross_validate(forest, X, y, 4, seed=1, on_fold=stop_after_two, n_jobs=2)
    assert seen == [0, 1]  # in fold order, whatever finished first


def test_capped_rows_are_a_seeded_subset_in_order():
    from medcast.metrics import capped

    rows = np.arange(100, 200)
    assert capped(rows, None, 0, 0) is not None and len(capped(rows, None, 0, 0)) == 100
    a, b = capped(rows, 10, 0, 1), capped(rows, 10, 0, 1)
    assert len(a) == 10 and list(a) == sorted(a) and set(a) <= set(rows)
    assert list(a) == list(b) and list(a) != list(capped(rows, 10, 0, 2))


def test_capped_without_a_fold_is_the_single_seed_draw():
    """k=None (a stage's one sample) is numpy's default_rng(seed) draw, sorted: the stream the
    permutation sample, the bootstrap's and the explainer's background were drawn with before
    they shared capped, so the artifacts they fed are unchanged."""
    from medcast.metrics import capped

    rows = np.arange(5000)
    expected = np.sort(np.random.default_rng(7).choice(5000, 200, replace=False))
    assert list(capped(rows, 200, 7)) == list(expected)
    assert list(capped(rows, 200, 7)) != list(capped(rows, 200, 7, 1))
    assert list(capped(rows, 5000, 7)) == list(rows)
