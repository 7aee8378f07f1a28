"""Stage tune: Optuna search (seeded TPE, median pruner over CV folds) on the selected candidate,
then refit the best on the whole training set and save it (skops / .keras). A refit over
train.serving_budget (its ONNX graph measured as train measures candidates, medcast.serving_cost)
is replaced by the defaults' refit, which train measured within it; tuning.json says so."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medcast import study as shared
from medcast import tracking
from medcast.config import Params, load_params
from medcast.errors import ArtifactError, ConfigError, cli, first_line
from medcast.features import FeatureSchema, load_schema, read_split
from medcast.metrics import capped, cross_validate, summarize
from medcast.models import large
from medcast.models.io import save_model
from medcast.serving_cost import measure, over_budget
from medcast.study import TICKET, SurplusTrial, budget_trials, count

log = logging.getLogger("medcast.tune")


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw one value per hyperparameter from its declared range or choices."""
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if "choices" in spec:
            values[name] = trial.suggest_categorical(name, list(spec["choices"]))
            continue
        try:
            low, high = spec["low"], spec["high"]
        except KeyError:
            raise ConfigError(f"search_space: '{name}' needs low/high or choices, got {spec}") from None
        log_scale = bool(spec.get("log", False))
        if isinstance(low, int) and isinstance(high, int) and not log_scale:
            values[name] = trial.suggest_int(name, low, high)
        else:
            values[name] = trial.suggest_float(name, float(low), float(high), log=log_scale)
    return values


def default_point(defaults: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The candidate's default hyperparameters that lie in the search space: tried first, so
    tuning never ends worse (in CV) than the defaults train scored."""
    point = {}
    for name, spec in space.items():
        value = defaults.get(name)
        if value is None or isinstance(value, bool):
            continue
        if "choices" in spec:
            if value in spec["choices"]:
                point[name] = value
        elif isinstance(value, int | float) and spec["low"] <= value <= spec["high"]:
            point[name] = value
    return point


def make_objective(params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame,
                   y: pd.Series) -> Any:
    import optuna
    from sklearn.utils._param_validation import InvalidParameterError

    base = dict(params.models[model].defaults)
    space = params.models[model].search_space
    cv, cluster = params.cv, params.trial_cluster
    worker = shared.process_label()
    X, y = screening_set(params, X, y)

    def objective(trial: optuna.Trial) -> float:
        if trial.user_attrs.get(TICKET) is None:
            raise SurplusTrial("no ticket left: the budget was claimed by other workers")
        trial.set_user_attr("worker", worker)
        hp = {**base, **suggest(trial, space)}
        plan = large.plan(model, hp, len(X), cv.large, cv.repeats)
        estimator = large.build(plan, schema, cv.seed)

        def report(k: int, folds: list[dict[str, float]]) -> None:
            trial.set_user_attr("folds", folds)  # kept for pruned trials too (MLflow)
            trial.report(sum(f["rmse"] for f in folds) / len(folds), step=k)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            folds = cross_validate(estimator, X, y, cv.folds, cv.seed, report, n_jobs=cv.n_jobs,
                                   cluster=cluster, max_rows=plan.max_rows, repeats=plan.repeats)
        except InvalidParameterError as err:
            raise ConfigError(f"conf/model/{model}.yaml: {err}") from None
        return summarize(folds)["rmse"]

    return objective


def screening_set(params: Params, X: pd.DataFrame, y: pd.Series
                  ) -> tuple[pd.DataFrame, pd.Series]:
    """The rows trials are scored on: all of them, or above cv.large.halving_above rows the
    stratified subsample train screened its candidates on (medcast.models.large)."""
    return large.screening_set(X, y, params.cv.large, params.cv.seed) or (X, y)


def run_study(params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame, y: pd.Series,
              on_trial: Any = None) -> Any:
    """The stage's search: the shared study (medcast.study.run) of `model`'s trials, the
    defaults first."""
    first = default_point(params.models[model].defaults, params.models[model].search_space)
    return shared.run(params, model, schema.dataset, X, make_objective(params, model, schema, X, y),
                      first, on_trial)


def confirm(params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame, y: pd.Series,
            study: Any) -> tuple[Any, list[dict[str, float]], list[dict[str, Any]]]:
    """The best trial and its folds on all rows: the study's best, or, when trials were scored
    on a subsample (screening_set), the best on all rows of its halving_keep best completed
    trials with distinct hyperparameters and the first (the defaults), each cross-validated
    again on every row (same folds as train's). Also one record per confirmed trial (empty
    without a subsample)."""
    import optuna

    large_cfg, cfg = params.cv.large, params.cv
    if large.screening_rows(len(X), large_cfg) is None:
        return study.best_trial, study.best_trial.user_attrs["folds"], []
    done = sorted((t for t in budget_trials(study) if t.state == optuna.trial.TrialState.COMPLETE),
                  key=lambda t: (t.value, t.number))
    distinct: dict[str, Any] = {}  # TPE may draw a point twice: confirm it once
    for trial in done:
        distinct.setdefault(json.dumps(trial.params, sort_keys=True, default=str), trial)
    # The defaults (the first ticket, default_point) are always confirmed too: the tuned model
    # is then never worse on all rows than the defaults train scored there.
    first = next((t for t in done if t.user_attrs.get(TICKET) == 0), None)
    ranked = list(distinct.values())
    forced = next((t for t in ranked if first is not None and t.params == first.params), None)
    best, best_folds, records = None, [], []
    for trial in large.keep(ranked, large_cfg, forced):
        hp = {**params.models[model].defaults, **trial.params}
        plan = large.plan(model, hp, len(X), large_cfg, cfg.repeats)
        folds = cross_validate(large.build(plan, schema, cfg.seed), X, y, cfg.folds, cfg.seed,
                               n_jobs=cfg.n_jobs, cluster=params.trial_cluster,
                               max_rows=plan.max_rows, repeats=plan.repeats)
        value = summarize(folds)["rmse"]
        records.append({"number": trial.number, "screening_value": trial.value, "value": value})
        log.info("trial %d confirmed on all %d rows: CV RMSE %.4g (%.4g on the subsample)",
                 trial.number, len(X), value, trial.value)
        if best is None or value < summarize(best_folds)["rmse"]:
            best, best_folds = trial, folds
    return best, best_folds, records


def refit(params: Params, model: str, hp: dict[str, Any], schema: FeatureSchema, X: pd.DataFrame,
          y: pd.Series, n_confirmed: int) -> tuple[Any, large.Plan, str]:
    """The tuned pipeline fitted on the training rows (as cv.large plans it), its plan, and
    the note on what ran (the plan's, and the screening of trials when n_confirmed)."""
    cv = params.cv
    plan = large.plan(model, hp, len(X), cv.large, cv.repeats)
    note = plan.note
    if n_confirmed:
        rows = large.screening_rows(len(X), cv.large)
        screening = (f"trials scored on a stratified {rows}-row subsample "
                     f"(cv.large.halving_above), the best {n_confirmed} confirmed on all "
                     f"{len(X)} rows")
        note = f"{note}; {screening}" if note else screening
    _, cut = shared.n_trials(params, model, len(X))
    if cut:
        note = f"{note}; {cut}" if note else cut
    rows = capped(range(len(X)), plan.max_rows, cv.seed, cv.folds)
    return large.build(plan, schema, cv.seed).fit(X.iloc[rows], y.iloc[rows]), plan, note


@dataclass(frozen=True)
class Tuned:
    """The kept trial, its folds on all rows, its hyperparameters, and its refit (refit())."""

    trial: Any
    folds: list[dict[str, float]]
    hp: dict[str, Any]
    estimator: Any
    plan: large.Plan
    note: str


def within_budget(params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame,
                  y: pd.Series, study: Any, tuned: Tuned, n_confirmed: int
                  ) -> tuple[Tuned, dict[str, Any]]:
    """`tuned` if its refit is within train.serving_budget; else the defaults' trial refitted
    (train measured the defaults within it when it selected the model), with the record
    tuning.json keeps ({"serving_budget": {best_trial, over, kept}}). When the defaults are over
    it too (train.select forced the model), `tuned` is kept with a warning."""
    over = over_budget_reason(params, tuned.estimator, schema, X)
    if not over or tuned.trial.user_attrs.get(TICKET) == 0:
        return tuned, {}
    first, folds = defaults_folds(params, model, schema, X, y, study)
    hp = {**params.models[model].defaults, **first.params}
    fallback = Tuned(first, folds, hp, *refit(params, model, hp, schema, X, y, n_confirmed))
    if over_budget_reason(params, fallback.estimator, schema, X) is not None:
        log.warning("the tuned model is over train.serving_budget (%s), as are the defaults "
                    "(train.select forced %s)", over, model)
        return tuned, {}
    log.warning("the best trial %d is over train.serving_budget (%s): keeping the defaults' "
                "trial %d, within it", tuned.trial.number, over, first.number)
    return fallback, {"serving_budget": {"best_trial": tuned.trial.number, "over": over,
                                         "kept": first.number}}


def over_budget_reason(params: Params, estimator: Any, schema: FeatureSchema,
                       X: pd.DataFrame) -> str | None:
    """Why the fitted `estimator` is over train.serving_budget (None: within it, or no limit
    set), measured on the first training row as train measures candidates."""
    budget = params.train.serving_budget
    if not budget.active:
        return None
    try:
        return over_budget(measure(estimator, schema, X.iloc[:1]), budget)
    except ArtifactError as err:
        return f"not exportable to ONNX: {first_line(str(err))}"


def defaults_folds(params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame,
                   y: pd.Series, study: Any) -> tuple[Any, list[dict[str, float]]]:
    """The defaults' trial (the first ticket) and its folds on all rows: its own when trials
    ran on all rows, else cross-validated again there (the same folds as train's)."""
    first = next((t for t in budget_trials(study) if t.user_attrs.get(TICKET) == 0
                  and t.state.name == "COMPLETE"), None)
    if first is None:  # it runs first and is never pruned (study.pruner): a worker failed it
        raise ArtifactError(f"study {study.study_name}: the defaults' trial (the first) did not "
                            "complete, so the tuned model over train.serving_budget has no "
                            "fallback; run `dvc repro tune` again")
    if large.screening_rows(len(X), params.cv.large) is None and "folds" in first.user_attrs:
        return first, first.user_attrs["folds"]
    cfg = params.cv
    plan = large.plan(model, {**params.models[model].defaults, **first.params}, len(X),
                      cfg.large, cfg.repeats)
    return first, cross_validate(large.build(plan, schema, cfg.seed), X, y, cfg.folds, cfg.seed,
                                 n_jobs=cfg.n_jobs, cluster=params.trial_cluster,
                                 max_rows=plan.max_rows, repeats=plan.repeats)


def _inputs(params: Params) -> tuple[str, FeatureSchema, pd.DataFrame, pd.Series]:
    paths = params.paths
    try:
        model = json.loads(Path(paths.selection).read_text())["model"]
    except FileNotFoundError:
        raise ArtifactError(f"{paths.selection}: not found; run `dvc repro train` "
                            "(or `dvc pull train`) first") from None
    schema = load_schema(Path(paths.schema))
    X, y = read_split(Path(paths.train), schema)
    return model, schema, X, y


def worker(params: Params) -> int:
    """Join the stage's study from any machine with the same params.yaml and data; run trials
    until the budget is used. Returns the number of trials run here."""
    model, schema, X, y = _inputs(params)
    study = shared.join(params, model, schema.dataset, X)
    if shared.closed(study):
        return 0
    return shared.take_part(study, make_objective(params, model, schema, X, y))


def stage(params: Params) -> None:
    import mlflow  # noqa: F401  (fail early if missing, before minutes of tuning)

    paths = params.paths
    model, schema, X, y = _inputs(params)
    n_budget, cut = shared.n_trials(params, model, len(X))
    if cut:
        log.info("%s: %s", model, cut)

    def on_trial(study: Any, trial: Any) -> None:
        value = f"{trial.value:.4g}" if trial.value is not None else trial.state.name.lower()
        best = count(study, "COMPLETE") and f"{study.best_value:.4g}"
        log.info("trial %d (%d/%d finished): CV RMSE %s (best %s)", trial.number,
                 count(study, "COMPLETE", "PRUNED"), n_budget, value, best or "-")

    mlflow_ = tracking.start(schema.dataset)
    with mlflow_.start_run(run_name=f"tune-{model}",
                           tags=tracking.run_tags("tune", candidate=model)):
        study = run_study(params, model, schema, X, y, on_trial)
        shared.log_trials(mlflow_, study, model)
        finished = count(study, "COMPLETE", "PRUNED")
        if not count(study, "COMPLETE"):
            raise ArtifactError(f"study {study.study_name}: no trial completed ({finished} "
                                "finished); see the log above")
        best, folds, confirmed = confirm(params, model, schema, X, y, study)
        hp = {**params.models[model].defaults, **best.params}
        cv = summarize(folds)
        log.info("best trial %d of %d: %s → CV RMSE %.4g, R² %.3f; refitting on all %d rows",
                 best.number, finished, best.params, cv["rmse"], cv["r2"], len(X))
        tuned = Tuned(best, folds, hp, *refit(params, model, hp, schema, X, y, len(confirmed)))
        tuned, budget_record = within_budget(params, model, schema, X, y, study, tuned,
                                             len(confirmed))
        best, folds, hp, estimator, plan, note = (tuned.trial, tuned.folds, tuned.hp,
                                                  tuned.estimator, tuned.plan, tuned.note)
        cv = summarize(folds)
        mlflow_.log_params({"dataset": schema.dataset, "model": model, "tune.n_trials": finished,
                            "study": study.study_name, **tracking.flat("hp", hp)})
        mlflow_.log_metrics(tracking.flat("cv", cv))

    meta = {"model": model, "dataset": schema.dataset, "params": hp, "cv": cv,
            **({"fidelity": plan.fidelity, "fidelity_note": note} if note else {}),
            "folds": folds, "study": study.study_name, "best_trial": best.number}
    save_model(estimator, Path(paths.model_dir), meta)
    Path(paths.tuning).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.tuning).write_text(json.dumps({
        "model": model, "study": study.study_name, "n_trials": finished,
        "best_trial": best.number, "best_params": best.params, "cv": cv,
        "trials": shared.trial_records(study),
        **({"confirmed_on_all_rows": confirmed} if confirmed else {}),
        **budget_record,
    }, indent=2, default=str) + "\n")


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m medcast.tune", description=(
        "Stage tune. With --worker: join the running stage's Optuna study through "
        "tune.storage (PostgreSQL) from another machine or process, run trials, exit."))
    ap.add_argument("--worker", action="store_true", help="join the stage's study as a worker")
    args = ap.parse_args(argv)
    params = load_params()
    if args.worker:
        worker(params)
    else:
        stage(params)


if __name__ == "__main__":
    main()
