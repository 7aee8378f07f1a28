"""Stage tune: Optuna search (seeded TPE, median pruner over CV folds) on the selected candidate,
then refit the best on the whole training set and save it (skops / .keras)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from medcast import models, tracking
from medcast.config import Params, load_params
from medcast.errors import ConfigError, cli
from medcast.features import FeatureSchema, load_schema, read_split
from medcast.metrics import cross_validate, summarize
from medcast.models.io import save_model

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
                f"tune.search_spaces: '{name}' needs low/high or choices, got {spec}"
            ) from None
        log_scale = bool(spec.get("log", False))
        if isinstance(low, int) and isinstance(high, int) and not log_scale:
            values[name] = trial.suggest_int(name, low, high)
        else:
            values[name] = trial.suggest_float(name, float(low), float(high), log=log_scale)
    return values


def study_name(params: Params, model: str, X: pd.DataFrame) -> str:
    """Deterministic per (dataset, data, model, search setup): workers can join it by name."""
    digest = hashlib.sha256(
        json.dumps([
            params.dataset.name, model, params.train.models.get(model, {}),
            params.tune.search_spaces.get(model, {}), params.tune.seed, params.train.seed,
            params.train.cv_folds, pd.util.hash_pandas_object(X).sum().item(),
        ], sort_keys=True, default=str).encode()
    ).hexdigest()[:10]
    return f"{params.dataset.name}-{model}-{digest}"


def run_study(
    params: Params, model: str, schema: FeatureSchema, X: pd.DataFrame, y: pd.Series,
    on_trial: Any = None,
) -> Any:
    """A fresh seeded study (a leftover one of the same name is replaced, so reruns match)."""
    import optuna
    from sklearn.utils._param_validation import InvalidParameterError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, train_cfg = params.tune, params.train
    base = dict(train_cfg.models.get(model, {}))
    space = cfg.search_spaces.get(model, {})
    name = study_name(params, model, X)
    try:
        storage = optuna.storages.RDBStorage(cfg.storage, heartbeat_interval=None)
    except Exception as err:  # SQLAlchemy raises many kinds for a bad URL
        raise ConfigError(f"tune.storage: cannot open '{cfg.storage}': {err}") from None
    with contextlib.suppress(KeyError):  # no leftover study of that name
        optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        hp = {**base, **suggest(trial, space)}
        estimator = models.build(model, hp, schema, train_cfg.seed)

        def report(k: int, folds: list[dict[str, float]]) -> None:
            trial.set_user_attr("folds", folds)  # kept for pruned trials too (MLflow)
            trial.report(sum(f["rmse"] for f in folds) / len(folds), step=k)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            folds = cross_validate(estimator, X, y, train_cfg.cv_folds, train_cfg.seed, report)
        except InvalidParameterError as err:
            raise ConfigError(f"tune.search_spaces.{model} or train.models.{model}: {err}") from None
        return summarize(folds)["rmse_mean"]

    # Without a search space there is nothing to tune: one trial scores the defaults.
    n_trials = cfg.n_trials if space else 1
    study.optimize(objective, n_trials=n_trials, timeout=cfg.timeout,
                   callbacks=[on_trial] if on_trial else None)
    return study


def trial_records(study: Any) -> list[dict[str, Any]]:
    """One JSON-ready row per trial (pruned trials have value null)."""
    return [{"number": t.number, "state": t.state.name,
             "value": t.value if t.state.name == "COMPLETE" else None, "params": t.params}
            for t in study.trials]


@cli
def main() -> None:
    import mlflow  # noqa: F401  (fail early if missing, before minutes of tuning)

    params = load_params()
    paths = params.paths
    selection = json.loads(Path(paths.selection).read_text())
    model = selection["model"]
    schema = load_schema(Path(paths.schema))
    X, y = read_split(Path(paths.train), schema)

    mlflow_ = tracking.start(schema.dataset)
    with mlflow_.start_run(run_name=f"tune-{model}",
                           tags=tracking.run_tags("tune", candidate=model)):
        def on_trial(study: Any, trial: Any) -> None:
            import optuna

            done = trial.state == optuna.trial.TrialState.COMPLETE
            value = f"{trial.value:.4g}" if done else trial.state.name.lower()
            log.info("trial %d/%d: CV RMSE %s (best %.4g)", trial.number + 1,
                     params.tune.n_trials, value, study.best_value)
            with mlflow_.start_run(run_name=f"trial-{trial.number}", nested=True,
                                   tags=tracking.run_tags("tune", candidate=model,
                                                          trial_state=trial.state.name)):
                mlflow_.log_params(trial.params)
                for k, fold in enumerate(trial.user_attrs.get("folds", [])):
                    mlflow_.log_metrics(tracking.flat("fold_", fold), step=k)
                if done:
                    mlflow_.log_metrics(tracking.flat("cv_", summarize(trial.user_attrs["folds"])))

        study = run_study(params, model, schema, X, y, on_trial)
        best = study.best_trial
        hp = {**params.train.models.get(model, {}), **best.params}
        cv = summarize(best.user_attrs["folds"])
        log.info("best trial %d: %s → CV RMSE %.4g, R² %.3f; refitting on all %d rows",
                 best.number, best.params, cv["rmse_mean"], cv["r2_mean"], len(X))
        estimator = models.build(model, hp, schema, params.train.seed).fit(X, y)
        mlflow_.log_params({"model": model, "n_trials": len(study.trials),
                            "study": study.study_name, **{f"best_{k}": v for k, v in hp.items()}})
        mlflow_.log_metrics(tracking.flat("cv_", cv))

    meta = {"model": model, "dataset": schema.dataset, "params": hp, "cv": cv,
            "folds": best.user_attrs["folds"], "study": study.study_name,
            "best_trial": best.number}
    save_model(estimator, Path(paths.model_dir), meta)
    Path(paths.tuning).write_text(json.dumps({
        "model": model, "study": study.study_name, "n_trials": len(study.trials),
        "best_trial": best.number, "best_params": best.params, "cv": cv,
        "trials": trial_records(study),
    }, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
