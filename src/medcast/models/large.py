"""The large-data policy (params.yaml `train.large`): what a candidate whose cost outgrows the
rows does on a large table. Train and tune plan every candidate the same way, from the number of
training rows; below every threshold a candidate runs in full, exactly as without the policy.

What ran is one of:
* full — the candidate as configured;
* approximated — a cheaper algorithm of the same family (gradient_boosting as
  HistGradientBoosting) or bounded work (the MLP's steps per epoch, its time budget);
* subsampled — fitted on a seeded subsample of at most max_rows rows (every validation row is
  still scored);
* skipped — not run; the leaderboard says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medcast.config import LargeConfig

FULL, APPROXIMATED, SUBSAMPLED, SKIPPED = "full", "approximated", "subsampled", "skipped"


@dataclass(frozen=True)
class Plan:
    """How candidate `model` runs on n_rows training rows."""

    model: str
    # The registry record built (gradient_boosting may be built as hist_boosting).
    build_as: str
    hp: dict[str, Any]
    fidelity: str = FULL
    reasons: tuple[str, ...] = field(default_factory=tuple)
    max_rows: int | None = None

    @property
    def note(self) -> str:
        return "; ".join(self.reasons)


def _as_hist_boosting(hp: dict[str, Any]) -> dict[str, Any]:
    """GradientBoostingRegressor's settings in HistGradientBoostingRegressor's names (the row
    subsample has no counterpart and is left out)."""
    names = {"n_estimators": "max_iter", "learning_rate": "learning_rate",
             "max_depth": "max_depth", "min_samples_leaf": "min_samples_leaf",
             "max_features": "max_features"}
    return {names[k]: v for k, v in hp.items() if k in names}


def plan(model: str, hp: dict[str, Any], n_rows: int, large: LargeConfig) -> Plan:
    """The policy for `model` with hyperparameters `hp` on n_rows training rows."""
    skip = large.skip_above.get(model)
    if skip is not None and n_rows > skip:
        return Plan(model, model, dict(hp), SKIPPED,
                    (f"{n_rows} rows > train.large.skip_above.{model}={skip}",))
    build_as, hp, fidelity, reasons = model, dict(hp), FULL, []
    above = large.hist_boosting_above
    if model == "gradient_boosting" and above is not None and n_rows > above:
        build_as, hp, fidelity = "hist_boosting", _as_hist_boosting(hp), APPROXIMATED
        reasons.append(f"HistGradientBoosting: {n_rows} rows > train.large.hist_boosting_above="
                       f"{above}")
    if model == "mlp":
        steps = large.mlp_max_steps
        batch = int(hp.get("batch_size", 16))
        fit_rows = n_rows * (1.0 - float(hp.get("validation_split", 0.2)))
        if steps is not None and fit_rows / batch > steps:
            hp["batch_size"] = math.ceil(fit_rows / steps)
            fidelity = APPROXIMATED
            reasons.append(f"batch {batch} → {hp['batch_size']}: at most "
                           f"train.large.mlp_max_steps={steps} steps per epoch")
        if large.mlp_time_budget is not None:
            hp["time_budget"] = large.mlp_time_budget
            fidelity = APPROXIMATED
            reasons.append(f"stops after train.large.mlp_time_budget={large.mlp_time_budget:g} s "
                           "a fit")
    cap = large.max_rows.get(model)
    if cap is not None and n_rows > cap:
        fidelity = SUBSAMPLED
        reasons.append(f"fitted on {cap} of {n_rows} rows: train.large.max_rows.{model}={cap}")
    else:
        cap = None
    return Plan(model, build_as, hp, fidelity, tuple(reasons), cap)


def build(p: Plan, schema: Any, seed: int) -> Any:
    """The pipeline a plan runs (not for a skipped one)."""
    from medcast import models

    return models.build(p.build_as, p.hp, schema, seed)
