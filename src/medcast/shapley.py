"""Per-patient Shapley contributions of any model, computed from its predictions alone.

What is computed: the **interventional** (a.k.a. baseline, "marginal") Shapley values of one
patient `x` against a fixed background sample `B` of training rows. A coalition S of features
is worth

    v(S) = mean over b in B of f(x_S, b_rest)

(the model on the patient's values for S and a background row's for the rest; Janzing, Minorics
& Blöbaum 2020, "Feature relevance quantification in explainable AI: a causal problem"; what
`shap`'s `maskers.Independent` computes, Lundberg & Lee 2017), and feature j gets its Shapley
value (Shapley 1953)

    φ_j = Σ_{S ∌ j} |S|! (m-|S|-1)! / m! · (v(S ∪ {j}) − v(S)).

`base_value` is v(∅), the mean prediction over the background, and the contributions add up to
the prediction: base_value + Σ φ_j = v(all) = f(x) (efficiency), in both methods below.

* **exact** — every one of the 2^m coalitions, when 2^m ≤ the budget of coalitions: φ = W·v
  with W the Shapley weights (`exact_weights`).
* **sampling** — above it, antithetic permutation sampling (Štrumbelj & Kononenko 2014,
  "Explaining prediction models and individual predictions with feature contributions";
  antithetic pairs: Mitchell, Cooper, Frank & Holmes 2022, "Sampling permutations for Shapley
  value estimation"), stratified by background row: since v is the mean of the games
  v_b(S) = f(x_S, b_rest), φ_j is the mean over b of each game's Shapley value, and each
  background row gets K random orders of the features and their reverses of its own. Each
  order's marginal contributions are unbiased for its game's φ_j and add up to f(x) − f(b);
  every row gets as many orders, so the estimate adds up to f(x) − v(∅) exactly.
  `standard_error` is the stratified estimator's (the within-row variance of each row's K
  pairs) and `margin` = t(0.975, df) × it the stated error: a 95 % confidence half-width of
  each contribution, with Welch–Satterthwaite's degrees of freedom (Satterthwaite 1946): when
  a few background rows carry most of the variance the margin widens (Student's t by its
  Cornish–Fisher expansion, `t975`). Measured: tests/test_shapley.py (1,000 patients) and
  docs/explanations.md (the candidates of the built-in tables). The orders come from a fixed
  seed, so the same patient gets the same explanation every time. Antithetic pairs are exact
  for a model without interactions of three or more features (a linear or additive model:
  margin 0).

Every coalition of every background row is one row of a single batched model call, so a
served explanation is one ONNX Runtime call (serve.model). NumPy only: the service imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

# Predictions of the model for rows given as one array per feature (same length each).
Predict = Callable[[list[np.ndarray]], np.ndarray]
Z975 = 1.959963984540054  # the standard normal's 97.5 % quantile
MIN_PAIRS = 2  # antithetic pairs per background row, at least (a within-row variance)


@dataclass(frozen=True)
class Plan:
    """The model rows one explanation evaluates, and how their values become contributions.

    exact: every mask for every background row (coalition-major), φ = weights @ v.
    sampling: row i is mask i on background row `background[i]`; rows 0..B−1 are the empty
    coalition on each background row, row B the full one; `chains` gives each order's rows."""

    method: Literal["exact", "sampling"]
    masks: np.ndarray  # (k, m) bool: True where the row holds the patient's value
    weights: np.ndarray | None = None  # exact: (m, k), φ = weights @ v
    background: np.ndarray | None = None  # sampling: (k,) the background row of each row
    chains: np.ndarray | None = None  # sampling: (B·2K, m+1) the rows of each order's chain
    orders: np.ndarray | None = None  # sampling: (B·2K, m) the feature order of each chain
    n_background: int = 0  # sampling: B, the background rows it was drawn for

    @property
    def n_features(self) -> int:
        return int(self.masks.shape[1])

    def rows(self, n_background: int) -> int:
        """Model rows per explanation."""
        return len(self.masks) * (n_background if self.method == "exact" else 1)


@dataclass(frozen=True)
class Explanation:
    """One patient's explanation, in the target's units."""

    base_value: float  # v(∅): the mean prediction over the background rows
    contributions: np.ndarray  # (m,) φ_j, in feature order
    prediction: float  # v(all) = f(x), from the same call
    method: Literal["exact", "sampling"]
    standard_error: np.ndarray | None = None  # sampling: (m,) standard error of each φ_j
    margin: np.ndarray | None = None  # sampling: (m,) 95 % confidence half-width of each φ_j


def plan(n_features: int, coalitions: int, seed: int, n_background: int = 1) -> Plan:
    """Exact enumeration if 2^m ≤ `coalitions`, else stratified antithetic permutation sampling
    over `n_background` rows that evaluates about `coalitions` × `n_background` model rows
    (at least MIN_PAIRS pairs of orders per background row)."""
    m = n_features
    if m < 1:
        raise ValueError("an explanation needs at least one feature")
    if 2**m <= coalitions:
        return _exact_plan(m)
    pairs = max(MIN_PAIRS, (coalitions - 1) // (2 * (m - 1)))
    return sampling_plan(m, pairs, seed, n_background)


@cache
def _exact_plan(m: int) -> Plan:
    codes = np.arange(2**m)
    masks = ((codes[:, None] >> np.arange(m)) & 1).astype(bool)
    return Plan("exact", masks, weights=exact_weights(m))


def exact_weights(m: int) -> np.ndarray:
    """W (m × 2^m) with φ = W @ v for v in coalition order (bit j of the index: feature j):
    W[j, S] = w(|S|−1) if j ∈ S, −w(|S|) if j ∉ S, w(s) = s!(m−s−1)!/m!."""
    codes = np.arange(2**m)
    inside = ((codes[:, None] >> np.arange(m)) & 1).astype(bool)  # (2^m, m)
    size = inside.sum(axis=1)
    w = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m)
                  for s in range(m)] + [0.0])  # w(m) is never used with j ∉ S
    plus = w[np.clip(size - 1, 0, m)]
    minus = w[size]
    return np.where(inside, plus[:, None], -minus[:, None]).T.copy()


def sampling_plan(m: int, pairs: int, seed: int, n_background: int) -> Plan:
    """For each of `n_background` rows, `pairs` random feature orders and their reverses; each
    order's chain ∅ ⊂ … ⊂ all on that row. The empty coalition is one row per background row,
    the full one a single row (it holds no background value)."""
    if n_background < 1 or pairs < 1:
        raise ValueError("sampling needs at least one background row and one pair of orders")
    rng = np.random.default_rng(seed)
    orders = np.empty((n_background * 2 * pairs, m), dtype=np.int64)
    for i in range(n_background * pairs):
        order = rng.permutation(m)
        orders[2 * i], orders[2 * i + 1] = order, order[::-1]
    per_chain = m - 1  # interior coalitions of one chain
    n_chains = len(orders)
    # The interior masks: chain c, step k adds orders[c, k] to the previous coalition.
    added = np.zeros((n_chains, m, m), dtype=bool)  # added[c, k, j]: j among the first k+1
    np.put_along_axis(added, orders[:, None, :].repeat(m, axis=1),
                      np.tril(np.ones((m, m), dtype=bool))[None].repeat(n_chains, axis=0),
                      axis=2)
    interior = added[:, :per_chain, :].reshape(-1, m)
    chain_bg = np.repeat(np.arange(n_background), 2 * pairs)
    masks = np.concatenate([np.zeros((n_background, m), bool), np.ones((1, m), bool), interior])
    background = np.concatenate([np.arange(n_background), [0],
                                 np.repeat(chain_bg, per_chain)])
    first = n_background + 1
    chains = np.empty((n_chains, m + 1), dtype=np.int64)
    chains[:, 0] = chain_bg
    chains[:, 1:m] = first + np.arange(n_chains * per_chain).reshape(n_chains, per_chain)
    chains[:, m] = n_background
    return Plan("sampling", masks, background=background, chains=chains, orders=orders,
                n_background=n_background)


def coalition_columns(x: Sequence[object], background: Sequence[np.ndarray],
                      masks: np.ndarray) -> list[np.ndarray]:
    """The model's input, one array per feature, for every coalition × background row
    (coalition-major): the patient's value where the mask is True, the background's where not.
    `x` holds one value per feature in the column's dtype; `background` one array per feature."""
    n_bg = len(background[0])
    out = []
    for j, column in enumerate(background):
        take = np.repeat(masks[:, j], n_bg)
        tiled = np.tile(column, len(masks))
        out.append(np.where(take, np.asarray(x[j], dtype=column.dtype), tiled))
    return out


def coalition_values(predict: Predict, x: Sequence[object], background: Sequence[np.ndarray],
                     masks: np.ndarray) -> np.ndarray:
    """v(S) for every mask: one model call on len(masks) × len(background) rows, averaged per
    coalition in float64."""
    n_bg = len(background[0])
    values = np.asarray(predict(coalition_columns(x, background, masks)), dtype=np.float64)
    return values.reshape(len(masks), n_bg).mean(axis=1)


def explain(predict: Predict, x: Sequence[object], background: Sequence[np.ndarray],
            how: Plan) -> Explanation:
    """The Shapley contributions of the patient `x` (one value per feature, in each
    background column's dtype) against `background`, by the plan `how`."""
    if len(x) != how.n_features or len(background) != how.n_features:
        raise ValueError(f"the plan is for {how.n_features} features, got a row of {len(x)} "
                         f"and a background of {len(background)}")
    if how.method == "exact":
        assert how.weights is not None
        v = coalition_values(predict, x, background, how.masks)
        return Explanation(float(v[0]), how.weights @ v, float(v[-1]), "exact")
    assert how.chains is not None and how.orders is not None and how.background is not None
    n_bg = len(background[0])
    if n_bg != how.n_background:
        raise ValueError(f"the plan was drawn for {how.n_background} background rows, "
                         f"got {n_bg}")
    columns = [np.where(how.masks[:, j], np.asarray(x[j], dtype=col.dtype), col[how.background])
               for j, col in enumerate(background)]
    values = np.asarray(predict(columns), dtype=np.float64)
    steps = np.diff(values[how.chains], axis=1)  # (B·2K, m): the step that adds orders[c, k]
    delta = np.empty_like(steps)
    np.put_along_axis(delta, how.orders, steps, axis=1)  # delta[c, j]: feature j's step
    pairs = len(how.orders) // (2 * n_bg)
    paired = ((delta[0::2] + delta[1::2]) / 2).reshape(n_bg, pairs, -1)  # (B, K, m)
    phi = paired.mean(axis=(0, 1))
    if pairs > 1:  # stratified: the variance within each background row's pairs
        parts = paired.var(axis=1, ddof=1) / pairs  # (B, m): each row's mean's variance
        variance = parts.sum(axis=0) / n_bg**2
        # Welch–Satterthwaite: few rows that carry most of the variance leave few degrees of
        # freedom (between pairs − 1 and B·(pairs − 1)); t widens the margin accordingly.
        spread = (parts**2).sum(axis=0) / (pairs - 1)
        df = np.where(spread > 0, parts.sum(axis=0)**2 / np.where(spread > 0, spread, 1.0),
                      n_bg * (pairs - 1))
    else:
        variance = paired[:, 0].var(axis=0, ddof=1) / n_bg if n_bg > 1 else np.zeros_like(phi)
        df = np.full_like(phi, max(1, n_bg - 1))
    se = np.sqrt(variance)
    return Explanation(float(values[:n_bg].mean()), phi, float(values[n_bg]), "sampling", se,
                       np.array([t975(d) for d in df]) * se)


# Student's t 97.5 % quantiles below 5 degrees of freedom, where the expansion is off.
T975_SMALL = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105}


def t975(df: float) -> float:
    """Student's t 97.5 % quantile with `df` degrees of freedom (not an integer from
    Welch–Satterthwaite): the table below 5 (df rounded down: wider), else the Cornish–Fisher
    expansion in 1/df (Abramowitz & Stegun 26.7.5; within 1e-3 of the exact value from df = 5,
    tests/test_shapley.py checks it against SciPy)."""
    if df < 5:
        return T975_SMALL[max(1, int(df))]
    z, n = Z975, float(df)
    return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4))
