"""Fixtures of tests/serve/ beyond the service's own (tests/support/serving.py, loaded by
tests/conftest.py): `keys`, a clients file of two clients (tests/support/clients.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clients import ward_keys


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, str]]:
    return ward_keys(tmp_path, capsys)
