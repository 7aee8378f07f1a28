"""Stage train: cross-validate every candidate (K folds, seeded), fit each on the training set
for train/test scores, write the leaderboard and the selected candidate; log each to MLflow."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medcast import models, tracking
from medcast.config import CVConfig, load_params
from medcast.errors import ConfigError, cli
from medcast.features import FeatureSchema, load_schema, read_split
from medcast.metrics import METRICS, capped, fit_score, fold_indices, scores, summarize
from medcast.models import large
from medcast.parallel import ordered

log = logging.getLogger("medcast.train")


@dataclass
class CandidateResult:
    model: str
    params: dict[str, Any]
    folds: list[dict[str, float]]
    cv: dict[str, float]
    train: dict[str, float]
    test: dict[str, float]
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    # What ran (medcast.models.large): full, approximated, subsampled or skipped, and why.
    fidelity: str = large.FULL
    note: str = ""


def _full_fit(estimator: Any, X: pd.DataFrame, y: pd.Series, rows: Any, X_test: pd.DataFrame,
              y_test: pd.Series) -> dict[str, Any]:
    """One task: fit on `rows` of the training set; train and test scores, MLP history."""
    model = estimator.fit(X.iloc[rows], y.iloc[rows])
    target = model.named_steps["model"]
    return {"train": scores(y, model.predict(X)), "test": scores(y_test, model.predict(X_test)),
            "history": target_units(getattr(target.regressor_, "history_", {}),
                                    target.transformer_)}


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


def _run(names: list[str], hps: dict[str, dict[str, Any]], cfg: CVConfig,
         schema: FeatureSchema, train: tuple[pd.DataFrame, pd.Series],
         test: tuple[pd.DataFrame, pd.Series] | None) -> Iterator[CandidateResult]:
    """K-fold CV of each candidate on `train` (X, y), then (with `test`) one fit on all of X for
    train and test scores; results in the candidates' order (see evaluate_candidates)."""
    X, y = train
    plans = [large.plan(name, hps[name], len(X), cfg.large) for name in names]
    splits = fold_indices(len(X), cfg.folds, cfg.seed, cfg.repeats)
    # Expensive candidates' tasks (the MLP's) go first: they are the longest, and a worker
    # process that imported TensorFlow in its first task keeps it (joblib's loky restarts a
    # worker whose memory grew by 300 MB after its first task, which would import TensorFlow
    # again for every fold).
    slow = {p.model for p in plans if models.get(p.build_as).expensive}
    run = [p for p in plans if p.model in slow] + [p for p in plans if p.model not in slow]
    calls: list[tuple[Any, tuple[Any, ...]]] = []
    for p in run:
        if p.fidelity == large.SKIPPED:
            continue
        estimator = large.build(p, schema, cfg.seed)
        calls += [(_timed, (fit_score, estimator, X, y, capped(fit, p.max_rows, cfg.seed, k), val))
                  for k, (fit, val) in enumerate(splits)]
        if test is not None:
            everything = capped(range(len(X)), p.max_rows, cfg.seed, cfg.folds)
            calls.append((_timed, (_full_fit, estimator, X, y, everything, *test)))
    results = ordered(calls, cfg.n_jobs, cfg.cluster)
    done: dict[str, CandidateResult] = {}
    for p in run:
        if p.fidelity == large.SKIPPED:
            done[p.model] = CandidateResult(p.model, dict(hps[p.model]), [], {}, {}, {}, 0.0, {},
                                            p.fidelity, p.note)
        else:
            tasks = [next(results) for _ in range(len(splits) + (test is not None))]
            folds = [fold for fold, _ in tasks[:len(splits)]]
            full = tasks[-1][0] if test is not None else {"train": {}, "test": {}, "history": {}}
            done[p.model] = CandidateResult(
                model=p.model, params=dict(hps[p.model]), folds=folds, cv=summarize(folds),
                train=full["train"], test=full["test"], seconds=sum(s for _, s in tasks),
                history=full["history"], fidelity=p.fidelity, note=p.note,
            )
        while plans and plans[0].model in done:  # in the candidates' order
            yield done.pop(plans.pop(0).model)


def evaluate_candidates(
    names: list[str],
    hps: dict[str, dict[str, Any]],
    cfg: CVConfig,
    schema: FeatureSchema,
    X: pd.DataFrame,
    y: pd.Series,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    forced: str | None = None,
) -> Iterator[CandidateResult]:
    """Repeated K-fold CV of each candidate on the training set (params `cv`), then one fit on
    all of it for train and test scores. Every fold and final fit of every candidate is one
    task for cv.n_jobs processes (or cv.cluster); results come in the candidates' order, and do
    not depend on where they ran. `seconds` sums the candidate's tasks (busy time, not wall
    time).

    Above cv.large.halving_above rows (successive halving, medcast.models.large): every
    candidate is first cross-validated on a stratified subsample of that many rows; the best
    halving_keep (and the `forced` one, train.select) then run as above on all rows, the others
    come back `screened` with their subsample CV scores and no train/test scores."""
    subsample = large.screening_set(X, y, cfg.large, cfg.seed)
    if subsample is None:
        yield from _run(names, hps, cfg, schema, (X, y), (X_test, y_test))
        return
    rows = len(subsample[0])
    # Candidates skipped on all rows are not screened (their rows come back as skipped).
    skipped = {n for n in names
               if large.plan(n, hps[n], len(X), cfg.large).fidelity == large.SKIPPED}
    screened = {r.model: r for r in _run([n for n in names if n not in skipped], hps, cfg,
                                         schema, subsample, None)}
    ranked = sorted(screened, key=lambda n: screened[n].cv["rmse"])
    kept = large.keep(ranked, cfg.large, forced)
    confirmed = {r.model: r for r in _run(kept, hps, cfg, schema, (X, y), (X_test, y_test))}
    for name in names:
        if name in confirmed:
            r = confirmed[name]
            if name in screened:
                r.seconds += screened[name].seconds
                note = large.screened_note(rows, len(X), ranked.index(name) + 1, len(ranked),
                                           cfg.large, kept=True)
                r.note = f"{r.note}; {note}" if r.note else note
        elif name in screened:
            r = screened[name]
            note = large.screened_note(rows, len(X), ranked.index(name) + 1, len(ranked),
                                       cfg.large, kept=False)
            r.fidelity, r.note = large.SCREENED, f"{r.note}; {note}" if r.note else note
        else:
            p = large.plan(name, hps[name], len(X), cfg.large)
            r = CandidateResult(name, dict(hps[name]), [], {}, {}, {}, 0.0, {}, p.fidelity, p.note)
        yield r


def evaluate_candidate(name: str, hp: dict[str, Any], cfg: CVConfig, schema: FeatureSchema,
                       X: pd.DataFrame, y: pd.Series, X_test: pd.DataFrame, y_test: pd.Series
                       ) -> CandidateResult:
    """One candidate (see evaluate_candidates)."""
    return next(evaluate_candidates([name], {name: hp}, cfg, schema, X, y, X_test, y_test))


def target_units(history: dict[str, list[float]], scaler: Any) -> dict[str, list[float]]:
    """The MLP learns a standardised target: report its MAE curves in the target's units."""
    scale = float(scaler.scale_[0])
    return {
        k: [v * scale for v in vals] if k.endswith("mae") else vals for k, vals in history.items()
    }


def select(results: list[CandidateResult], forced: str | None) -> CandidateResult:
    """The forced candidate, else the lowest mean CV RMSE (ties: listed order); never a
    skipped or screened one."""
    ran = [r for r in results if r.fidelity not in (large.SKIPPED, large.SCREENED)]
    if forced is not None:
        chosen = next(r for r in results if r.model == forced)
        if chosen.fidelity == large.SKIPPED:
            raise ConfigError(f"train.select: '{forced}' was skipped ({chosen.note})")
        return chosen
    if not ran:
        raise ConfigError("train: every candidate was skipped (cv.large.skip_above)")
    return min(ran, key=lambda r: r.cv["rmse"])


def leaderboard(results: list[CandidateResult]) -> pd.DataFrame:
    """Scores only: the wall-clock fit time goes to MLflow (`fit_seconds`) and the log, never
    into this DVC output, so the same inputs give the same bytes."""
    rows = []
    by_cv = sorted((r for r in results if r.fidelity != large.SKIPPED), key=lambda r: r.cv["rmse"])
    # Screened candidates after those that ran on all rows: their CV is the subsample's.
    ran = ([r for r in by_cv if r.fidelity != large.SCREENED]
           + [r for r in by_cv if r.fidelity == large.SCREENED])
    for r in ran:
        row: dict[str, Any] = {"model": r.model}
        row.update({f"cv_{k}": v for k, v in r.cv.items()})
        row.update({f"train_{m}": r.train.get(m, float("nan")) for m in METRICS})
        row.update({f"test_{m}": r.test.get(m, float("nan")) for m in METRICS})
        row.update({"fidelity": r.fidelity, "fidelity_note": r.note})
        rows.append(row)
    # Skipped candidates last, without scores (null in the JSON, empty in the CSV; a screened
    # one's train and test scores likewise).
    rows += [{"model": r.model, "fidelity": r.fidelity, "fidelity_note": r.note}
             for r in results if r.fidelity == large.SKIPPED]
    table = pd.DataFrame(rows)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


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


def _log_mlflow(dataset: str, cfg: CVConfig, results: list[CandidateResult], chosen: str) -> None:
    mlflow = tracking.start(dataset)
    for r in results:
        with mlflow.start_run(
            run_name=f"cv-{r.model}", tags=tracking.run_tags("train", candidate=r.model)
        ):
            # Named as in params.yaml (cv.*) and conf/model (hp.*), as `dvc exp show` does.
            mlflow.log_params({"dataset": dataset, "model": r.model,
                               "cv.folds": cfg.folds, "cv.repeats": cfg.repeats, "cv.seed": cfg.seed,
                               "fidelity": r.fidelity,
                               **tracking.flat("hp", r.params)})
            for k, fold in enumerate(r.folds):
                mlflow.log_metrics(tracking.flat("fold", fold), step=k)
            mlflow.log_metrics({**tracking.flat("cv", r.cv), **tracking.flat("train", r.train),
                                **tracking.flat("test", r.test), "fit_seconds": r.seconds,
                                "selected": float(r.model == chosen)})


@cli
def main() -> None:
    params = load_params()
    cfg, paths = params.train, params.paths
    models.check_configs(list(params.models))
    schema = load_schema(Path(paths.schema))
    X, y = read_split(Path(paths.train), schema)
    X_test, y_test = read_split(Path(paths.test), schema)

    results = []
    names = params.candidates
    hps = {name: params.models[name].defaults for name in names}
    runs = evaluate_candidates(names, hps, params.cv, schema, X, y, X_test, y_test, cfg.select)
    for i, r in enumerate(runs, 1):
        if r.fidelity == large.SKIPPED:
            log.info("[%d/%d] %-17s skipped: %s", i, len(names), r.model, r.note)
        else:
            log.info("[%d/%d] %-17s CV RMSE %.4g ± %.3g, R² %.3f (%.1fs)%s", i, len(names),
                     r.model, r.cv["rmse"], r.cv["rmse_std"], r.cv["r2"], r.seconds,
                     f" [{r.fidelity}: {r.note}]" if r.note else "")
        results.append(r)
    chosen = select(results, cfg.select)
    log.info("selected %s (%s)", chosen.model, "forced" if cfg.select else "best mean CV RMSE")

    table = leaderboard(results)
    Path(paths.leaderboard).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.leaderboard_csv, index=False)
    records = [{k: None if isinstance(v, float) and v != v else v for k, v in row.items()}
               for row in table.to_dict(orient="records")]  # a skipped candidate's NaN: null
    Path(paths.leaderboard).write_text(json.dumps(records, indent=2) + "\n")
    folds = pd.DataFrame(
        [{"model": r.model, "fold": k, **f} for r in results for k, f in enumerate(r.folds)]
    )
    folds.to_csv(paths.cv_scores, index=False)
    mlp = next((r for r in results if r.history), None)
    history_frame(mlp.history if mlp else {}).to_csv(paths.history, index=False)
    Path(paths.selection).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.selection).write_text(json.dumps({
        "model": chosen.model,
        "reason": "forced by train.select" if cfg.select else "best mean CV RMSE",
        "params": chosen.params,
        "cv": chosen.cv,
    }, indent=2) + "\n")
    _log_mlflow(schema.dataset, params.cv, results, chosen.model)


if __name__ == "__main__":
    main()
