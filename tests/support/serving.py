"""Pytest plugin (loaded by tests/conftest.py): the fixtures of the service's tests.

`tiny` (the tiny served model, built once per worker), `repo` (a private copy of its folder a
test may tamper with), `pycache` (compiled modules shared by every service subprocess of the
run) and `pg_url` (a throwaway schema in the machine's PostgreSQL, skipped when unreachable);
`serving`, the app in-process behind Litestar's TestClient; and the helpers the service's test
modules share (bounded waits, metrics, the log's row count).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from devtools.tiny_model import TinyModel, build_tiny_model
from serve.app import create_app
from serve.settings import Settings

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def serving(settings: Settings, **kwargs: Any) -> Iterator[TestClient]:
    """`create_app(settings, **kwargs)` started (lifespan run) behind a TestClient."""
    with TestClient(create_app(settings, **kwargs), timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def repo(tiny: TinyModel, tmp_path: Path) -> Path:
    """A private copy of the model folder (tests may tamper with it)."""
    dst = tmp_path / "repo"
    shutil.copytree(tiny.root, dst)
    return dst


@pytest.fixture(scope="session")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by xdist workers (pytest's run folder): subprocesses compile each module once."""
    return tmp_path_factory.getbasetemp().parent / "medcast-pycache"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway schema in the machine's PostgreSQL (search_path set through the URL)."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL, connect_args={"connect_timeout": 2})
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError:
        admin.dispose()
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432 (database 'test')")
    schema = f"medcast_serve_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:  # application_name = schema: lets a test find (and cut) only its own connections
        yield f"{PG_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels}` (exactly these labels) in a Prometheus text
    exposition, or None when there is no such sample."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def scraped(client: Any, name: str, **labels: str) -> float | None:
    """One sample of the app's GET /metrics (None if absent)."""
    return metric(client.get("/metrics").text, name, **labels)


def wait_until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def written(client: Any, n: int) -> None:
    """Wait until the app has written `n` rows to its prediction log."""
    wait_until(lambda: scraped(client, "medcast_prediction_log_rows_written_total") == n,
               what=f"{n} rows written")


def log_count(url: str) -> int:
    """The rows in the prediction log at `url`."""
    import sqlalchemy as sa

    from serve.db import count_rows

    engine = sa.create_engine(url)
    try:
        return count_rows(engine)
    finally:
        engine.dispose()
