"""medcast.selection: comparisons with the best and the null model on paired folds, the
selection rules and the signal, checked against direct computations of the corrected
resampled t-test (Nadeau & Bengio 2003)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medcast.selection import Signal, compare_all, fold_sizes, select


def folds_of(rmse: dict[str, list[float]], folds: int = 5) -> pd.DataFrame:
    """A long cv_scores table: one row per model, repeat and fold (r2 unused here)."""
    rows = []
    for model, values in rmse.items():
        for k, v in enumerate(values):
            rows.append({"model": model, "repeat": k // folds, "fold": k % folds, "rmse": v,
                         "r2": 0.0, "mae": v})
    return pd.DataFrame(rows)


def corrected_interval(d: np.ndarray, n_fit: int, n_val: int) -> tuple[float, float]:
    se = math.sqrt((1 / len(d) + n_val / n_fit) * d.var(ddof=1))
    half = stats.t.ppf(0.975, len(d) - 1) * se
    return d.mean() - half, d.mean() + half


RNG = np.random.default_rng(3)
BASE = 50 + RNG.normal(0, 2, 10)
SCORES = {"mean": list(BASE + 20 + RNG.normal(0, 1, 10)),
          "linear": list(BASE + 0.2 + RNG.normal(0, 0.3, 10)),
          "spline_ridge": list(BASE),
          "random_forest": list(BASE + 3 + RNG.normal(0, 0.5, 10))}


def means(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {m: {"rmse": g["rmse"].mean(), "r2": 0.4} for m, g in table.groupby("model")}


def test_fold_sizes_are_the_fit_and_validation_rows_of_one_fold():
    assert fold_sizes(353, 5) == (283, 70)


def test_comparisons_match_a_direct_corrected_t_interval():
    table = folds_of(SCORES)
    out = compare_all(table, "spline_ridge", 283, 70)
    d = np.array(SCORES["linear"]) - np.array(SCORES["spline_ridge"])
    low, high = corrected_interval(d, 283, 70)
    assert out["linear"]["vs_best"] == pytest.approx(d.mean())
    assert (out["linear"]["vs_best_low"], out["linear"]["vs_best_high"]) == \
        (pytest.approx(low), pytest.approx(high))
    d_null = np.array(SCORES["linear"]) - np.array(SCORES["mean"])
    assert out["linear"]["vs_null"] == pytest.approx(d_null.mean())
    assert "vs_best" not in out["spline_ridge"] and "vs_null" not in out["mean"]


def test_an_expensive_candidate_is_compared_on_the_folds_it_ran():
    scores = {**SCORES, "mlp": list(BASE[:5] + 1.0)}  # the first repeat only
    out = compare_all(folds_of(scores), "spline_ridge", 283, 70)
    d = np.full(5, 1.0)
    assert out["mlp"]["vs_best"] == pytest.approx(1.0)
    assert out["mlp"]["vs_best_low"] == out["mlp"]["vs_best_high"] == pytest.approx(d.mean())


def test_best_rule_takes_the_lowest_mean_and_one_se_the_simplest_within_one_se():
    table = folds_of(SCORES)
    eligible = ["linear", "spline_ridge", "random_forest"]
    best = select(table, means(table), eligible, "best", None, 283, 70)
    assert best.model == "spline_ridge" and best.reason == "best mean CV RMSE"
    simple = select(table, means(table), eligible, "one_se", None, 283, 70)
    assert simple.model == "linear" and "within one standard error" in simple.reason
    forced = select(table, means(table), eligible, "one_se", "random_forest", 283, 70)
    assert forced.model == "random_forest" and forced.reason == "forced by train.select"
    assert best.signal.best == simple.signal.best == "spline_ridge"


def test_the_null_model_is_never_selected_even_when_it_is_best():
    table = folds_of({"mean": [40.0] * 10, "linear": [50.0 + k for k in range(10)]})
    chosen = select(table, {"mean": {"rmse": 40.0, "r2": 0.0}, "linear": {"rmse": 54.5, "r2": -0.2}},
                    ["linear"], "best", None, 100, 25)
    assert chosen.model == "linear" and not chosen.signal.signal


def test_no_signal_when_the_interval_to_the_null_reaches_zero_or_cv_r2_is_not_positive():
    noisy = {"mean": [60 + (-1) ** k * 3 for k in range(10)], "linear": [60.5] * 10}
    table = folds_of(noisy)
    s = select(table, {"mean": {"rmse": 60.0, "r2": 0.0}, "linear": {"rmse": 60.5, "r2": 0.01}},
               ["linear"], "best", None, 400, 100).signal
    assert s.low < 0 < s.high and not s.signal
    assert s.line("y").startswith("no candidate beats the mean: the best, linear,")
    clear = Signal(True, "linear", 0.3, -5.0, -7.0, -3.0, 60.0)
    assert clear.signal and "better than its training mean" in clear.line("y")
    table = folds_of({"mean": [60.0 + k for k in range(10)], "linear": [55.0 + k for k in range(10)]})
    s = select(table, {"mean": {"rmse": 64.5, "r2": 0.0}, "linear": {"rmse": 59.5, "r2": -0.01}},
               ["linear"], "best", None, 400, 100).signal
    assert s.high < 0 and not s.signal  # better than the mean, yet CV R² ≤ 0
