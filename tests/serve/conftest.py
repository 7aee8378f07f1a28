"""Fixtures of tests/serve/ beyond the service's own (tests/support/serving.py, loaded by
tests/conftest.py): `keys`, a clients file of two clients (tests/support/clients.py); `store`,
a real MLflow store holding the tiny model as version 1 (tests/support/registry.py), `tracking`
(that store as MLFLOW_TRACKING_URI), `own_store` (an empty store of the test's own) and `empty`
(a repository folder without models/ or dvc.lock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.tiny_model import TinyModel
from tests.support.clients import ward_keys
from tests.support.registry import Store, registered_store


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, str]]:
    return ward_keys(tmp_path, capsys)


@pytest.fixture(scope="session")
def store(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Version 1 of the tiny model, champion, registered once per worker (about 20 s)."""
    return registered_store(tiny, tmp_path_factory.mktemp("mlflow-store"))


@pytest.fixture
def tracking(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    return store


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    """A repository folder without models/ or dvc.lock: a registry load needs neither."""
    folder = tmp_path / "repo"
    folder.mkdir()
    return folder


@pytest.fixture
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty store of this test's own (its versions may be tampered with)."""
    uri = f"sqlite:///{tmp_path / 'own' / 'mlflow.db'}"
    (tmp_path / "own").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
