"""The tune stage's shared Optuna study: its name, its budget of tickets, the stage's run and a
worker's join (`python -m medcast.tune --worker`), over the storage of medcast.optuna_storage.

A study's budget is n_trials "tickets", WAITING trials the stage enqueues. Every process (the
stage and any worker) runs only ticketed trials, so finished trials == n_trials however many
workers join; a trial Optuna creates once the tickets are gone fails as surplus. A killed
worker's trial stops sending heartbeats, is failed after tune.grace_period and retried (at most
tune.max_retry times) by whichever process asks next. The objective (what a trial computes) is
the caller's: medcast.tune.make_objective.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from medcast import tracking
from medcast.config import Params
from medcast.errors import ConfigError
from medcast.metrics import summarize
from medcast.optuna_storage import POLL_S, open_storage, shown_url

log = logging.getLogger("medcast.tune")


def study_name(params: Params, model: str, dataset: str, X: pd.DataFrame) -> str:
    """Deterministic per (dataset, data, model, search setup): workers can join it by name."""
    cfg = params.models[model]
    digest = hashlib.sha256(
        json.dumps([
            dataset, model, cfg.defaults, cfg.search_space, params.tune.seed, params.cv.seed,
            params.cv.folds, *([params.cv.repeats] if params.cv.repeats > 1 else []),
            pd.util.hash_pandas_object(X).sum().item(),
        ], sort_keys=True, default=str).encode()
    ).hexdigest()[:10]
    return f"{dataset}-{model}-{digest}"


def process_label() -> str:
    """host:pid, what a trial records as its `worker`."""
    return f"{socket.gethostname()}:{os.getpid()}"


TICKET = "ticket"
CLOSED = "closed"  # study attribute the stage sets when it is done: workers stop


class SurplusTrial(Exception):
    """The budget was claimed by other processes between the check and this trial."""


def sampler(seed: int) -> Any:
    import optuna

    # constant_liar: trials running elsewhere count as bad, so workers do not all sample the
    # same point; with one process nothing runs elsewhere and the sequence stays seeded.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def pruner() -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def n_trials(params: Params, model: str, n_rows: int) -> tuple[int, str | None]:
    """The study's budget of tickets on n_rows training rows, and why it is not tune.n_trials
    (None when it is): 1 without a search space (nothing to tune, the defaults are scored);
    at most cv.large.expensive_trials for an expensive candidate (the registry's `expensive`)
    above cv.large.halving_above rows."""
    from medcast import models
    from medcast.models import large

    wanted = params.tune.n_trials
    if not params.models[model].search_space:
        return 1, None
    cap = params.cv.large.expensive_trials
    if (cap is None or cap >= wanted or not models.get(model).expensive
            or large.screening_rows(n_rows, params.cv.large) is None):
        return wanted, None
    return cap, (f"{cap} of tune.n_trials={wanted} trials (cv.large.expensive_trials: an "
                 f"expensive candidate on more than cv.large.halving_above="
                 f"{params.cv.large.halving_above} rows)")


def count(study: Any, *states: str) -> int:
    import optuna

    wanted = tuple(optuna.trial.TrialState[s] for s in states)
    return len(study.get_trials(deepcopy=False, states=wanted))


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


def run(params: Params, model: str, dataset: str, X: pd.DataFrame,
        objective: Callable[[Any], float], first: dict[str, Any], on_trial: Any = None) -> Any:
    """The stage's study: a fresh seeded one (a leftover of the same name is replaced, so reruns
    match) with n_trials tickets, the first of them the point `first`, run here and by any
    worker that joins; returns once every ticket is finished (a killed worker's trial is failed
    after grace_period and retried)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are raised or logged here
    cfg = params.tune
    name = study_name(params, model, dataset, X)
    storage = open_storage(cfg)
    with contextlib.suppress(KeyError):  # no leftover study of that name
        optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                sampler=sampler(cfg.seed), pruner=pruner())
    study.set_user_attr("model", model)
    budget, _ = n_trials(params, model, len(X))
    for k in range(budget):
        study.enqueue_trial(first if k == 0 else {}, user_attrs={TICKET: k})
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            if count(study, "WAITING"):
                work(study, objective, on_trial, deadline)
            elif count(study, "RUNNING"):  # trials of workers: wait, failing stale ones
                optuna.storages.fail_stale_trials(study)
                time.sleep(POLL_S)
            else:
                break
    finally:
        study.set_user_attr(CLOSED, True)
    return study


WAIT_REPORT_S = 30.0  # a waiting worker says so this often


def join(params: Params, model: str, dataset: str, X: pd.DataFrame) -> Any:
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
                                     sampler=sampler(cfg.seed + 1 + os.getpid()),
                                     pruner=pruner())
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
        time.sleep(POLL_S)


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


def closed(study: Any) -> bool:
    """Whether the stage has closed `study` (a worker then has nothing to join); says so."""
    if not study.user_attrs.get(CLOSED):
        return False
    finished, left = count(study, "COMPLETE", "PRUNED"), count(study, "WAITING")
    if left:
        log.info("worker: study '%s' was closed by its stage with %d trials finished and %d "
                 "never run (timeout or error); nothing to join", study.study_name, finished, left)
    else:
        log.info("worker: study '%s' is complete (%d trials finished); nothing to do",
                 study.study_name, finished)
    return True


def take_part(study: Any, objective: Callable[[Any], float]) -> int:
    """A worker's share: ticketed trials of `study` until none is left; returns how many ran
    here, saying each."""
    ran = 0

    def on_trial(study: Any, trial: Any) -> None:
        nonlocal ran
        ran += 1
        log.info("worker: trial %d (%s) %s", trial.number, trial.state.name.lower(),
                 f"CV RMSE {trial.value:.4g}" if trial.value is not None else "")

    log.info("worker %s joined study %s", process_label(), study.study_name)
    work(study, objective, on_trial)
    log.info("worker: ran %d trials; no ticket left", ran)
    return ran


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
