"""Minimum sample size to develop a linear-regression-type prediction model of a continuous
outcome: the four criteria of Riley et al. ("Minimum sample size for developing a multivariable
prediction model: Part I – Continuous outcomes", Statistics in Medicine 38:1262–1275, 2019;
"Calculating the sample size required for developing a clinical prediction model", BMJ
2020;368:m441), computed as R's `pmsampsize` (version 1.1.3, type "c") computes them:

1. small overfitting: expected uniform shrinkage of predictor effects S ≥ `shrinkage`, with
   S(n) = 1 + (p − 2) / (n·ln(1 − R²_app)), R²_app = (R²·(n − p − 1) + p) / (n − 1) the apparent
   R² expected when the adjusted R² is R²; the first n ≥ p + 2 that reaches it (a scan upwards,
   as pmsampsize iterates). S(n) is not monotone near n = p: with few parameters and a high R²
   it can exceed the target at n = p + 2 already (p = 3, R² = 0.5: n₁ = 5), as in pmsampsize,
   whose notes (1.0.3) call this an academic case; criterion 3 (n ≥ 234 + p) then decides;
2. small optimism in R²: R²_app − R²_adj ≤ δ, n = ⌈1 + p·(1 − R²)/δ⌉;
3. precise residual SD: the 95% confidence interval of σ from n − p − 1 degrees of freedom,
   sqrt(df/χ²_{0.025,df}) and sqrt(χ²_{0.975,df}/df), within a multiplicative margin `sd_mmoe`;
   n = df + p + 1 for the smallest such df (234 + p for 1.1, as pmsampsize 1.1.3 fixes it);
4. precise mean outcome (intercept): from max(n₁, n₂, n₃) upwards until the 95% interval
   intercept ± t_{0.975, n−p−1}·sqrt(sd²·(1 − R²)/n) lies within ±(mmoe − 1)·|intercept|.

The minimum sample size is the largest of the four; SPP = n / p is the number of subjects per
candidate predictor parameter. Pure functions; SciPy is imported inside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

_CHUNK = 1024


def _first(ok: Callable[[np.ndarray], np.ndarray], start: int) -> int:
    """The smallest integer n ≥ start with ok(n), scanning upwards in vectorized chunks (each
    twice the last): the same answer as pmsampsize's one-by-one loop, without its cost."""
    size = _CHUNK
    while True:
        n = np.arange(start, start + size, dtype=float)
        hit = np.flatnonzero(ok(n))
        if len(hit):
            return int(start + hit[0])
        start, size = start + size, size * 2


def expected_shrinkage(n: Any, parameters: int, r2: float) -> Any:
    """S(n) = 1 + (p − 2)/(n·ln(1 − R²_app)), R²_app = (R²(n − p − 1) + p)/(n − 1) (Riley et
    al. 2019, Part I, criterion (i); pmsampsize's formula)."""
    n = np.asarray(n, dtype=float)
    apparent = (r2 * (n - parameters - 1) + parameters) / (n - 1)
    return 1 + (parameters - 2) / (n * np.log(1 - apparent))


def _sd_margin(df: np.ndarray) -> np.ndarray:
    """The multiplicative margin of error of σ̂ on df degrees of freedom (95% chi-square CI)."""
    from scipy.stats import chi2

    return np.sqrt(np.maximum(df / chi2.ppf(0.025, df), chi2.ppf(0.975, df) / df))


def _intercept_half_width(n: Any, parameters: int, r2: float, sd: float) -> Any:
    from scipy.stats import t

    n = np.asarray(n, dtype=float)
    return t.ppf(0.975, n - parameters - 1) * np.sqrt(sd**2 * (1 - r2) / n)


def _check(parameters: int, r2: float, intercept: float, sd: float, shrinkage: float,
           mmoe: float, sd_mmoe: float, delta_r2: float) -> None:
    problems = []
    if isinstance(parameters, bool) or int(parameters) != parameters or parameters < 1:
        problems.append(f"parameters must be a whole number ≥ 1, got {parameters!r}")
    if not 0 < r2 < 1:
        problems.append(f"r2 (the anticipated adjusted R²) must be in (0, 1), got {r2!r}")
    if not sd > 0:
        problems.append(f"sd (the outcome's SD) must be > 0, got {sd!r}")
    if not (math.isfinite(intercept) and intercept != 0):
        problems.append(f"intercept (the mean outcome) must be finite and non-zero, got {intercept!r}")
    if not 0 < shrinkage < 1:
        problems.append(f"shrinkage must be in (0, 1), got {shrinkage!r}")
    if not (mmoe > 1 and sd_mmoe > 1):
        problems.append(f"mmoe and sd_mmoe must be > 1, got {mmoe!r} and {sd_mmoe!r}")
    if not 0 < delta_r2 < 1:
        problems.append(f"delta_r2 must be in (0, 1), got {delta_r2!r}")
    if problems:
        raise ValueError("; ".join(problems))


def riley_continuous(parameters: int, r2: float, intercept: float, sd: float,
                     shrinkage: float = 0.9, mmoe: float = 1.1, sd_mmoe: float = 1.1,
                     delta_r2: float = 0.05) -> dict[str, Any]:
    """Riley et al.'s (Stat Med 2019; BMJ 2020) minimum sample size for a continuous outcome, as
    `pmsampsize(type="c", rsquared=r2, parameters, intercept, sd, shrinkage, mmoe)` computes it.

    `r2` is the anticipated adjusted R² (e.g. a previous model's); `intercept` and `sd` the
    outcome's mean and SD in the population; `mmoe` the multiplicative margin for the mean
    (1.1: within ±10 %), `sd_mmoe` the one for the residual SD (pmsampsize fixes it at 1.1).
    Returns {"criteria": one record per criterion (criterion, name, n, spp, shrinkage — the
    expected shrinkage at that n —, guarantees), "n": the minimum (largest of the four), "spp",
    "shrinkage" at n, "intercept_low"/"intercept_high": the mean's 95% interval at n}.
    Unlike pmsampsize, criterion 4 keeps iterating until it holds (pmsampsize 1.1.3 stops one
    step after max(n₁, n₂, n₃) because its loop adds the t quantile of 0.025, a negative number)
    and uses |intercept| so a negative mean works; both agree whenever max(n₁, n₂, n₃) meets it."""
    _check(parameters, r2, intercept, sd, shrinkage, mmoe, sd_mmoe, delta_r2)
    p = int(parameters)
    n1 = _first(lambda n: expected_shrinkage(n, p, r2) >= shrinkage, p + 2)
    n2 = math.ceil(1 + (p * (1 - r2)) / delta_r2)
    n3 = _first(lambda df: _sd_margin(df) <= sd_mmoe, 1) + p + 1
    margin = (mmoe - 1) * abs(intercept)
    n4 = _first(lambda n: _intercept_half_width(n, p, r2, sd) <= margin, max(n1, n2, n3))
    final = max(n1, n2, n3, n4)
    goals = [
        ("shrinkage", f"expected shrinkage of predictor effects ≥ {shrinkage} (small overfitting)"),
        ("r2 optimism", f"apparent − adjusted R² ≤ {delta_r2}"),
        ("residual sd", f"residual SD estimated within a multiplicative margin of {sd_mmoe} (95% CI)"),
        ("intercept", f"mean outcome estimated within ±{(mmoe - 1) * 100:g}% of {intercept} (95% CI)"),
    ]
    criteria = [{"criterion": k + 1, "name": name, "n": n, "spp": n / p,
                 "shrinkage": float(expected_shrinkage(n, p, r2)), "guarantees": text}
                for k, ((name, text), n) in enumerate(zip(goals, (n1, n2, n3, n4), strict=True))]
    half = float(_intercept_half_width(final, p, r2, sd))
    return {"criteria": criteria, "n": final, "spp": final / p,
            "shrinkage": float(expected_shrinkage(final, p, r2)),
            "intercept_low": intercept - half, "intercept_high": intercept + half}
