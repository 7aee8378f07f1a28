"""medcast.compare against independent computations: the corrected resampled t-test (Nadeau &
Bengio 2003) by hand with exact fractions and scipy.stats.t, the uncorrected case against
scipy.stats.ttest_1samp, paired comparisons against a per-fold loop, and the one-SE rule."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medcast.compare import corrected_ttest, one_se_choice, paired_comparisons

# Ten 10-fold differences (J = 10, n_train = 90, n_test = 10): small enough to check by hand.
D = ["0.3", "-0.1", "0.5", "0.2", "0.4", "0.1", "0.0", "0.6", "0.2", "0.3"]


def fold_table(means: dict[str, float], noise: float, repeats: int = 3, folds: int = 5,
               seed: int = 0) -> pd.DataFrame:
    """Per-(repeat, fold) scores of each model: its mean plus shared fold noise (the folds
    are the same for every model) plus a little of its own."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, noise, repeats * folds)
    rows = []
    for model, mean in means.items():
        own = rng.normal(0, noise / 4, repeats * folds)
        for k in range(repeats * folds):
            rows.append({"model": model, "repeat": k // folds, "fold": k % folds,
                         "rmse": mean + shared[k] + own[k]})
    return pd.DataFrame(rows)


def test_corrected_ttest_matches_a_hand_computation_with_exact_fractions():
    d = [Fraction(x) for x in D]
    j = len(d)
    mean = sum(d) / j  # 1/4
    variance = sum((x - mean) ** 2 for x in d) / (j - 1)  # 0.425 / 9
    se = math.sqrt(float((Fraction(1, j) + Fraction(10, 90)) * variance))
    t = float(mean) / se
    half = stats.t.ppf(0.975, j - 1) * se
    out = corrected_ttest([float(x) for x in D], n_train=90, n_test=10)
    assert out["mean"] == pytest.approx(0.25, rel=1e-15)
    assert out["se"] == pytest.approx(se, rel=1e-14)
    assert out["t"] == pytest.approx(t, rel=1e-14)
    assert t == pytest.approx(2.5039, abs=1e-4)  # 0.25 / sqrt(0.425/9 · 19/90)
    assert out["p"] == pytest.approx(2 * stats.t.sf(t, 9), rel=1e-12)
    assert (out["low"], out["high"]) == pytest.approx((0.25 - half, 0.25 + half), rel=1e-13)
    assert (out["df"], out["j"]) == (9, 10)


def test_corrected_ttest_matches_scipy_when_no_correction():
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 0.3, 25)
    out = corrected_ttest(d, n_train=100, n_test=0, level=0.9)
    ref = stats.ttest_1samp(d, 0.0)
    ci = ref.confidence_interval(0.9)
    assert out["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert (out["low"], out["high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_corrected_se_is_the_naive_se_times_sqrt_one_plus_j_times_the_test_train_ratio():
    d = np.random.default_rng(4).normal(0, 1, 30)  # 3 × 10-fold: n_test/n_train = 1/9
    naive = corrected_ttest(d, 90, 0)["se"]
    assert corrected_ttest(d, 90, 10)["se"] == pytest.approx(naive * math.sqrt(1 + 30 / 9), rel=1e-13)


def test_corrected_ttest_with_equal_differences_collapses_without_nan_or_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = corrected_ttest([0.2] * 6, 80, 20)
        zero = corrected_ttest([0.0] * 6, 80, 20)
    assert (same["low"], same["high"], same["se"], same["p"]) == (0.2, 0.2, 0.0, 0.0)
    assert same["t"] == math.inf
    assert (zero["low"], zero["high"], zero["t"], zero["p"]) == (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("args, message", [
    (([0.1], 90, 10), "at least 2"),
    (([0.1, float("nan")], 90, 10), "finite"),
    (([0.1, 0.2], 0, 10), "n_train > 0"),
    (([0.1, 0.2], 90, 10, 1.0), "level"),
])
def test_corrected_ttest_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        corrected_ttest(*args)


def test_paired_comparisons_equal_a_per_fold_loop_and_read_the_sign():
    scores = fold_table({"ridge": 10.0, "forest": 9.0, "knn": 10.05}, noise=0.5)
    table = paired_comparisons(scores, reference="ridge", n_train=80, n_test=20)
    assert list(table["model"]) == ["forest", "knn"]
    for _, row in table.iterrows():
        mine = scores[scores.model == row.model].set_index(["repeat", "fold"])["rmse"]
        ref = scores[scores.model == "ridge"].set_index(["repeat", "fold"])["rmse"]
        diff = (mine - ref.reindex(mine.index)).to_numpy()  # candidate − reference, by hand
        se = math.sqrt((1 / 15 + 20 / 80) * np.var(diff, ddof=1))
        assert row.difference == pytest.approx(diff.mean(), rel=1e-12)
        assert row.se == pytest.approx(se, rel=1e-12)
        assert row.p == pytest.approx(2 * stats.t.sf(abs(diff.mean() / se), 14), rel=1e-9)
    verdicts = dict(zip(table.model, table.verdict, strict=True))
    assert verdicts == {"forest": "better", "knn": "no clear difference"}  # RMSE 1 lower: better
    r2 = scores.assign(r2=-scores["rmse"])  # a score where higher is better: same verdicts
    flipped = paired_comparisons(r2, "ridge", 80, 20, metric="r2", lower_is_better=False)
    assert list(flipped.verdict) == ["better", "no clear difference"]
    assert list(flipped.difference) == pytest.approx(list(-table.difference))


def test_paired_comparisons_refuse_unpaired_folds_and_an_unknown_reference():
    scores = fold_table({"ridge": 10.0, "forest": 9.0}, noise=0.5)
    with pytest.raises(ValueError, match="not scored on the same folds"):
        paired_comparisons(scores.iloc[:-1], "ridge", 80, 20)
    with pytest.raises(ValueError, match="not in fold_scores"):
        paired_comparisons(scores, "lasso", 80, 20)
    with pytest.raises(ValueError, match="more than one row"):
        paired_comparisons(pd.concat([scores, scores.iloc[:1]]), "ridge", 80, 20)


def test_one_se_choice_takes_the_simplest_model_within_one_corrected_se_of_the_best():
    scores = fold_table({"ridge": 10.0, "lasso": 10.6, "forest": 9.9, "boosting": 9.8}, noise=0.5)
    order = ["lasso", "ridge", "forest", "boosting"]  # simplest first
    means = scores.groupby("model")["rmse"].mean()
    best = means[order].idxmin()
    errors = scores.loc[scores.model == best, "rmse"].to_numpy()
    se = math.sqrt((1 / len(errors) + 20 / 80) * errors.var(ddof=1))  # not σ̂/√J
    threshold = means[best] + se
    expected = next(m for m in order if means[m] <= threshold)
    chosen, why = one_se_choice(scores, order, n_train=80, n_test=20)
    assert (chosen, why["best"]) == (expected, best) == ("ridge", "boosting")
    assert why["se"] == pytest.approx(se, rel=1e-12)
    assert why["threshold"] == pytest.approx(threshold, rel=1e-12)
    assert means["lasso"] > threshold  # lasso, though simpler, is too far behind
    # The naive σ̂/√J would be too small to let ridge in: the correction matters here.
    assert means["ridge"] > means[best] + errors.std(ddof=1) / math.sqrt(len(errors))


def test_one_se_choice_ignores_models_outside_order_and_breaks_ties_by_order():
    scores = fold_table({"a": 10.0, "b": 10.0, "c": 5.0}, noise=0.0)
    chosen, why = one_se_choice(scores, ["b", "a"], 80, 20)  # c is better but not a candidate
    assert (chosen, why["best"], why["se"]) == ("b", "b", 0.0)
    with pytest.raises(ValueError, match="no fold scores"):
        one_se_choice(scores, ["a", "d"], 80, 20)


def test_one_se_choice_for_a_score_where_higher_is_better():
    scores = fold_table({"simple": 0.712, "complex": 0.72}, noise=0.03).rename(columns={"rmse": "r2"})
    chosen, why = one_se_choice(scores, ["simple", "complex"], 80, 20, metric="r2",
                                lower_is_better=False)
    means = scores.groupby("model")["r2"].mean()
    best = scores.loc[scores.model == "complex", "r2"].to_numpy()
    se = math.sqrt((1 / 15 + 20 / 80) * best.var(ddof=1))
    assert why["best"] == "complex"
    assert why["threshold"] == pytest.approx(means["complex"] - se, rel=1e-12)  # minus, not plus
    assert means["simple"] >= means["complex"] - se
    assert chosen == "simple"
