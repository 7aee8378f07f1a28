"""Experiment records for notebooks and reports: DVC's `exp show` table and MLflow's runs,
flattened into DataFrames."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

METRICS_FILE = "reports/metrics.json"
PARAMS_FILE = "params.yaml"


def dvc_exp_show(repo: str | Path = ".") -> list[dict[str, Any]]:
    """`dvc exp show --json` of a repository (the workspace, its baseline and experiments)."""
    out = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def _row(entry: dict[str, Any], name: str | None, baseline: str) -> dict[str, Any] | None:
    data = entry.get("data") or {}
    metrics = ((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data") or {}
    params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
    if not metrics and not params:
        return None
    row: dict[str, Any] = {
        "experiment": name or data.get("rev") or entry.get("rev"),
        "rev": data.get("rev", entry.get("rev")),
        "baseline": baseline,
        "timestamp": data.get("timestamp"),
        "dataset": (params.get("dataset") or {}).get("name"),
        "selected": metrics.get("model"),
        "n_trials": (params.get("tune") or {}).get("n_trials"),
    }
    for split in ("test", "cv"):
        for key, value in (metrics.get(split) or {}).items():
            row[f"{split}_{key}"] = value
    return row


def exp_table(show: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per workspace/baseline/experiment with dataset, model and test/CV metrics."""
    rows = []
    for base in show:
        baseline = base.get("name") or base.get("rev")
        row = _row(base, base.get("name"), baseline)
        if row:
            rows.append(row)
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                row = _row(rev, rev.get("name") or exp.get("name"), baseline)
                if row:
                    rows.append(row)
    return pd.DataFrame(rows)


def mlflow_runs(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """All MLflow runs of a dataset's experiment (params, metrics, tags as columns)."""
    import mlflow

    from medcast import tracking

    mlflow.set_tracking_uri(tracking_uri or tracking.tracking_uri())
    return mlflow.search_runs(experiment_names=[experiment], max_results=10_000)
