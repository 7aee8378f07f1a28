"""medcast.subgroups against a direct per-level computation: scikit-learn's metrics per level and
a plain loop over the same seeded within-level resamples; edge cases (a one-row level, a
constant outcome, missing values) and the stability of a level's interval."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from medcast.subgroups import subgroup_table


def crc(text: str) -> int:
    return zlib.crc32(text.encode())


def sample(n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n)
    site = pd.Series(rng.choice(["A", "B", "C"], n), dtype=object)
    site[rng.random(n) < 0.1] = None
    pred = rng.normal(50, 10, n)
    y = pred + np.where(sex == "male", 3.0, 0.0) + rng.normal(0, 5, n)
    groups = pd.DataFrame({"sex": sex, "site": site.to_numpy()}, index=np.arange(1000, 1000 + n))
    return y, pred, pred - 8, pred + 8, groups


def direct(y, pred, lower, upper):
    return {"r2": r2_score(y, pred), "rmse": math.sqrt(mean_squared_error(y, pred)),
            "mae": mean_absolute_error(y, pred), "citl": float(np.mean(y - pred)),
            "coverage": float(np.mean((y >= lower) & (y <= upper)))}


def test_subgroup_table_matches_sklearn_per_level_and_a_direct_bootstrap_loop():
    y, pred, lower, upper = data = sample()[:4]
    groups = sample()[4]
    table = subgroup_table(*data, groups, n_boot=200, seed=3)
    assert list(zip(table.feature, table.level, strict=True)) == [
        ("sex", "female"), ("sex", "male"), ("site", "A"), ("site", "B"), ("site", "C"),
        ("site", "(missing)")]
    for _, row in table.iterrows():
        values = groups[row.feature].to_numpy()
        mask = pd.isna(values) if row.level == "(missing)" else values == row.level
        assert row.n == mask.sum()
        part = [a[mask] for a in (y, pred, lower, upper)]
        expected = direct(*part)
        boot = {m: [] for m in expected}
        for b in range(200):
            rows = np.random.default_rng([3, crc(row.feature), crc(row.level), b]).integers(0, row.n, row.n)
            for m, v in direct(*(a[rows] for a in part)).items():
                boot[m].append(v)
        for m, value in expected.items():
            assert row[m] == pytest.approx(value, rel=1e-10), (row.level, m)
            low, high = np.quantile(boot[m], [0.025, 0.975])
            assert (row[f"{m}_low"], row[f"{m}_high"]) == pytest.approx((low, high), rel=1e-9), m
    males = table.set_index("level").loc["male"]
    assert males.citl_low > 0  # males' outcomes run 3 above the predictions: the interval says so


def test_a_one_row_level_gets_metrics_but_no_intervals_and_a_constant_level_no_r2():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0])
    pred = np.array([1.5, 2.0, 2.5, 4.5, 4.0, 5.5, 6.0])
    group = pd.DataFrame({"g": ["one", "many", "many", "many", "flat", "flat", "flat"]})
    table = subgroup_table(y, pred, pred - 1, pred + 1, group, n_boot=50, seed=0).set_index("level")
    one = table.loc["one"]
    assert (one.n, one.rmse, one.mae, one.citl, one.coverage) == (1, 0.5, 0.5, -0.5, 1.0)
    assert math.isnan(one.r2)
    assert one[[c for c in table.columns if c.endswith(("_low", "_high"))]].isna().all()
    flat = table.loc["flat"]
    assert math.isnan(flat.r2) and math.isnan(flat.r2_low) and math.isnan(flat.r2_high)
    assert flat.rmse_low <= flat.rmse <= flat.rmse_high
    many = table.loc["many"]
    assert many.r2 == pytest.approx(r2_score(y[1:4], pred[1:4]))


def test_a_levels_interval_does_not_change_when_columns_or_resamples_are_added():
    y, pred, lower, upper, groups = sample()
    alone = subgroup_table(y, pred, lower, upper, groups[["site"]], n_boot=100, seed=9)
    both = subgroup_table(y, pred, lower, upper, groups, n_boot=100, seed=9)
    pd.testing.assert_frame_equal(alone, both[both.feature == "site"].reset_index(drop=True))
    again = subgroup_table(y, pred, lower, upper, groups, n_boot=100, seed=9)
    pd.testing.assert_frame_equal(both, again)
    other = subgroup_table(y, pred, lower, upper, groups, n_boot=100, seed=10)
    assert not other["rmse_low"].equals(both["rmse_low"])


def test_levels_follow_category_order_and_numbers_sort_as_numbers():
    y, pred, lower, upper, _ = sample(60)
    band = pd.Categorical(np.repeat(["young", "middle", "old"], 20), categories=["young", "middle", "old", "none"])
    code = np.repeat([10, 2, 1], 20)
    table = subgroup_table(y, pred, lower, upper, pd.DataFrame({"band": band, "code": code}), 20, 0)
    assert list(table.level) == ["young", "middle", "old", "1", "2", "10"]  # "none" is empty


def test_subgroup_table_rejects_misaligned_inputs():
    y, pred, lower, upper, groups = sample(20)
    with pytest.raises(ValueError, match="one row per test row"):
        subgroup_table(y[:-1], pred[:-1], lower[:-1], upper[:-1], groups, 10, 0)
