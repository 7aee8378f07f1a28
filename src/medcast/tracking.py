"""MLflow bookkeeping: where the store is, which experiment, which tags every run carries.
Nothing happens at import; stages call these from main()."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"


def repo_root() -> Path:
    """The user's repository, also from inside a queued experiment's temporary copy:
    DVC sets DVC_ROOT to the parent repository there."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        )
        return Path(out.stdout.strip()).resolve()
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd().resolve()


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite store at the repository root (`root`, e.g. the
    service's MEDCAST_REPO; default: repo_root())."""
    return os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(stage: str, **extra: str) -> dict[str, str]:
    return {
        "medcast.stage": stage,
        "git_revision": os.environ.get("DVC_EXP_BASELINE_REV") or git_revision(),
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        **extra,
    }


def start(experiment: str) -> Any:
    """Point MLflow at the store and select (or create) the dataset's experiment."""
    import logging

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if "MLFLOW_TRACKING_URI" not in os.environ:
            # Artifacts beside the store, not in the (possibly temporary) working directory.
            location = (repo_root() / ARTIFACT_DIR / experiment).as_uri()
        # A parallel queued experiment may create it first: that is fine.
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return mlflow


def flat(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """{'r2': 1} -> {'section.r2': 1}: the dotted names `dvc exp show` gives the same numbers
    in metrics.json (test.r2, cv.r2, cv.r2_std, …)."""
    return {f"{section}.{k}": v for k, v in values.items()}
