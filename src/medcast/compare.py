"""Comparing candidate models from their per-fold scores on the SAME seeded repeated K-fold: the
corrected resampled t-test of each candidate against a reference, and the one-standard-error
choice of the simplest model whose error is within one (corrected) standard error of the best.

Method: the J = repeats × folds paired differences d_j (one per (repeat, fold)) are not
independent — every two training sets overlap — so the naive variance σ̂²/J of their mean is too
small and a plain paired t-test rejects far too often (Dietterich 1998). Nadeau & Bengio
("Inference for the generalization error", Machine Learning 52:239–281, 2003) correct it to
(1/J + n_test/n_train)·σ̂², with J − 1 degrees of freedom; Bouckaert & Frank (PAKDD 2004) use
the same correction for repeated K-fold, where n_test/n_train = 1/(K − 1). scikit-learn's
example "Statistical comparison of models using grid search" uses the same formula.
Input: a long DataFrame with columns model, repeat, fold, <metric>; output: plain dicts and
DataFrames, no I/O. SciPy is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

KEYS = ["repeat", "fold"]


def corrected_ttest(differences: Any, n_train: int, n_test: int, level: float = 0.95) -> dict[str, float]:
    """Nadeau & Bengio's (2003) corrected resampled t-test of the mean of J paired per-fold
    differences: se = sqrt((1/J + n_test/n_train)·σ̂²) with σ̂² their variance (ddof=1),
    t = mean/se on J − 1 degrees of freedom, the two-sided p-value and the `level` interval
    mean ± t_{(1+level)/2, J−1}·se. n_test = 0 gives the ordinary one-sample t-test.

    When every difference is equal (σ̂ = 0) the interval collapses to the mean, t is ±inf and
    p = 0 if the mean is not 0, t = 0 and p = 1 if it is (no NaN, no warning)."""
    from scipy.stats import t as student

    d = np.asarray(differences, dtype=float).reshape(-1)
    j = len(d)
    if j < 2:
        raise ValueError(f"the corrected t-test needs at least 2 paired differences, got {j}")
    if not np.isfinite(d).all():
        raise ValueError("the paired differences must be finite numbers")
    if n_train <= 0 or n_test < 0:
        raise ValueError(f"need n_train > 0 and n_test >= 0, got {n_train} and {n_test}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    mean = math.fsum(d.tolist()) / j
    df = j - 1
    if np.ptp(d) == 0:  # all equal: no spread at all (and the mean is exactly d[0])
        mean = float(d[0])
        t_value = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        return {"mean": mean, "se": 0.0, "low": mean, "high": mean, "t": t_value,
                "p": 1.0 if mean == 0 else 0.0, "df": df, "j": j}
    variance = math.fsum(((d - mean) ** 2).tolist()) / df
    se = math.sqrt((1 / j + n_test / n_train) * variance)
    t_value = mean / se
    half = float(student.ppf((1 + level) / 2, df)) * se
    return {"mean": mean, "se": se, "low": mean - half, "high": mean + half, "t": t_value,
            "p": float(2 * student.sf(abs(t_value), df)), "df": df, "j": j}


def _checked(fold_scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    missing = [c for c in ("model", *KEYS, metric) if c not in fold_scores.columns]
    if missing:
        raise ValueError(f"fold_scores lacks column(s) {missing}: needs model, repeat, fold, {metric}")
    repeated = fold_scores.duplicated(["model", *KEYS])
    if repeated.any():
        first = fold_scores.loc[repeated, ["model", *KEYS]].iloc[0].tolist()
        raise ValueError(f"fold_scores has more than one row for (model, repeat, fold) = {first}")
    return fold_scores


def _paired(scores: pd.DataFrame, model: str, reference: str, metric: str) -> pd.DataFrame:
    """The model's and the reference's scores side by side on the same (repeat, fold) pairs;
    both must have exactly the same pairs."""
    mine = scores.loc[scores["model"] == model, [*KEYS, metric]]
    ref = scores.loc[scores["model"] == reference, [*KEYS, metric]]
    both = mine.merge(ref, on=KEYS, how="outer", suffixes=("", "_reference"), indicator=True)
    unpaired = both[both["_merge"] != "both"]
    if len(unpaired):
        pair = unpaired[KEYS].iloc[0].tolist()
        raise ValueError(f"{model} and {reference} were not scored on the same folds: "
                         f"(repeat, fold) = {pair} is in one only ({len(unpaired)} unpaired)")
    return both.sort_values(KEYS)


def paired_comparisons(fold_scores: pd.DataFrame, reference: str, n_train: int, n_test: int,
                       metric: str = "rmse", lower_is_better: bool = True,
                       level: float = 0.95) -> pd.DataFrame:
    """Every other model against `reference` by the corrected resampled t-test (Nadeau & Bengio
    2003) on their paired per-(repeat, fold) scores.

    Sign convention: `difference` = candidate − reference in the metric's own units, so for RMSE
    or MAE a positive difference means the candidate is worse, for R² better. `verdict` reads it
    for you: "better" or "worse" when the `level` interval excludes 0, else "no clear difference".
    One row per candidate, in the order the models first appear: model, reference, metric,
    difference, se, low, high, t, p, df, j (number of pairs)."""
    scores = _checked(fold_scores, metric)
    models = list(dict.fromkeys(scores["model"]))
    if reference not in models:
        raise ValueError(f"reference model {reference!r} is not in fold_scores (models: {models})")
    rows = []
    for model in (m for m in models if m != reference):
        pairs = _paired(scores, model, reference, metric)
        test = corrected_ttest(pairs[metric] - pairs[f"{metric}_reference"], n_train, n_test, level)
        if test["low"] > 0 or test["high"] < 0:
            worse = (test["mean"] > 0) == lower_is_better
            verdict = "worse" if worse else "better"
        else:
            verdict = "no clear difference"
        rows.append({"model": model, "reference": reference, "metric": metric,
                     "difference": test["mean"], **{k: test[k] for k in ("se", "low", "high", "t", "p")},
                     "df": test["df"], "j": test["j"], "verdict": verdict})
    return pd.DataFrame(rows, columns=["model", "reference", "metric", "difference", "se", "low",
                                       "high", "t", "p", "df", "j", "verdict"])


def one_se_choice(fold_scores: pd.DataFrame, order: list[str], n_train: int, n_test: int,
                  metric: str = "rmse", lower_is_better: bool = True) -> tuple[str, dict[str, Any]]:
    """The one-standard-error rule (Breiman, Friedman, Olshen & Stone, Classification and
    Regression Trees, 1984, ch. 3; Hastie, Tibshirani & Friedman, The Elements of Statistical
    Learning, 2nd ed., 2009, §7.10): the first model in `order` (simplest first) whose mean CV
    error is at most the best mean plus one standard error of the best model's CV error.

    The standard error is Nadeau & Bengio's corrected one, sqrt((1/J + n_test/n_train)·σ̂²) of
    the best model's J per-fold errors, not σ̂/√J: repeated K-fold training sets overlap, so
    σ̂/√J would be too small and the rule would too rarely prefer a simpler model.
    For a score where higher is better (lower_is_better=False, e.g. R²) the threshold is the best
    mean minus one standard error. Models not in `order` are ignored; ties go to the earlier
    model. Returns the chosen name and {best, best_mean, se, threshold, chosen_mean}."""
    scores = _checked(fold_scores, metric)
    order = list(dict.fromkeys(order))
    absent = [m for m in order if m not in set(scores["model"])]
    if not order or absent:
        raise ValueError(f"no fold scores for model(s) {absent or order} named in `order`")
    means = scores.groupby("model")[metric].mean()
    sign = 1.0 if lower_is_better else -1.0
    best = min(order, key=lambda m: (sign * means[m], order.index(m)))
    errors = scores.loc[scores["model"] == best, metric].to_numpy(dtype=float)
    if len(errors) < 2:
        raise ValueError(f"{best} has {len(errors)} fold score(s): the rule needs at least 2")
    se = math.sqrt((1 / len(errors) + n_test / n_train) * float(np.var(errors, ddof=1)))
    threshold = float(means[best]) + sign * se
    chosen = next(m for m in order if sign * means[m] <= sign * threshold)
    return chosen, {"best": best, "best_mean": float(means[best]), "se": se,
                    "threshold": threshold, "chosen_mean": float(means[chosen])}
