"""Shared fixtures: composed params (tiny variants), generated data, an isolated MLflow store;
the service's fixtures (tests/support/serving.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.support.serving"]

ROOT = Path(__file__).resolve().parents[1]

# Small enough for seconds, large enough to exercise every code path (pruning, MLP callbacks).
TINY_OVERRIDES = [
    "train.models.mlp.epochs=4",
    "train.models.mlp.patience=2",
    "train.models.mlp.lr_patience=1",
    "train.models.random_forest.n_estimators=20",
    "train.models.gradient_boosting.n_estimators=20",
    "tune.n_trials=3",
    "plot.permutation_repeats=2",
]


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write to the repository's MLflow store from tests."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def base_params() -> dict[str, Any]:
    from medcast.config import compose

    return compose(config_dir=ROOT / "conf")


def tiny_params(*extra: str) -> dict[str, Any]:
    from medcast.config import compose

    return compose([*TINY_OVERRIDES, *extra], config_dir=ROOT / "conf")


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: the virtualenv's bin first (stages run `python`)."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
