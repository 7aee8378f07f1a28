"""The large-data policy (params.yaml `cv.large`): what a candidate whose cost outgrows the
rows does on a large table. Train and tune plan every candidate the same way, from the number of
training rows; below every threshold a candidate runs in full, exactly as without the policy.

What ran is one of:
* full — the candidate as configured;
* approximated — a cheaper algorithm of the same family (gradient_boosting as
  HistGradientBoosting) or bounded work (the MLP's steps per epoch, its time budget);
* subsampled — fitted on a seeded subsample of at most max_rows rows (every validation row is
  still scored);
* skipped — not run; the leaderboard says so;
* screened — above cv.large.halving_above rows (multi-fidelity selection, successive
  halving in two rungs): every candidate is first cross-validated on a seeded subsample of
  halving_above rows, stratified on the target's deciles; only the best halving_keep (and a
  train.select-forced one) are then cross-validated on all rows. A candidate that stopped at the
  subsample is "screened": its CV scores are the subsample's, it has no train/test scores and is
  never selected. Tune scores its trials on the same subsample and confirms its best
  halving_keep trials on all rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from medcast.params import LargeConfig

T = TypeVar("T")

FULL, APPROXIMATED, SUBSAMPLED, SKIPPED = "full", "approximated", "subsampled", "skipped"
SCREENED = "screened"
# Strata of the screening subsample: quantile bins of the target.
STRATA = 10


@dataclass(frozen=True)
class Plan:
    """How candidate `model` runs on n_rows training rows."""

    model: str
    # The registry record built (a candidate's approximate_as on large tables).
    build_as: str
    hp: dict[str, Any]
    fidelity: str = FULL
    reasons: tuple[str, ...] = field(default_factory=tuple)
    max_rows: int | None = None
    # Repeats of the K-fold it is cross-validated on (cv.repeats; 1 for an expensive one).
    repeats: int = 1

    @property
    def note(self) -> str:
        return "; ".join(self.reasons)


def plan(model: str, hp: dict[str, Any], n_rows: int, large: LargeConfig, repeats: int = 1
         ) -> Plan:
    """The policy for `model` with hyperparameters `hp` on n_rows training rows, cross-validated
    on `repeats` repeats of the K-fold: all of them, or only the first for an expensive
    candidate (the registry's `expensive`: its fits cost seconds where the others' cost
    milliseconds), which is then compared with the others on the folds they share."""
    skip = large.skip_above.get(model)
    if skip is not None and n_rows > skip:
        return Plan(model, model, dict(hp), SKIPPED,
                    (f"{n_rows} rows > cv.large.skip_above.{model}={skip}",), repeats=repeats)
    from medcast.models import get

    candidate = get(model)
    build_as, hp, fidelity, reasons = model, dict(hp), FULL, []
    if candidate.expensive and repeats > 1:
        reasons.append(f"cross-validated on the first of cv.repeats={repeats} repeats (an "
                       "expensive candidate)")
        repeats = 1
    above = large.hist_boosting_above
    if candidate.approximate_as and above is not None and n_rows > above:
        build_as, fidelity = candidate.approximate_as, APPROXIMATED
        if candidate.approximate_params is not None:
            hp = candidate.approximate_params(hp)
        name = get(build_as).regressor.partition(":")[2].removesuffix("Regressor")
        reasons.append(f"{name}: {n_rows} rows > cv.large.hist_boosting_above={above}")
    cap = large.max_rows.get(model)
    if cap is not None and n_rows <= cap:
        cap = None
    if candidate.epochs:
        steps = large.mlp_max_steps
        batch = int(hp.get("batch_size", 16))
        # The rows a fit sees: the subsample's when max_rows caps them.
        fit_rows = (cap or n_rows) * (1.0 - float(hp.get("validation_split", 0.2)))
        if steps is not None and fit_rows / batch > steps:
            hp["batch_size"] = math.ceil(fit_rows / steps)
            fidelity = APPROXIMATED
            reasons.append(f"batch {batch} → {hp['batch_size']}: at most "
                           f"cv.large.mlp_max_steps={steps} steps per epoch")
        if large.mlp_time_budget is not None:
            hp["time_budget"] = large.mlp_time_budget
            fidelity = APPROXIMATED
            reasons.append(f"stops after cv.large.mlp_time_budget={large.mlp_time_budget:g} s "
                           "a fit")
    if cap is not None:
        fidelity = SUBSAMPLED
        reasons.append(f"fitted on {cap} of {n_rows} rows: cv.large.max_rows.{model}={cap}")
    return Plan(model, build_as, hp, fidelity, tuple(reasons), cap, repeats)


def build(p: Plan, schema: Any, seed: int) -> Any:
    """The pipeline a plan runs (not for a skipped one)."""
    from medcast import models

    return models.build(p.build_as, p.hp, schema, seed)


def screening_rows(n_rows: int, large: LargeConfig) -> int | None:
    """Rows of the screening subsample on n_rows training rows: halving_above when the table
    is larger, else None (no screening: every candidate and trial runs on all rows)."""
    above = large.halving_above
    return above if above is not None and n_rows > above else None


def screening_set(X: pd.DataFrame, y: pd.Series, large: LargeConfig, seed: int
                  ) -> tuple[pd.DataFrame, pd.Series] | None:
    """The rows candidates and trials are screened on above halving_above rows (a stratified
    subsample, re-indexed 0..n-1), or None when the table is not that large."""
    rows = screening_rows(len(X), large)
    if rows is None:
        return None
    sub = stratified_subsample(y, rows, seed)
    return X.iloc[sub].reset_index(drop=True), y.iloc[sub].reset_index(drop=True)


def stratified_subsample(y: Sequence[float] | np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` row positions of y (sorted), a seeded draw stratified on the target's deciles, so
    the subsample keeps the target's distribution (its rare, expensive tail included)."""
    from sklearn.model_selection import train_test_split

    values = np.asarray(y, dtype="float64").reshape(-1)
    if not 0 < size < len(values):
        raise ValueError(f"a subsample of {size} rows out of {len(values)}")
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, STRATA + 1)[1:-1]))
    strata = np.searchsorted(edges, values, side="right")
    counts = np.bincount(strata)
    strata[counts[strata] < 2] = int(np.argmax(counts))  # a lone row joins the largest stratum
    rows, _ = train_test_split(np.arange(len(values)), train_size=size, random_state=seed,
                               stratify=strata)
    return np.sort(rows)


def keep(ranked: list[T], large: LargeConfig, forced: T | None = None) -> list[T]:
    """The candidates (or trials) confirmed on all rows: the best halving_keep of `ranked`
    (best first), and a forced one."""
    kept = ranked[: max(1, large.halving_keep)]
    return kept + [forced] if forced is not None and forced not in kept else kept


def screened_note(rows: int, n_rows: int, rank: int, of: int, large: LargeConfig,
                  kept: bool, instead: str | None = None) -> str:
    """What screening did to a candidate, for its leaderboard row (`instead`: why one that
    was not kept was not run on all rows, when not its rank)."""
    where = (f"ranked {rank} of {of} on a stratified {rows}-row subsample of {n_rows} rows "
             f"(cv.large.halving_above={large.halving_above})")
    if instead:
        return f"{where}; {instead}"
    if kept:
        return f"{where}; confirmed on all rows"
    return f"{where}; not in the top {large.halving_keep}, not run on all rows"
