"""Shared fixtures: composed params (tiny variants), generated data, an isolated MLflow store;
the service's fixtures (tests/support/serving.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# First, before any test module loads NumPy: importing medcast pins OpenBLAS's kernels
# (src/medcast/__init__.py), so this process computes as the workers it starts (loky, Dask,
# xdist, stages) do, to the last bit.
import medcast  # noqa: F401,E402

pytest_plugins = ["tests.support.serving"]

ROOT = Path(__file__).resolve().parents[1]

# Small enough for seconds, large enough to exercise every code path (pruning, MLP callbacks):
# params.yaml overrides, and model defaults (conf/model/<name>.yaml) overrides.
TINY_OVERRIDES = [
    "tune.n_trials=3",
    "plot.permutation_repeats=2",
    "evaluate.bootstrap=10",
    # One repeat of the K-fold and 5-fold interval calibration: the flows, not the statistics
    # (tests/test_train.py and tests/test_selection.py cover repeats; bench.coverage the folds).
    "cv.repeats=1",
    "evaluate.interval_folds=5",
    # The shap check of the explanations on 20 test rows, not 200: the MLP's costs seconds a
    # row (tests/test_explain.py checks every model type on its own rows).
    "export.explain_check_rows=20",
]
TINY_MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"epochs": 4, "patience": 2, "lr_patience": 1},
    "random_forest": {"n_estimators": 20},
    "gradient_boosting": {"n_estimators": 20},
    "hist_boosting": {"max_iter": 20},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` first (a stable sort: the rest keep their order). `--dist loadgroup`
    hands out the xdist groups first, then single tests in this order, a few at a time: the
    long ones started early, the two workers finish together instead of one running a last
    minute-long test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write to the repository's MLflow store from tests."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def base_params() -> dict[str, Any]:
    from medcast.config import compose

    return compose(config_dir=ROOT / "conf/params")


def tiny_params(*extra: str) -> dict[str, Any]:
    """params.yaml as composed with the tiny overrides (and any `key=value` in extra)."""
    from medcast.config import compose

    return compose([*TINY_OVERRIDES, *extra], config_dir=ROOT / "conf/params")


def tiny_models(**extra: dict[str, Any]) -> dict[str, Any]:
    """conf/model/ with the tiny model defaults (and any per-model `name={key: value}`)."""
    from dataclasses import replace

    from medcast.config import load_models

    models = load_models(ROOT)
    changes = {name: {**TINY_MODELS.get(name, {}), **extra.get(name, {})} for name in models}
    return {name: replace(cfg, defaults={**cfg.defaults, **changes[name]})
            for name, cfg in models.items()}


def tiny(*extra: str, **models: dict[str, Any]) -> Any:
    """The typed Params of the tiny study (repository conf files, tiny overrides)."""
    from medcast.config import parse_params

    return parse_params(tiny_params(*extra), ROOT, models=tiny_models(**models))


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: the virtualenv's bin first (stages run `python`)."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
