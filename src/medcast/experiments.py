"""Experiment records for notebooks and reports: DVC's experiment table (read in process through
`dvc.api.exp_show`, so no `dvc` executable on PATH is needed) and MLflow's runs, as DataFrames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

METRICS_FILE = "reports/metrics.json"
PARAMS_FILE = "params.yaml"


def dvc_exp_show(repo: str | Path = ".") -> list[dict[str, Any]]:
    """`dvc.api.exp_show` of a repository: one flat row per workspace, baseline and experiment
    (columns `Experiment`, `rev`, `typ`, `Created`, then `test.r2`-style metric and param names,
    prefixed `<file>:` only where two files share a name)."""
    import dvc.api

    return dvc.api.exp_show(repo=str(repo))


def _cell(row: dict[str, Any], file: str, name: str) -> Any:
    value = row.get(f"{file}:{name}", row.get(name))
    return None if value in ("", "None", "-") else value


def _scores(row: dict[str, Any]) -> dict[str, Any]:
    """test.r2 → test_r2, cv.r2_std → cv_r2_std, from metrics.json's columns (by name: the
    params section `cv` — cv.folds, cv.seed, … — shares the prefix and is left out)."""
    from medcast.metrics import SUMMARY_KEYS

    out = {}
    for key, value in row.items():
        file, _, name = key.rpartition(":")
        if file not in ("", METRICS_FILE):
            continue
        split, _, metric = name.partition(".")
        if split in ("test", "cv") and metric in SUMMARY_KEYS and value is not None:
            out[f"{split}_{metric}"] = value
    return out


def exp_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per workspace/baseline/experiment that has params or metrics: dataset, selected
    model, number of trials and test/CV metrics. Experiments follow their baseline in DVC's
    rows; `baseline` names it."""
    table = []
    baseline = None
    for row in rows:
        if row.get("typ") == "baseline":
            baseline = row.get("rev")
        n_trials = _cell(row, PARAMS_FILE, "tune.n_trials")
        entry: dict[str, Any] = {
            "experiment": row.get("Experiment") or row.get("rev"),
            "rev": row.get("rev"),
            "baseline": baseline,
            "created": row.get("Created"),
            # the param (what was asked for), else metrics.json's name (what was evaluated)
            "dataset": _cell(row, PARAMS_FILE, "dataset") or _cell(row, METRICS_FILE,
                                                                   "dataset.name"),
            "selected": _cell(row, METRICS_FILE, "model"),
            # dvc.api gives every number as a float
            "n_trials": int(n_trials) if isinstance(n_trials, float) else n_trials,
            **_scores(row),
        }
        if entry["dataset"] is None and entry["selected"] is None:
            continue  # no params and no metrics (e.g. a commit before the pipeline existed)
        table.append(entry)
    return pd.DataFrame(table)


def mlflow_runs(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """All MLflow runs of a dataset's experiment (params, metrics, tags as columns)."""
    import mlflow

    from medcast import tracking

    mlflow.set_tracking_uri(tracking_uri or tracking.tracking_uri())
    return mlflow.search_runs(experiment_names=[experiment], max_results=10_000)
