"""medcast.calibration against independent computations: the calibration line against
statsmodels' OLS, the decile table against pandas.qcut + groupby and scipy.stats.t.interval,
the LOWESS curve against a hand-written tricube local linear fit (Cleveland 1979) and a line it
must reproduce exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from medcast.calibration import calibration_line, decile_table, quantile_bins, smooth_curve


def sample(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overfitted-looking predictions: too extreme (observed = 1 + 0.7·predicted + noise)."""
    rng = np.random.default_rng(seed)
    pred = rng.gamma(3.0, 2.0, n)
    return 1.0 + 0.7 * pred + rng.normal(0, 1.5, n), pred


def test_calibration_line_matches_statsmodels_ols():
    y, pred = sample()
    fit = sm.OLS(y, sm.add_constant(pred)).fit()
    line = calibration_line(y, pred)
    assert line["intercept"] == pytest.approx(fit.params[0], rel=1e-11)
    assert line["slope"] == pytest.approx(fit.params[1], rel=1e-11)
    assert line["citl"] == pytest.approx(np.mean(y - pred), rel=1e-12)
    assert line["slope"] < 1  # too extreme predictions read as a slope below 1


def test_an_ols_model_is_perfectly_calibrated_on_its_own_training_rows():
    rng = np.random.default_rng(1)
    X = sm.add_constant(rng.normal(size=(200, 3)))
    y = X @ [2.0, 1.0, -1.0, 0.5] + rng.normal(size=200)
    line = calibration_line(y, sm.OLS(y, X).fit().fittedvalues)
    assert line["slope"] == pytest.approx(1.0, abs=1e-12)
    assert line["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert line["citl"] == pytest.approx(0.0, abs=1e-12)


def test_constant_predictions_give_slope_1_and_the_shift_without_nan_or_warning():
    y = np.array([1.0, 2.0, 4.0, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = calibration_line(y, np.full(4, 2.5))
    assert line == {"intercept": 0.5, "slope": 1.0, "citl": 0.5}  # mean(y) − 2.5


def test_calibration_line_rejects_mismatched_or_missing_values():
    with pytest.raises(ValueError, match="one length"):
        calibration_line([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        calibration_line([1.0, np.nan], [1.0, 2.0])


def test_decile_table_matches_pandas_qcut_and_groupby():
    y, pred = sample(1003)
    table = decile_table(y, pred)
    bins = pd.qcut(pred, 10, labels=False, duplicates="drop")
    by = pd.DataFrame({"b": bins, "y": y, "p": pred}).groupby("b")
    assert list(table["bin"]) == list(range(1, 11))
    assert list(table["n"]) == list(by.size())
    np.testing.assert_allclose(table["mean_predicted"], by["p"].mean(), rtol=1e-13)
    np.testing.assert_allclose(table["mean_observed"], by["y"].mean(), rtol=1e-13)
    assert (table["mean_predicted"].diff().dropna() > 0).all()


def test_decile_table_interval_is_scipys_t_interval_of_the_mean():
    y, pred = sample(250, seed=2)
    table = decile_table(y, pred, bins=5, level=0.9)
    bins = pd.qcut(pred, 5, labels=False)
    for k, row in table.iterrows():
        obs = y[bins == k]
        low, high = stats.t.interval(0.9, len(obs) - 1, loc=obs.mean(), scale=stats.sem(obs))
        assert (row.observed_low, row.observed_high) == pytest.approx((low, high), rel=1e-12)


def test_few_distinct_predictions_get_a_bin_each_and_ties_merge_bins_as_in_qcut():
    pred = np.repeat([1.0, 2.0, 3.0], [5, 1, 4])
    y = np.arange(10, dtype=float)
    table = decile_table(y, pred)
    assert list(table["n"]) == [5, 1, 4]
    assert list(table["mean_predicted"]) == [1.0, 2.0, 3.0]
    assert table.loc[1, ["observed_low", "observed_high"]].isna().all()  # one row: no interval
    skewed = np.r_[np.zeros(50), np.arange(1.0, 51.0)]
    expected = pd.qcut(skewed, 10, labels=False, duplicates="drop")
    np.testing.assert_array_equal(quantile_bins(skewed), pd.factorize(expected, sort=True)[0])
    assert quantile_bins(skewed).max() + 1 == 6  # half the rows at 0: four deciles merge into one


def test_smooth_curve_reproduces_a_straight_line_exactly():
    rng = np.random.default_rng(3)
    pred = rng.uniform(0, 10, 500)
    curve = smooth_curve(1.0 + 0.8 * pred, pred)
    assert len(curve) == 100 and curve["predicted"].is_monotonic_increasing
    np.testing.assert_allclose(curve["observed"], 1.0 + 0.8 * curve["predicted"], atol=1e-9)


def test_smooth_curve_is_the_tricube_local_linear_fit_of_cleveland_1979():
    rng = np.random.default_rng(4)
    n, frac = 30, 0.5
    pred = np.sort(rng.uniform(0, 1, n))
    y = np.sin(3 * pred) + rng.normal(0, 0.1, n)
    curve = smooth_curve(y, pred, frac=frac, it=0, delta=0.0, points=n)
    k = int(frac * n)  # each local fit uses the k nearest rows, tricube-weighted

    def local_fit(x0: float) -> float:
        d = np.abs(pred - x0)
        w = np.clip(1 - (d / np.sort(d)[k - 1]) ** 3, 0, None) ** 3
        A = np.c_[np.ones(n), pred]
        beta = np.linalg.solve(A.T @ (w[:, None] * A), A.T @ (w * y))
        return beta[0] + beta[1] * x0

    np.testing.assert_allclose(curve["predicted"], pred)
    np.testing.assert_allclose(curve["observed"], [local_fit(x) for x in pred], rtol=1e-10)


def test_smooth_curve_shows_too_extreme_predictions_below_the_diagonal_at_the_top():
    y, pred = sample(2000, seed=5)
    curve = smooth_curve(y, pred)
    top = curve.iloc[-10:]
    assert (top["observed"] < top["predicted"]).all()
    assert smooth_curve(y, np.full(len(y), 3.0)).to_dict("list") == {"predicted": [3.0],
                                                                     "observed": [y.mean()]}
