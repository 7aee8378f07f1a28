"""Which candidate the study selects, and whether any candidate beats predicting the mean.

Reads train's per-fold scores (every candidate and the null model `mean` on the same seeded
repeated K-fold, params `cv`) and returns plain records; no I/O.

* Comparisons: each candidate's paired per-fold RMSE differences to the best candidate and to
  the null model, with the 95 % interval of the corrected resampled t-test (Nadeau & Bengio,
  Machine Learning 2003; medcast.compare). A difference is candidate − reference: negative is
  better.
* Signal: the best candidate beats the mean only if its difference to the null has an interval
  entirely below 0 and its CV R² is above 0. Otherwise "no candidate beats the mean", said in
  the stage log, metrics.json (`signal: false`), report.md, the model card and the service.
* Rule (train.rule): `best`, the lowest mean CV RMSE; or `one_se`, the first candidate of
  medcast.models.SIMPLEST_FIRST whose mean CV RMSE is within one (corrected) standard error of
  the best (Breiman et al. 1984; Hastie, Tibshirani & Friedman 2009, ch. 7). train.select forces
  a candidate. The null model is never selected. Train passes as eligible only the candidates
  within train.serving_budget (medcast.serving_cost): the rule picks among what can be served,
  and the others are compared with the best of those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from medcast.compare import corrected_ttest, one_se_choice
from medcast.models import NULL_MODEL, SIMPLEST_FIRST

RULES = ("best", "one_se")
LEVEL = 0.95


@dataclass(frozen=True)
class Signal:
    """Whether the best candidate beats the null model: `difference` is its mean CV RMSE minus
    the mean's (per paired fold, target units), with its LEVEL interval [low, high]."""

    signal: bool
    best: str
    best_r2: float
    difference: float
    low: float
    high: float
    null_rmse: float

    def line(self, target: str) -> str:
        """The one line every place that reports the signal uses."""
        interval = (f"RMSE difference to the mean {self.difference:+.4g} "
                    f"(95 % CI {self.low:+.4g} to {self.high:+.4g}), CV R² {self.best_r2:.3f}")
        if self.signal:
            return f"{self.best} predicts {target} better than its training mean ({interval})"
        return (f"no candidate beats the mean: the best, {self.best}, does not predict {target} "
                f"better than its training mean ({interval}); do not use these predictions")


@dataclass(frozen=True)
class Selection:
    model: str
    reason: str
    signal: Signal
    # Per candidate: difference to the best and to the null, with intervals (leaderboard).
    comparisons: dict[str, dict[str, float]] = field(default_factory=dict)


def fold_sizes(n_rows: int, n_folds: int) -> tuple[int, int]:
    """(fit rows, validation rows) of a K-fold fold on n_rows rows: the n_train and n_test of
    the corrected t-test."""
    n_val = n_rows // n_folds
    return n_rows - n_val, n_val


def compare_all(folds: pd.DataFrame, best: str, n_fit: int, n_val: int) -> dict[str, dict[str, float]]:
    """Each model's paired RMSE difference to `best` and to the null model on the (repeat, fold)
    pairs both ran, with intervals (`vs_best`, `vs_best_low`, `vs_best_high`, `vs_null`, …).
    `folds` holds only models cross-validated on the same rows (not screened on a subsample)."""
    out: dict[str, dict[str, float]] = {}
    by_model = {m: g.set_index(["repeat", "fold"])["rmse"] for m, g in folds.groupby("model")}
    for model, rmse in by_model.items():
        row: dict[str, float] = {}
        for key, ref in (("vs_best", best), ("vs_null", NULL_MODEL)):
            if ref not in by_model or model == ref:
                continue
            # The folds both ran: all of them, or the first repeat's for an expensive one.
            paired = (rmse - by_model[ref]).dropna()
            if len(paired) < 2:
                continue
            test = corrected_ttest(paired.to_numpy(), n_fit, n_val, LEVEL)
            row.update({key: test["mean"], f"{key}_low": test["low"], f"{key}_high": test["high"]})
        out[model] = row
    return out


def signal_of(best: str, cv_r2: float, comparison: dict[str, float], null_rmse: float) -> Signal:
    """Signal when the best candidate's interval of difference to the null lies below 0 and
    its CV R² is positive."""
    low, high = comparison["vs_null_low"], comparison["vs_null_high"]
    return Signal(signal=bool(high < 0 and cv_r2 > 0), best=best, best_r2=cv_r2,
                  difference=comparison["vs_null"], low=low, high=high, null_rmse=null_rmse)


def select(folds: pd.DataFrame, cv_means: dict[str, dict[str, float]], eligible: list[str],
           rule: str, forced: str | None, n_fit: int, n_val: int,
           also: Sequence[str] = ()) -> Selection:
    """The selection among `eligible` (candidates cross-validated on all rows and within the
    serving budget, the null model excluded) from their per-fold scores `folds` (model, repeat,
    fold, rmse, …) and mean CV scores `cv_means`. Models in `also` (cross-validated on the same
    rows, but not selectable: over the serving budget) and a forced one are compared with the
    best eligible one too."""
    if not eligible:
        raise ValueError("no candidate to select from")
    best = min(eligible, key=lambda m: (cv_means[m]["rmse"], eligible.index(m)))
    shown = [*eligible, *also, *([forced] if forced else []), NULL_MODEL]
    comparisons = compare_all(folds[folds["model"].isin(shown)], best, n_fit, n_val)
    signal = signal_of(best, cv_means[best]["r2"], comparisons[best],
                       cv_means[NULL_MODEL]["rmse"])
    if forced is not None:
        return Selection(forced, "forced by train.select", signal, comparisons)
    if rule == "best":
        return Selection(best, "best mean CV RMSE", signal, comparisons)
    order = [m for m in SIMPLEST_FIRST if m in eligible]
    chosen, why = one_se_choice(folds[folds["model"].isin(order)], order, n_fit, n_val)
    reason = ("best mean CV RMSE" if chosen == best else
              f"the simplest within one standard error of the best ({best}: CV RMSE "
              f"{why['best_mean']:.4g} + SE {why['se']:.3g} = {why['threshold']:.4g})")
    return Selection(chosen, reason, signal, comparisons)


def as_record(selection: Selection, target: str) -> dict[str, Any]:
    """models/selection.json's `signal` entry."""
    s = selection.signal
    return {"signal": s.signal, "best": s.best, "cv_r2": s.best_r2,
            "rmse_difference": s.difference, "low": s.low, "high": s.high,
            "null_rmse": s.null_rmse, "level": LEVEL, "message": s.line(target)}
