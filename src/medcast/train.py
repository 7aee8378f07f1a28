"""Stage train: cross-validate every candidate and the null model `mean` on the same seeded
repeated K-fold (params `cv`), fit each candidate on the training set for its apparent scores,
measure what serving each would cost (medcast.serving_cost), compare them by paired fold
differences (medcast.selection), select one by train.rule among those within
train.serving_budget (medcast.candidates) and say whether any beats the mean; write the
leaderboard, the per-fold scores and the selection; log each candidate to MLflow. The test
split is not read here: it is used once, by evaluate, on the selected model."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from medcast import models, tracking
from medcast.candidates import (
    CandidateResult,
    choose,
    fold_table,
    leaderboard,
)
from medcast.config import load_params
from medcast.errors import ArtifactError, NoSignalError, cli, first_line
from medcast.features import FeatureSchema, load_schema, read_split
from medcast.metrics import capped, fit_score, fold_indices, scores, summarize
from medcast.models import NULL_MODEL as NULL
from medcast.models import large
from medcast.parallel import completed
from medcast.params import CVConfig, ServingBudget
from medcast.selection import Selection, as_record, fold_sizes
from medcast.serving_cost import measure, over_budget

log = logging.getLogger("medcast.train")


def _full_fit(estimator: Any, X: pd.DataFrame, y: pd.Series, rows: Any,
              schema: FeatureSchema | None = None,
              unless_over: ServingBudget | None = None) -> dict[str, Any]:
    """One task: fit on `rows` of the training set; its (apparent) scores there, MLP history;
    with `schema`, the fitted pipeline's serving cost measured here, in the worker (only the
    numbers travel back), timed on the first of `rows`, or why it cannot be exported. With
    `unless_over`, a fit over that budget skips its apparent scores (`train` empty): it will not
    be selected, and predicting every training row is what costs (kNN at 1,000×: minutes)."""
    model = estimator.fit(X.iloc[rows], y.iloc[rows])
    target = model.named_steps["model"]
    out: dict[str, Any] = {"history": target_units(getattr(target.regressor_, "history_", {}),
                                                   target.transformer_)}
    if schema is not None:
        start = time.perf_counter()
        try:
            out["cost"] = measure(model, schema, X.iloc[[rows[0]]])
        except ArtifactError as err:  # a candidate that cannot be served
            out["unexportable"] = f"not exportable to ONNX: {first_line(err)}"
        out["measure_seconds"] = time.perf_counter() - start
    out["train"] = ({} if unless_over is not None and _over(out, unless_over)
                    else scores(y, model.predict(X)))
    return out


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def _run(names: list[str], hps: dict[str, dict[str, Any]], cfg: CVConfig,
         schema: FeatureSchema, train: tuple[pd.DataFrame, pd.Series], full: bool,
         on_result: Callable[[CandidateResult], None] | None = None,
         budget: ServingBudget | None = None,
         fitted: dict[str, tuple[Any, float]] | None = None) -> Iterator[CandidateResult]:
    """Repeated K-fold CV of each candidate on `train` (X, y), then (with `full`) one fit on all
    of X for its apparent scores and (with an active `budget`) its serving cost; results in the
    candidates' order (see evaluate_candidates), and `on_result` called with each as soon as its
    last task finishes. `fitted` holds final fits already done (_final_fits), not run again."""
    X, y = train
    plans = [large.plan(name, hps[name], len(X), cfg.large, cfg.repeats) for name in names]
    splits = fold_indices(len(X), cfg.folds, cfg.seed, cfg.repeats)
    # Expensive candidates' tasks (the MLP's) go first: they are the longest, and a worker
    # process that imported TensorFlow in its first task keeps it (joblib's loky restarts a
    # worker whose memory grew by 300 MB after its first task, which would import TensorFlow
    # again for every fold).
    slow = {p.model for p in plans if models.get(p.build_as).expensive}
    run = [p for p in plans if p.model in slow] + [p for p in plans if p.model not in slow]
    calls: list[tuple[Any, tuple[Any, ...]]] = []
    owner: list[str] = []  # the candidate of each call
    for p in run:
        if p.fidelity == large.SKIPPED:
            continue
        estimator = large.build(p, schema, cfg.seed)
        calls += [(_timed, (fit_score, estimator, X, y, capped(fit, p.max_rows, cfg.seed, k), val))
                  for k, (fit, val) in enumerate(splits[:cfg.folds * p.repeats])]
        final = full and p.model not in (fitted or {})
        if final:
            calls.append(_final_call(p, estimator, X, y, cfg, schema, budget))
        owner += [p.model] * (cfg.folds * p.repeats + final)
    done = {p.model: CandidateResult(p.model, dict(hps[p.model]), [], {}, {}, 0.0, {},
                                     p.fidelity, p.note)
            for p in plans if p.fidelity == large.SKIPPED}
    by_plan, expected = {p.model: p for p in plans}, Counter(owner)
    tasks: dict[str, dict[int, Any]] = {}
    for i, result in completed(calls, cfg.n_jobs, cfg.cluster):
        mine = tasks.setdefault(owner[i], {})
        mine[i] = result
        if len(mine) == expected[owner[i]]:
            prefit = [fitted[owner[i]]] if owner[i] in (fitted or {}) else []
            done[owner[i]] = _result(by_plan[owner[i]], hps, [mine[k] for k in sorted(mine)]
                                     + prefit, cfg.folds * by_plan[owner[i]].repeats, full, budget)
            if on_result is not None:
                on_result(done[owner[i]])
        while plans and plans[0].model in done:  # in the candidates' order
            yield done.pop(plans.pop(0).model)
    while plans:  # skipped candidates after the last task
        yield done.pop(plans.pop(0).model)


def _final_call(p: large.Plan, estimator: Any, X: pd.DataFrame, y: pd.Series, cfg: CVConfig,
                schema: FeatureSchema, budget: ServingBudget | None, first: bool = False
                ) -> tuple[Any, tuple[Any, ...]]:
    """The task of a candidate's final fit on all rows (as cv.large plans it), measuring its
    serving cost when `budget` sets a limit (not for the null model); `first`: before its
    folds (_final_fits), without apparent scores if over the budget."""
    everything = capped(range(len(X)), p.max_rows, cfg.seed, cfg.folds)
    costed = budget is not None and budget.active and p.model != NULL
    return (_timed, (_full_fit, estimator, X, y, everything, schema if costed else None,
                     budget if first and costed else None))


def _final_fits(names: list[str], hps: dict[str, dict[str, Any]], cfg: CVConfig,
                schema: FeatureSchema, X: pd.DataFrame, y: pd.Series, budget: ServingBudget,
                forced: str | None = None) -> dict[str, tuple[Any, float]]:
    """Each candidate's final fit on all rows with its serving cost, before its folds: under
    successive halving a candidate over the budget is then not cross-validated on all rows
    (at 1,000× insurance kNN's folds there took 639 busy s, only to find its graph 94 MB)."""
    plans = [large.plan(n, hps[n], len(X), cfg.large, cfg.repeats) for n in names]
    calls = [_final_call(p, large.build(p, schema, cfg.seed), X, y, cfg, schema, budget,
                         first=p.model != forced) for p in plans]
    out: dict[str, tuple[Any, float]] = {}
    for i, result in completed(calls, cfg.n_jobs, cfg.cluster):
        out[names[i]] = result
    return out


def _over(fit: dict[str, Any], budget: ServingBudget) -> str | None:
    """Why a final fit (_full_fit's result) cannot be served within `budget` (None: it can)."""
    return fit.get("unexportable") or (over_budget(fit["cost"], budget) if fit.get("cost")
                                       else None)


def _result(p: large.Plan, hps: dict[str, dict[str, Any]], tasks: list[Any], n: int,
            full: bool, budget: ServingBudget | None = None) -> CandidateResult:
    """A candidate's result from its tasks' (value, seconds), in submission order. Its seconds
    are its fits' and scores' (the serving cost's measurement left out)."""
    folds = [fold for fold, _ in tasks[:n]]
    fit = tasks[-1][0] if full else {"train": {}, "history": {}}
    cost = fit.get("cost")
    why = _over(fit, budget) if budget else None
    return CandidateResult(model=p.model, params=dict(hps[p.model]), folds=folds,
                           cv=summarize(folds), train=fit["train"],
                           seconds=sum(s for _, s in tasks) - fit.get("measure_seconds", 0.0),
                           history=fit["history"], fidelity=p.fidelity, note=p.note,
                           cost=cost, over_budget=why)


def evaluate_candidates(
    names: list[str],
    hps: dict[str, dict[str, Any]],
    cfg: CVConfig,
    schema: FeatureSchema,
    X: pd.DataFrame,
    y: pd.Series,
    forced: str | None = None,
    on_result: Callable[[CandidateResult], None] | None = None,
    budget: ServingBudget | None = None,
) -> Iterator[CandidateResult]:
    """Repeated K-fold CV of each candidate on the training set (params `cv`), then one fit on
    all of it for its apparent scores. Every fold and final fit of every candidate is one
    task for cv.n_jobs processes (or cv.cluster); results come in the candidates' order, and do
    not depend on where they ran. `seconds` sums the candidate's tasks (busy time, not wall
    time).

    With a `budget` (train.serving_budget) that sets a limit, each candidate's final fit also
    measures its serving cost (medcast.serving_cost) in its task, and `over_budget` says why a
    candidate is over it (or cannot be exported to ONNX); the null model is not measured.

    Above cv.large.halving_above rows (successive halving, medcast.models.large): every
    candidate is first cross-validated on a stratified subsample of that many rows; the best
    halving_keep (and the `forced` one, train.select) then run as above on all rows, the others
    come back `screened` with their subsample CV scores and no train scores; one confirmed but
    over the serving `budget` is replaced by the next best screened one (until halving_keep
    can be served, or none is left). Without screening,
    `on_result` is called with each candidate as soon as it finishes (progress); with it, each
    rung logs its candidates as they finish."""
    subsample = large.screening_set(X, y, cfg.large, cfg.seed)
    if subsample is None:
        yield from _run(names, hps, cfg, schema, (X, y), True, on_result, budget)
        return
    rows = len(subsample[0])
    # Candidates skipped on all rows are not screened (their rows come back as skipped), nor is
    # the null model: it costs nothing, and every candidate is compared with it on all rows.
    skipped = {n for n in names
               if large.plan(n, hps[n], len(X), cfg.large, cfg.repeats).fidelity == large.SKIPPED}
    screened = {r.model: r for r in _run([n for n in names if n not in skipped | {NULL}], hps,
                                         cfg, schema, subsample, False,
                                         _progress(f"screened on {rows} of {len(X)} rows"))}
    ranked = sorted(screened, key=lambda n: screened[n].cv["rmse"])
    kept = large.keep(ranked, cfg.large, forced) + [n for n in names if n == NULL]
    on_all = _progress(f"confirmed on all {len(X)} rows")
    # A candidate over the serving budget cannot be selected: with a budget, each one's final
    # fit runs first, and one over it (unless forced) is not cross-validated on all rows; the
    # next best screened ones are confirmed in its place, until halving_keep can be served or
    # none is left (on the resampled insurance table the screening's top two are kNN and the
    # random forest; at 1,000× both graphs are over 50 MB: 94 MB, and 104 MB fitted on 50,000
    # rows).
    costly: dict[str, CandidateResult] = {}  # over the budget, left as screened

    def confirm(batch: list[str]) -> dict[str, CandidateResult]:
        fitted = (_final_fits([m for m in batch if m != NULL], hps, cfg, schema, X, y, budget,
                              forced)
                  if budget is not None and budget.active else {})
        for m, (fit, seconds) in fitted.items():
            why = _over(fit, budget) if budget is not None else None
            if why and m != forced:
                screened[m].cost, screened[m].over_budget = fit.get("cost"), why
                screened[m].seconds += seconds
                costly[m] = screened[m]
                log.info("%-17s not confirmed on all rows: %s", m, why)
        return {r.model: r for r in _run([m for m in batch if m not in costly], hps, cfg, schema,
                                         (X, y), True, on_all, budget,
                                         {m: f for m, f in fitted.items() if m not in costly})}

    confirmed = confirm(kept)
    instead: list[str] = []
    while True:
        servable = sum(not r.over_budget for m, r in confirmed.items() if m != NULL)
        more = [m for m in ranked if m not in confirmed and m not in costly
                ][:max(0, cfg.large.halving_keep - servable)]
        if not more:
            break
        instead += more
        confirmed |= confirm(more)
    for name in names:
        if name in confirmed:
            r = confirmed[name]
            if name in screened:
                r.seconds += screened[name].seconds
                note = large.screened_note(rows, len(X), ranked.index(name) + 1, len(ranked),
                                           cfg.large, kept=True)
                if name in instead:
                    note += " in place of a candidate over train.serving_budget"
                r.note = f"{r.note}; {note}" if r.note else note
        elif name in screened:
            r = screened[name]
            note = large.screened_note(
                rows, len(X), ranked.index(name) + 1, len(ranked), cfg.large, kept=False,
                instead=("over train.serving_budget when fitted on all rows, so not "
                         "cross-validated there") if name in costly else None)
            r.fidelity, r.note = large.SCREENED, f"{r.note}; {note}" if r.note else note
        else:
            p = large.plan(name, hps[name], len(X), cfg.large, cfg.repeats)
            r = CandidateResult(name, dict(hps[name]), [], {}, {}, 0.0, {}, p.fidelity, p.note)
        yield r


def _progress(what: str) -> Callable[[CandidateResult], None]:
    """A log line as each candidate of a successive-halving rung finishes (the stage's own
    lines, in the candidates' order, come once every rung is done)."""
    def say(r: CandidateResult) -> None:
        if r.model != NULL:
            log.info("%-17s %s: CV RMSE %.4g, R² %.3f (%.1fs)%s", r.model, what, r.cv["rmse"],
                     r.cv["r2"], r.seconds,
                     f"; not selectable: {r.over_budget}" if r.over_budget else "")
    return say


def evaluate_candidate(name: str, hp: dict[str, Any], cfg: CVConfig, schema: FeatureSchema,
                       X: pd.DataFrame, y: pd.Series) -> CandidateResult:
    """One candidate (see evaluate_candidates)."""
    return next(evaluate_candidates([name], {name: hp}, cfg, schema, X, y))


def target_units(history: dict[str, list[float]], scaler: Any) -> dict[str, list[float]]:
    """The MLP learns a standardised target: report its MAE curves in the target's units."""
    scale = float(scaler.scale_[0])
    return {
        k: [v * scale for v in vals] if k.endswith("mae") else vals for k, vals in history.items()
    }


def history_frame(history: dict[str, list[float]]) -> pd.DataFrame:
    """Per-epoch MAE, validation MAE and learning rate (an empty table when no MLP ran)."""
    cols = ["epoch", "mae", "val_mae", "learning_rate"]
    if not history:
        return pd.DataFrame(columns=cols)
    n = len(history["loss"])
    return pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "mae": history.get("mae", [float("nan")] * n),
            "val_mae": history.get("val_mae", [float("nan")] * n),
            "learning_rate": history.get("learning_rate", [float("nan")] * n),
        }
    )[cols]


def _log_mlflow(dataset: str, cfg: CVConfig, results: list[CandidateResult],
                chosen: Selection) -> None:
    mlflow = tracking.start(dataset)
    for r in results:
        with mlflow.start_run(
            run_name=f"cv-{r.model}", tags=tracking.run_tags("train", candidate=r.model)
        ):
            # Named as in params.yaml (cv.*) and conf/model (hp.*), as `dvc exp show` does.
            mlflow.log_params({"dataset": dataset, "model": r.model, "cv.folds": cfg.folds,
                               "cv.repeats": cfg.repeats, "cv.seed": cfg.seed,
                               "fidelity": r.fidelity, **tracking.flat("hp", r.params)})
            for k, fold in enumerate(r.folds):
                mlflow.log_metrics(tracking.flat("fold", fold), step=k)
            mlflow.log_metrics({**tracking.flat("cv", r.cv), **tracking.flat("train", r.train),
                                **chosen.comparisons.get(r.model, {}), "fit_seconds": r.seconds,
                                "selected": float(r.model == chosen.model),
                                **({"onnx_mb": r.cost.onnx_mb, "serve_ms": r.cost.ms}
                                   if r.cost else {})})


def _say(i: int, n: int, r: CandidateResult) -> None:
    if r.fidelity == large.SKIPPED:
        log.info("[%d/%d] %-17s skipped: %s", i, n, r.model, r.note)
    else:
        cost = f", ONNX {r.cost.onnx_mb:.3g} MB, {r.cost.ms:.3g} ms/row" if r.cost else ""
        log.info("[%d/%d] %-17s CV RMSE %.4g ± %.3g, R² %.3f (%.1fs)%s%s%s", i, n, r.model,
                 r.cv["rmse"], r.cv["rmse_std"], r.cv["r2"], r.seconds, cost,
                 f" [{r.fidelity}: {r.note}]" if r.note else "",
                 f"; not selectable: {r.over_budget}" if r.over_budget else "")


def _write(paths: Any, table: pd.DataFrame, folds: pd.DataFrame, history: pd.DataFrame,
           selection: dict[str, Any]) -> None:
    Path(paths.leaderboard).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.leaderboard_csv, index=False)
    records = [{k: None if isinstance(v, float) and v != v else v for k, v in row.items()}
               for row in table.to_dict(orient="records")]  # a skipped candidate's NaN: null
    Path(paths.leaderboard).write_text(json.dumps(records, indent=2) + "\n")
    folds.to_csv(paths.cv_scores, index=False)
    history.to_csv(paths.history, index=False)
    Path(paths.selection).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.selection).write_text(json.dumps(selection, indent=2) + "\n")


@cli
def main() -> None:
    params = load_params()
    cfg, cv, paths = params.train, params.cv, params.paths
    models.check_configs(list(params.models))
    schema = load_schema(Path(paths.schema))
    X, y = read_split(Path(paths.train), schema)

    names = [NULL, *params.candidates]
    hps = {NULL: {}, **{n: params.models[n].defaults for n in params.candidates}}
    said: list[str] = []

    def say(r: CandidateResult) -> None:  # as each candidate finishes, whatever its order
        said.append(r.model)
        _say(len(said), len(names), r)

    results = []
    for r in evaluate_candidates(names, hps, cv, schema, X, y, cfg.select, on_result=say,
                                 budget=cfg.serving_budget):
        if r.model not in said:
            say(r)
        results.append(r)
    folds = fold_table(results, cv.folds)
    chosen = choose(results, folds, cfg.rule, cfg.select, cfg.serving_budget,
                    *fold_sizes(len(X), cv.folds))
    by = {r.model: r for r in results}
    log.info("selected %s (%s)", chosen.model, chosen.reason)
    line = chosen.signal.line(schema.target)
    if not chosen.signal.signal:
        if cfg.require_signal:
            raise NoSignalError(f"{line} (train.require_signal: true)")
        log.warning("%s", line)
    else:
        log.info("signal: %s", line)
    mlp = next((r for r in results if r.history), None)
    _write(paths, leaderboard(results, chosen), folds, history_frame(mlp.history if mlp else {}),
           {"model": chosen.model, "reason": chosen.reason, "rule": cfg.rule,
            "params": by[chosen.model].params, "cv": by[chosen.model].cv,
            "signal": as_record(chosen, schema.target)})
    _log_mlflow(schema.dataset, cv, results, chosen)


if __name__ == "__main__":
    main()
