"""Stage tune: Optuna search (seeded TPE, median pruner over CV folds) on the selected candidate,
then refit the best on the whole training set and save it (skops / .keras)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import pandas as pd

from medcast import tracking
from medcast.config import Params, load_params
from medcast.errors import ArtifactError, ConfigError, cli
from medcast.features import FeatureSchema, load_schema, read_split
from medcast.metrics import capped, cross_validate, summarize
from medcast.models import large
from medcast.models.io import save_model
from medcast.optuna_storage import POLL_S as _POLL_S
from medcast.optuna_storage import open_storage, shown_url

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
            raise ConfigError(
                f"search_space: '{name}' needs low/high or choices, got {spec}"
            ) from None
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


def study_name(params: Params, model: str, dataset: str, X: pd.DataFrame) -> str:
    """Deterministic per (dataset, data, model, search setup): workers can join it by name."""
    cfg = params.models[model]
    digest = hashlib.sha256(
        json.dumps([
            dataset, model, cfg.defaults, cfg.search_space, params.tune.seed, params.train.seed,
            params.train.cv_folds, pd.util.hash_pandas_object(X).sum().item(),
        ], sort_keys=True, default=str).encode()
    ).hexdigest()[:10]
    return f"{dataset}-{model}-{digest}"


# A study's budget is n_trials "tickets": WAITING trials the stage enqueues. Every process
# (the stage and any worker) runs only ticketed trials, so finished trials == n_trials however
# many workers join; a trial Optuna creates once the tickets are gone fails as surplus.
TICKET = "ticket"
CLOSED = "closed"  # study attribute the stage sets when it is done: workers stop


class SurplusTrial(Exception):
    """The budget was claimed by other processes between the check and this trial."""


def _sampler(seed: int) -> Any:
    import optuna

    # constant_liar: trials running elsewhere count as bad, so workers do not all sample the
    # same point; with one process nothing runs elsewhere and the sequence stays seeded.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner() -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def count(study: Any, *states: str) -> int:
    import optuna

    wanted = tuple(optuna.trial.TrialState[s] for s in states)
    return len(study.get_trials(deepcopy=False, states=wanted))


def fold_cluster(params: Params) -> str | None:
    """Where the trials' CV folds run: tune.cluster, or else where train's fits do."""
    return params.tune.cluster or params.train.cluster


def make_objective(params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame,
                   y: pd.Series) -> Any:
    import optuna
    from sklearn.utils._param_validation import InvalidParameterError

    base = dict(params.models[model].defaults)
    space = params.models[model].search_space
    train_cfg, cluster = params.train, fold_cluster(params)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    X, y = screening_set(params, X, y)

    def objective(trial: optuna.Trial) -> float:
        if trial.user_attrs.get(TICKET) is None:
            raise SurplusTrial("no ticket left: the budget was claimed by other workers")
        trial.set_user_attr("worker", worker)
        hp = {**base, **suggest(trial, space)}
        plan = large.plan(model, hp, len(X), train_cfg.large)
        estimator = large.build(plan, schema, train_cfg.seed)

        def report(k: int, folds: list[dict[str, float]]) -> None:
            trial.set_user_attr("folds", folds)  # kept for pruned trials too (MLflow)
            trial.report(sum(f["rmse"] for f in folds) / len(folds), step=k)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            folds = cross_validate(estimator, X, y, train_cfg.cv_folds, train_cfg.seed, report,
                                   n_jobs=train_cfg.n_jobs, cluster=cluster,
                                   max_rows=plan.max_rows)
        except InvalidParameterError as err:
            raise ConfigError(f"conf/model/{model}.yaml: {err}") from None
        return summarize(folds)["rmse"]

    return objective


def screening_set(params: Params, X: pd.DataFrame, y: pd.Series
                  ) -> tuple[pd.DataFrame, pd.Series]:
    """The rows trials are scored on: all of them, or above train.large.halving_above rows the
    stratified subsample train screened its candidates on (medcast.models.large)."""
    rows = large.screening_rows(len(X), params.train.large)
    if rows is None:
        return X, y
    sub = large.stratified_subsample(y, rows, params.train.seed)
    return X.iloc[sub].reset_index(drop=True), y.iloc[sub].reset_index(drop=True)


def confirm(params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame, y: pd.Series,
            study: Any) -> tuple[Any, list[dict[str, float]], list[dict[str, Any]]]:
    """The best trial and its folds on all rows: the study's best, or, when trials were scored
    on a subsample (screening_set), the best on all rows of its halving_keep best completed
    trials with distinct hyperparameters and the first (the defaults), each cross-validated
    again on every row (same folds as train's). Also one record per confirmed trial (empty
    without a subsample)."""
    import optuna

    large_cfg, cfg = params.train.large, params.train
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
        plan = large.plan(model, hp, len(X), large_cfg)
        folds = cross_validate(large.build(plan, schema, cfg.seed), X, y, cfg.cv_folds,
                               cfg.seed, n_jobs=cfg.n_jobs, cluster=fold_cluster(params),
                               max_rows=plan.max_rows)
        value = summarize(folds)["rmse"]
        records.append({"number": trial.number, "screening_value": trial.value, "value": value})
        log.info("trial %d confirmed on all %d rows: CV RMSE %.4g (%.4g on the subsample)",
                 trial.number, len(X), value, trial.value)
        if best is None or value < summarize(best_folds)["rmse"]:
            best, best_folds = trial, folds
    return best, best_folds, records


def work(study: Any, objective: Any, on_trial: Any = None, deadline: float | None = None) -> None:
    """Run ticketed trials until none is left, the study is closed or the deadline passes."""

    def stop_when_done(study: Any, trial: Any) -> None:
        if on_trial is not None and trial.user_attrs.get(TICKET) is not None:
            on_trial(study, trial)
        if not count(study, "WAITING") or study.user_attrs.get(CLOSED):
            study.stop()

    while count(study, "WAITING") and not study.user_attrs.get(CLOSED):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        study.optimize(objective, timeout=left, callbacks=[stop_when_done],
                       catch=(SurplusTrial,))


def run_study(
    params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame, y: pd.Series,
    on_trial: Any = None,
) -> Any:
    """The stage's study: a fresh seeded one (a leftover of the same name is replaced, so reruns
    match) with n_trials tickets, run here and by any worker that joins; returns once every
    ticket is finished (a killed worker's trial is failed after grace_period and retried)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are raised or logged here
    cfg = params.tune
    space = params.models[model].search_space
    name = study_name(params, model, schema.dataset, X)
    storage = open_storage(cfg)
    with contextlib.suppress(KeyError):  # no leftover study of that name
        optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                sampler=_sampler(cfg.seed), pruner=_pruner())
    study.set_user_attr("model", model)
    # Without a search space there is nothing to tune: one trial scores the defaults.
    n_trials = cfg.n_trials if space else 1
    first = default_point(params.models[model].defaults, space)
    for k in range(n_trials):
        study.enqueue_trial(first if k == 0 else {}, user_attrs={TICKET: k})
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    objective = make_objective(params, model, schema, X, y)
    try:
        while deadline is None or time.monotonic() < deadline:
            if count(study, "WAITING"):
                work(study, objective, on_trial, deadline)
            elif count(study, "RUNNING"):  # trials of workers: wait, failing stale ones
                optuna.storages.fail_stale_trials(study)
                time.sleep(_POLL_S)
            else:
                break
    finally:
        study.set_user_attr(CLOSED, True)
    return study


WAIT_REPORT_S = 30.0  # a waiting worker says so this often


def join_study(params: Params, model: str, dataset: str, X: pd.DataFrame) -> Any:
    """A worker's view of the stage's study (open, or already closed: the caller decides), once
    it exists; waits up to tune.worker_wait for it, saying what it waits for at the start and
    every WAIT_REPORT_S seconds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are raised or logged here
    cfg = params.tune
    name = study_name(params, model, dataset, X)
    storage = open_storage(cfg)
    start = time.monotonic()
    deadline, next_report = start + cfg.worker_wait, start
    while True:
        with contextlib.suppress(KeyError):
            # Its own seed: workers sharing the stage's would draw the same startup points.
            return optuna.load_study(study_name=name, storage=storage,
                                     sampler=_sampler(cfg.seed + 1 + os.getpid()),
                                     pruner=_pruner())
        now = time.monotonic()
        if now > deadline:
            raise ConfigError(
                f"no study '{name}' in {shown_url(cfg.storage)} after {cfg.worker_wait:g} s: start "
                "`dvc repro tune` (same params.yaml and data) with this tune.storage"
            )
        if now >= next_report:
            if next_report == start:
                log.info("worker: waiting up to %g s (tune.worker_wait) for study '%s' in %s; "
                         "`dvc repro tune` with the same params.yaml and data creates it",
                         cfg.worker_wait, name, shown_url(cfg.storage))
            else:
                log.info("worker: still waiting for study '%s' (%.0f s of %g s)", name,
                         now - start, cfg.worker_wait)
            next_report += WAIT_REPORT_S
        time.sleep(_POLL_S)


def budget_trials(study: Any) -> list[Any]:
    """The study's ticketed trials that ran (surplus trials and unused tickets left out)."""
    return [t for t in study.trials
            if t.user_attrs.get(TICKET) is not None and t.state.name != "WAITING"]


def trial_records(study: Any) -> list[dict[str, Any]]:
    """One JSON-ready row per trial that ran (pruned/failed trials have value null; a trial
    failed by a lost worker appears with its retry, which has the same ticket)."""
    return [{"number": t.number, "ticket": t.user_attrs[TICKET], "state": t.state.name,
             "value": t.value if t.state.name == "COMPLETE" else None, "params": t.params}
            for t in budget_trials(study)]


def log_trials(mlflow_: Any, study: Any, model: str) -> None:
    """Every trial that ran, wherever it ran, as a nested MLflow run (after the study, from its
    storage: workers on other machines need no MLflow access)."""
    for trial in budget_trials(study):
        tags = tracking.run_tags("tune", candidate=model, trial_state=trial.state.name,
                                 worker=str(trial.user_attrs.get("worker", "")))
        with mlflow_.start_run(run_name=f"trial-{trial.number}", nested=True, tags=tags):
            mlflow_.log_params(tracking.flat("hp", trial.params))
            for k, fold in enumerate(trial.user_attrs.get("folds", [])):
                mlflow_.log_metrics(tracking.flat("fold", fold), step=k)
            if trial.state.name == "COMPLETE":
                mlflow_.log_metrics(tracking.flat("cv", summarize(trial.user_attrs["folds"])))


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
    study = join_study(params, model, schema.dataset, X)
    if study.user_attrs.get(CLOSED):
        finished, left = count(study, "COMPLETE", "PRUNED"), count(study, "WAITING")
        if left:
            log.info("worker: study '%s' was closed by its stage with %d trials finished and %d "
                     "never run (timeout or error); nothing to join", study.study_name, finished,
                     left)
        else:
            log.info("worker: study '%s' is complete (%d trials finished); nothing to do",
                     study.study_name, finished)
        return 0
    ran = 0

    def on_trial(study: Any, trial: Any) -> None:
        nonlocal ran
        ran += 1
        log.info("worker: trial %d (%s) %s", trial.number, trial.state.name.lower(),
                 f"CV RMSE {trial.value:.4g}" if trial.value is not None else "")

    log.info("worker %s:%d joined study %s", socket.gethostname(), os.getpid(), study.study_name)
    work(study, make_objective(params, model, schema, X, y), on_trial)
    log.info("worker: ran %d trials; no ticket left", ran)
    return ran


def stage(params: Params) -> None:
    import mlflow  # noqa: F401  (fail early if missing, before minutes of tuning)

    paths = params.paths
    model, schema, X, y = _inputs(params)
    n_budget = params.tune.n_trials if params.models[model].search_space else 1

    def on_trial(study: Any, trial: Any) -> None:
        value = f"{trial.value:.4g}" if trial.value is not None else trial.state.name.lower()
        best = count(study, "COMPLETE") and f"{study.best_value:.4g}"
        log.info("trial %d (%d/%d finished): CV RMSE %s (best %s)", trial.number,
                 count(study, "COMPLETE", "PRUNED"), n_budget, value, best or "-")

    mlflow_ = tracking.start(schema.dataset)
    with mlflow_.start_run(run_name=f"tune-{model}",
                           tags=tracking.run_tags("tune", candidate=model)):
        study = run_study(params, model, schema, X, y, on_trial)
        log_trials(mlflow_, study, model)
        finished = count(study, "COMPLETE", "PRUNED")
        if not count(study, "COMPLETE"):
            raise ArtifactError(f"study {study.study_name}: no trial completed ({finished} "
                                "finished); see the log above")
        best, folds, confirmed = confirm(params, model, schema, X, y, study)
        hp = {**params.models[model].defaults, **best.params}
        cv = summarize(folds)
        log.info("best trial %d of %d: %s → CV RMSE %.4g, R² %.3f; refitting on all %d rows",
                 best.number, finished, best.params, cv["rmse"], cv["r2"], len(X))
        plan = large.plan(model, hp, len(X), params.train.large)
        note = plan.note
        if confirmed:
            rows = large.screening_rows(len(X), params.train.large)
            screening = (f"trials scored on a stratified {rows}-row subsample "
                         f"(train.large.halving_above), the best {len(confirmed)} confirmed on "
                         f"all {len(X)} rows")
            note = f"{note}; {screening}" if note else screening
        rows = capped(range(len(X)), plan.max_rows, params.train.seed, params.train.cv_folds)
        estimator = large.build(plan, schema, params.train.seed).fit(X.iloc[rows], y.iloc[rows])
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
        "trials": trial_records(study),
        **({"confirmed_on_all_rows": confirmed} if confirmed else {}),
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
