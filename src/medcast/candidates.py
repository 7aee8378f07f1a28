"""The candidates' results and how one is chosen: each candidate's cross-validated and
apparent scores with its serving cost (CandidateResult, filled by the train stage), which of them
can be selected (confirmed on all rows, within train.serving_budget), the selection among those
(medcast.selection's rule and paired comparisons), and the tables train writes from them: the
per-fold scores (reports/cv_scores.csv) and the leaderboard."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from medcast.errors import ConfigError
from medcast.metrics import METRICS
from medcast.models import NULL_MODEL as NULL
from medcast.models import large
from medcast.params import ServingBudget
from medcast.selection import Selection, select
from medcast.serving_cost import ServingCost, significant

log = logging.getLogger("medcast.train")  # the stage it runs in names its messages


@dataclass
class CandidateResult:
    model: str
    params: dict[str, Any]
    folds: list[dict[str, float]]
    cv: dict[str, float]
    train: dict[str, float]
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    # What ran (medcast.models.large): full, approximated, subsampled or skipped, and why.
    fidelity: str = large.FULL
    note: str = ""
    # The fitted candidate's serving cost (medcast.serving_cost; None: not measured, i.e. the
    # budget is off, or the candidate was not fitted on all rows), and why it is over
    # train.serving_budget (None: within it, or not measured).
    cost: ServingCost | None = None
    over_budget: str | None = None


def confirmed(results: list[CandidateResult]) -> list[str]:
    """Candidates cross-validated on all rows (not skipped, not only screened), the null model
    excluded: those compared with the best on the same folds."""
    return [r.model for r in results if r.model != NULL
            and r.fidelity not in (large.SKIPPED, large.SCREENED)]


def eligible(results: list[CandidateResult]) -> list[str]:
    """Candidates that can be selected: confirmed on all rows and within train.serving_budget
    (`over_budget` None)."""
    over = {r.model for r in results if r.over_budget}
    return [m for m in confirmed(results) if m not in over]


def over_budget_error(results: list[CandidateResult], budget: ServingBudget) -> ConfigError:
    """The error when every confirmed candidate is over train.serving_budget: each one's reason,
    and what to change."""
    reasons = "; ".join(f"{r.model}: {r.over_budget}" for r in results if r.over_budget)
    return ConfigError(
        f"train: every candidate is over train.serving_budget (max_mb {budget.max_mb}, max_ms "
        f"{budget.max_ms}), none can be served: {reasons}. Raise train.serving_budget.max_mb or "
        ".max_ms, or set a limit to null (dvc exp run -S train.serving_budget.max_ms=null)")


def check_forced(results: list[CandidateResult], forced: str | None) -> str | None:
    """train.select names a candidate that ran on all rows; why it is over train.serving_budget
    (None: within it, or nothing forced). Forcing one over the budget is allowed: its caller
    warns and the selection's reason says so."""
    chosen = next((r for r in results if r.model == forced), None)
    if chosen is not None and chosen.fidelity == large.SKIPPED:
        raise ConfigError(f"train.select: '{forced}' was skipped ({chosen.note})")
    return chosen.over_budget if chosen is not None else None


def choose(results: list[CandidateResult], folds: pd.DataFrame, rule: str, forced: str | None,
           budget: ServingBudget, n_fit: int, n_val: int) -> Selection:
    """The selection (medcast.selection) among the eligible candidates: train.rule picks among
    those within train.serving_budget, so every comparison is with the best servable one (a
    candidate over it is still compared with that best). A forced candidate is selected
    whatever its cost, its reason saying if it is over the budget."""
    forced_over = check_forced(results, forced)
    choices = eligible(results)
    ran = confirmed(results)
    if not ran and not any(r.over_budget for r in results):
        raise ConfigError("train: every candidate was skipped (cv.large.skip_above)")
    if not choices and forced is None:  # under halving, those over it may not have run
        raise over_budget_error(results, budget)
    chosen = select(folds, {r.model: r.cv for r in results}, choices or [forced], rule, forced,
                    n_fit, n_val, also=[m for m in ran if m not in choices])
    if forced_over:
        log.warning("train.select forces %s, over the serving budget: %s", forced, forced_over)
        return replace(chosen, reason=f"{chosen.reason} (over the serving budget: {forced_over})")
    return chosen


def fold_table(results: list[CandidateResult], n_folds: int) -> pd.DataFrame:
    """reports/cv_scores.csv: one row per model, repeat and fold of the repeated K-fold."""
    return pd.DataFrame([{"model": r.model, "repeat": k // n_folds, "fold": k % n_folds, **f}
                         for r in results for k, f in enumerate(r.folds)])


def leaderboard(results: list[CandidateResult], chosen: Selection | None = None) -> pd.DataFrame:
    """Mean CV and apparent (train) scores, and with `chosen` each candidate's paired difference
    in CV RMSE to the best and to the null model (95 % intervals, medcast.selection) and which
    was selected. No test scores: the test split is used once, on the selected model. The
    wall-clock fit time goes to MLflow (`fit_seconds`) and the log, never into this DVC output,
    so the same inputs give the same bytes; so does the measured latency (`serve_ms`): a row
    says only whether the candidate is within train.serving_budget (`serving`: "within budget",
    or why it is not selectable; empty when not measured) and its ONNX graph's size in MB
    (`onnx_mb`, 3 significant digits)."""
    rows = []
    by_cv = sorted((r for r in results if r.fidelity != large.SKIPPED), key=lambda r: r.cv["rmse"])
    # Screened candidates after those that ran on all rows: their CV is the subsample's.
    ran = ([r for r in by_cv if r.fidelity != large.SCREENED]
           + [r for r in by_cv if r.fidelity == large.SCREENED])
    compared = chosen.comparisons if chosen else {}
    for r in ran:
        row: dict[str, Any] = {"model": r.model}
        row.update({f"cv_{k}": v for k, v in r.cv.items()})
        row.update({f"train_{m}": r.train.get(m, float("nan")) for m in METRICS})
        if chosen is not None:
            row.update({k: compared.get(r.model, {}).get(k, float("nan")) for k in COMPARED})
            row["selected"] = r.model == chosen.model
        row.update({"fidelity": r.fidelity, "fidelity_note": r.note,
                    "onnx_mb": significant(r.cost.onnx_mb) if r.cost else float("nan"),
                    "serving": serving(r)})
        rows.append(row)
    # Skipped candidates last, without scores (null in the JSON, empty in the CSV; a screened
    # one's train scores and comparisons likewise).
    rows += [{"model": r.model, "fidelity": r.fidelity, "fidelity_note": r.note,
              "onnx_mb": float("nan"), "serving": ""}
             for r in results if r.fidelity == large.SKIPPED]
    table = pd.DataFrame(rows)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def serving(r: CandidateResult) -> str:
    """The leaderboard's `serving`: why a candidate is over train.serving_budget, "within
    budget", or empty when its cost was not measured."""
    if r.over_budget:
        return r.over_budget
    return "within budget" if r.cost else ""


COMPARED = ("vs_best", "vs_best_low", "vs_best_high", "vs_null", "vs_null_low", "vs_null_high")
