"""`python -m serve` (serve/__main__.py): a malformed setting exits 2 with one line and no
traceback; `--help`; `--check` verifies the model and touches no database. (`migrate` is in
test_migrate.py, `keys` in test_clients.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtools.service import service_env

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def test_main_exits_2_with_a_clear_message_on_bad_settings(pycache: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env=service_env(pycache, MEDCAST_MAX_BATCH="lots"),
    )
    assert out.returncode == 2 and "MEDCAST_MAX_BATCH" in out.stderr
    assert "Traceback" not in out.stderr


def test_main_check_verifies_the_model_without_serving(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "MEDCAST_DATABASE_URL" in capsys.readouterr().out
    monkeypatch.setenv("MEDCAST_REPO", str(repo))
    assert main(["--check"]) == 0
    assert "ok: medcast-insurance (workspace)" in capsys.readouterr().out
    onnx = repo / "models" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1])
    assert main(["--check"]) == 1
    assert "refused:" in capsys.readouterr().err
    assert not (repo / "serve.db").exists()  # --check touches no database
