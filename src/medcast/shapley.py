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
  value estimation"): K random orders of the features and their reverses, each order's
  marginal contributions; unbiased for each φ_j, and each order's contributions add up to
  f(x) − v(∅) exactly. `standard_error` is the standard error of the mean over the K pairs,
  and `margin` = t(0.975, K−1) × it is the stated error: a 95 % confidence half-width of each
  contribution (Student's t by its Cornish–Fisher expansion, `t975`). The orders are drawn
  from a fixed seed, so the same patient gets the same explanation every time. Antithetic pairs
  are exact for a model without interactions of three or more features.

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
MIN_PAIRS = 8  # sampling never uses fewer antithetic pairs than this


@dataclass(frozen=True)
class Plan:
    """The coalitions one explanation evaluates, and how their values become contributions."""

    method: Literal["exact", "sampling"]
    masks: np.ndarray  # (k, m) bool: row i is coalition i (True: the patient's value)
    weights: np.ndarray | None = None  # exact: (m, k), φ = weights @ v
    chains: np.ndarray | None = None  # sampling: (2K, m+1) mask rows of each order's chain
    orders: np.ndarray | None = None  # sampling: (2K, m) the feature order of each chain

    @property
    def n_features(self) -> int:
        return int(self.masks.shape[1])


@dataclass(frozen=True)
class Explanation:
    """One patient's explanation, in the target's units."""

    base_value: float  # v(∅): the mean prediction over the background rows
    contributions: np.ndarray  # (m,) φ_j, in feature order
    prediction: float  # v(all) = f(x), from the same call
    method: Literal["exact", "sampling"]
    standard_error: np.ndarray | None = None  # sampling: (m,) standard error of each φ_j
    margin: np.ndarray | None = None  # sampling: (m,) 95 % confidence half-width of each φ_j


def plan(n_features: int, coalitions: int, seed: int) -> Plan:
    """Exact enumeration if 2^m ≤ `coalitions`, else antithetic permutation sampling that
    evaluates about `coalitions` coalitions (at least MIN_PAIRS pairs of orders)."""
    m = n_features
    if m < 1:
        raise ValueError("an explanation needs at least one feature")
    if 2**m <= coalitions:
        return _exact_plan(m)
    pairs = max(MIN_PAIRS, (coalitions - 2) // (2 * (m - 1)))
    return sampling_plan(m, pairs, seed)


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


def sampling_plan(m: int, pairs: int, seed: int) -> Plan:
    """`pairs` random feature orders and their reverses; each order's chain ∅ ⊂ … ⊂ all.
    The empty and the full coalition are evaluated once (mask rows 0 and 1)."""
    rng = np.random.default_rng(seed)
    orders = []
    for _ in range(pairs):
        order = rng.permutation(m)
        orders += [order, order[::-1]]
    order_arr = np.array(orders)
    masks = [np.zeros(m, bool), np.ones(m, bool)]
    chains = np.empty((len(orders), m + 1), dtype=np.int64)
    for c, order in enumerate(order_arr):
        chains[c, 0], chains[c, m] = 0, 1
        current = np.zeros(m, bool)
        for k in range(m - 1):
            current = current.copy()
            current[order[k]] = True
            chains[c, k + 1] = len(masks)
            masks.append(current)
    return Plan("sampling", np.array(masks), chains=chains, orders=order_arr)


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
    v = coalition_values(predict, x, background, how.masks)
    if how.method == "exact":
        assert how.weights is not None
        return Explanation(float(v[0]), how.weights @ v, float(v[-1]), "exact")
    assert how.chains is not None and how.orders is not None
    steps = np.diff(v[how.chains], axis=1)  # (2K, m): the step that adds orders[c, k]
    delta = np.empty_like(steps)
    np.put_along_axis(delta, how.orders, steps, axis=1)  # delta[c, j]: feature j's step
    paired = (delta[0::2] + delta[1::2]) / 2  # antithetic pairs: (K, m)
    phi = paired.mean(axis=0)
    se = paired.std(axis=0, ddof=1) / math.sqrt(len(paired))
    return Explanation(float(v[0]), phi, float(v[1]), "sampling", se, t975(len(paired) - 1) * se)


def t975(df: int) -> float:
    """Student's t 97.5 % quantile with `df` degrees of freedom, by the Cornish–Fisher
    expansion in 1/df (Abramowitz & Stegun 26.7.5; within 1e-3 of the exact value from df = 5,
    tests/test_shapley.py checks it against SciPy)."""
    z, n = Z975, float(df)
    return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4))
