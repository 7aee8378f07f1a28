"""Client keys issued as an operator issues them: `python -m serve keys add` (serve/clients.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.__main__ import main


def issue_key(path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`python -m serve keys add NAME --file PATH`: the key it prints (once)."""
    assert main(["keys", "add", name, "--file", str(path)]) == 0
    return capsys.readouterr().out.strip()


def ward_keys(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, str]]:
    """A clients file in `folder` with clients ward-a and ward-b: (its path, name → key). The
    `keys` fixture of tests/serve/conftest.py."""
    path = folder / "clients"
    return path, {name: issue_key(path, name, capsys) for name in ("ward-a", "ward-b")}
