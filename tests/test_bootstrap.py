"""medcast.bootstrap against independent computations: the optimism of OLS by a direct NumPy
lstsq loop, the corrected R² against R² on fresh data from the same population, OLS's exact
apparent calibration, MAPE by a double loop, and the coverage of the test-set intervals in a
simulation. (The module is imported whole: its `test_intervals` is not a test.)"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from medcast import bootstrap

BETA = np.array([1.0, -0.5, 0.25, 0.0, 0.8])


def population(n: int, seed: int, p: int = 5, noise: float = 1.0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"x{k}" for k in range(p)])
    y = 3.0 + X.to_numpy() @ np.resize(BETA, p) + rng.normal(0, noise, n)
    return X, pd.Series(y, name="y")


def ols_performance(X: np.ndarray, y: np.ndarray, rows: np.ndarray) -> tuple[dict, dict]:
    """Fit by numpy.linalg.lstsq on rows; r2, rmse, mae, calibration slope and intercept (by
    numpy.polyfit) on those rows and on all rows: an implementation shared with nothing."""
    A = np.c_[np.ones(len(X)), X]
    coef = np.linalg.lstsq(A[rows], y[rows], rcond=None)[0]
    pred = A @ coef

    def perf(yy, pp):
        slope, intercept = np.polyfit(pp, yy, 1)
        return {"r2": 1 - np.sum((yy - pp) ** 2) / np.sum((yy - yy.mean()) ** 2),
                "rmse": np.sqrt(np.mean((yy - pp) ** 2)), "mae": np.mean(np.abs(yy - pp)),
                "cal_slope": slope, "cal_intercept": intercept}

    return perf(y[rows], pred[rows]), perf(y, pred)


def test_resamples_are_seeded_per_draw_and_stable_when_n_boot_grows():
    few, more = bootstrap.resamples(50, 3, seed=7), bootstrap.resamples(50, 10, seed=7)
    for a, b in zip(few, more[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(more[4], np.random.default_rng([7, 4]).integers(0, 50, 50))
    assert not np.array_equal(more[0], bootstrap.resamples(50, 1, seed=8)[0])
    assert all(len(r) == 50 and r.min() >= 0 and r.max() < 50 for r in more)


def test_ols_optimism_equals_a_direct_lstsq_loop():
    X, y = population(80, seed=1)
    n_boot, seed = 30, 11
    tasks = bootstrap.refits(LinearRegression(), X, y, n_boot, seed)
    apparent = bootstrap.performance(y, LinearRegression().fit(X, y).predict(X))
    table = bootstrap.optimism_table(apparent, tasks)
    Xn, yn = X.to_numpy(), y.to_numpy()
    direct = [ols_performance(Xn, yn, np.random.default_rng([seed, b]).integers(0, 80, 80))
              for b in range(n_boot)]
    for m in bootstrap.METRICS:
        optimism = np.mean([train[m] - orig[m] for train, orig in direct])
        assert table.loc[m, "optimism"] == pytest.approx(optimism, abs=1e-10)
        assert table.loc[m, "corrected"] == pytest.approx(apparent[m] - optimism, abs=1e-10)
    assert table.loc["r2", "optimism"] > 0 > table.loc["rmse", "optimism"]  # errors: negative
    assert set(table["n_boot"]) == {n_boot}


def test_apparent_calibration_of_ols_is_exactly_slope_1_and_intercept_0():
    X, y = population(120, seed=2)
    apparent = bootstrap.performance(y, LinearRegression().fit(X, y).predict(X))
    assert apparent["cal_slope"] == pytest.approx(1.0, abs=1e-10)
    assert apparent["cal_intercept"] == pytest.approx(0.0, abs=1e-10)
    for task in bootstrap.refits(LinearRegression(), X, y, 5, seed=3):  # also on each bootstrap sample
        assert task["apparent"]["cal_slope"] == pytest.approx(1.0, abs=1e-10)
        assert task["apparent"]["cal_intercept"] == pytest.approx(0.0, abs=1e-10)


def test_corrected_r2_estimates_the_r2_on_fresh_data_where_the_apparent_one_is_optimistic():
    # 30 development samples of 100 rows, 5 predictors (population R² ≈ 0.6): on average the
    # apparent R² exceeds the R² of the same models on 20,000 fresh rows by ≈ 0.045; Harrell's
    # corrected R² should be off by much less (bootstrap noise: ≈ 0.012 on this average).
    X_new, y_new = population(20_000, seed=999)
    apparent, corrected, fresh = [], [], []
    for s in range(30):
        X, y = population(100, seed=s)
        model = LinearRegression().fit(X, y)
        app = bootstrap.performance(y, model.predict(X))
        table = bootstrap.optimism_table(app, bootstrap.refits(LinearRegression(), X, y, 25, seed=s))
        apparent.append(app["r2"])
        corrected.append(table.loc["r2", "corrected"])
        fresh.append(bootstrap.performance(y_new, model.predict(X_new))["r2"])
    gap_apparent = np.mean(apparent) - np.mean(fresh)
    gap_corrected = np.mean(corrected) - np.mean(fresh)
    assert gap_apparent > 0.03
    assert abs(gap_corrected) < 0.025
    assert abs(gap_corrected) < gap_apparent / 2


def test_corrected_r2_of_a_large_sample_with_few_predictors_is_the_fresh_sample_r2():
    X, y = population(20_000, seed=5, p=3)
    model = LinearRegression().fit(X, y)
    table = bootstrap.optimism_table(bootstrap.performance(y, model.predict(X)),
                                     bootstrap.refits(LinearRegression(), X, y, 20, seed=1))
    X_new, y_new = population(100_000, seed=6, p=3)
    fresh = bootstrap.performance(y_new, model.predict(X_new))["r2"]
    # The sampling SD of R² at n = 20,000 is ≈ 0.005; the optimism itself only ≈ 0.0003.
    assert table.loc["r2", "corrected"] == pytest.approx(fresh, abs=0.015)
    assert 0 < table.loc["r2", "optimism"] < 0.002


def test_refits_give_the_same_bits_in_two_worker_processes():
    X, y = population(60, seed=4)
    X_test, _ = population(7, seed=5)
    here = bootstrap.refits(LinearRegression(), X, y, 4, seed=1, X_test=X_test)
    there = bootstrap.refits(LinearRegression(), X, y, 4, seed=1, X_test=X_test, n_jobs=2)
    for a, b in zip(here, there, strict=True):
        assert a["apparent"] == b["apparent"] and a["original"] == b["original"]
        np.testing.assert_array_equal(a["test_pred"], b["test_pred"])
        assert a["test_pred"].dtype == np.float64 and a["test_pred"].shape == (7,)


def test_stability_mape_and_ranges_equal_a_direct_computation():
    X, y = population(100, seed=6)
    X_test, _ = population(12, seed=7)
    pred = LinearRegression().fit(X, y).predict(X_test)
    tasks = bootstrap.refits(LinearRegression(), X, y, 40, seed=2, X_test=X_test)
    boot = np.stack([t["test_pred"] for t in tasks])
    out = bootstrap.stability(pred, boot)
    total = 0.0
    for b in range(40):
        for i in range(12):
            total += abs(boot[b, i] - pred[i])
    assert out["mape"] == pytest.approx(total / (40 * 12), rel=1e-12)
    for i in range(12):
        column = np.sort(boot[:, i])
        # linear interpolation between order statistics at (40 − 1)·0.025 and (40 − 1)·0.975
        lo = column[0] + 0.975 * (column[1] - column[0])
        hi = column[38] + 0.025 * (column[39] - column[38])
        assert (out["low"][i], out["high"][i]) == pytest.approx((lo, hi), rel=1e-12)
        assert out["mape_by_patient"][i] == pytest.approx(np.mean(np.abs(boot[:, i] - pred[i])))
    with pytest.raises(ValueError, match="n_boot × 12"):
        bootstrap.stability(pred, boot[:, :5])


def test_test_intervals_contain_the_estimate_and_are_reproducible():
    X, y = population(300, seed=8)
    pred = LinearRegression().fit(X, y).predict(X) + 0.3
    point = bootstrap.performance(y, pred)
    first = bootstrap.test_intervals(y, pred, n_boot=400, seed=5)
    assert first == bootstrap.test_intervals(y, pred, n_boot=400, seed=5)
    assert first != bootstrap.test_intervals(y, pred, n_boot=400, seed=6)
    for m in bootstrap.METRICS:
        low, high = first[m]
        assert low < point[m] < high, m
    # OLS's own fitted values shifted up by 0.3: slope exactly 1, intercept exactly −0.3.
    assert (point["cal_slope"], point["cal_intercept"]) == pytest.approx((1.0, -0.3), abs=1e-10)


def test_test_intervals_cover_the_population_values_about_95_percent_of_the_time():
    # y = ŷ + N(0, 1), ŷ ~ N(0, 1) fixed model: population rmse 1, mae √(2/π), R² 1/2,
    # calibration slope 1 and intercept 0.
    truth = {"rmse": 1.0, "mae": math.sqrt(2 / math.pi), "r2": 0.5, "cal_slope": 1.0, "cal_intercept": 0.0}
    hits = dict.fromkeys(truth, 0)
    for s in range(200):
        rng = np.random.default_rng([2024, s])
        pred = rng.normal(size=150)
        y = pred + rng.normal(size=150)
        intervals = bootstrap.test_intervals(y, pred, n_boot=300, seed=s)
        for m, value in truth.items():
            hits[m] += intervals[m][0] <= value <= intervals[m][1]
    coverage = {m: h / 200 for m, h in hits.items()}
    assert all(0.88 <= c <= 0.99 for c in coverage.values()), coverage
