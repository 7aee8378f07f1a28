"""`python -m serve` (serve/__main__.py): a malformed setting exits 2 with one line and no
traceback; `--help`; `--check` verifies the model and touches no database; several workers
under one supervisor (MEDCAST_WORKERS) share the port, the metrics and the log, stop cleanly,
and do not outlive a killed supervisor; a port in use exits 1 with one line. (`migrate` is in
test_migrate.py, `keys` in test_clients.py.)
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from serve.prometheus import alive
from serve.workers import spreads_connections
from tests.support.servers import children

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


def _workers(tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path) -> dict[str, str]:
    return service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_WORKERS="2",
                       MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
                       MEDCAST_RATE_LIMIT="off", MEDCAST_LOG_LEVEL="INFO")


def test_several_workers_share_the_port_metrics_and_log_and_stop_cleanly(
    tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    """MEDCAST_WORKERS=2: a supervisor and two workers; the metrics folder is the service's
    own (made at the start, removed at the end); /metrics counts every request whichever worker
    answers; SIGTERM drains both logs and exits 0."""
    import httpx
    import sqlalchemy as sa

    from serve import db as servedb
    from tests.support.serving import metric

    body = json.dumps(tiny.examples[0]).encode()
    env = _workers(tiny, repo, tmp_path, pycache)
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log", timeout=60) as service:
        assert len(children(service.pid)) == 2, service.output(3000)
        folder = Path(re.search(r"metrics in (\S+)", service.output())[1])
        assert folder.is_dir()
        with httpx.Client(base_url=service.url, timeout=10) as client:
            sent = sum(client.post("/predict", content=body,
                                   headers={"Content-Type": "application/json"}).status_code == 200
                       for _ in range(60))
            for _ in range(4):  # whichever worker answers the scrape, it counts both
                assert metric(client.get("/metrics").text, "medcast_predictions_total") == sent
        assert service.stop(signal.SIGTERM, timeout=30) == 0, service.output(3000)
    output = service.output()
    assert "Traceback" not in output and output.count("prediction log drained") == 2, output
    assert not folder.exists(), "the metrics folder outlived the service"
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        assert servedb.count_rows(engine) == sent == 60
    finally:
        engine.dispose()


def test_a_killed_supervisor_leaves_no_worker_behind(
    tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    """SIGKILL of the supervisor: each worker gets SIGTERM from the kernel (PR_SET_PDEATHSIG),
    drains and exits; nothing keeps the port."""
    env = _workers(tiny, repo, tmp_path, pycache)
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log", timeout=60) as service:
        workers = children(service.pid)
        assert len(workers) == 2
        service.proc.kill()
        service.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(alive(w) for w in workers):
            assert time.monotonic() < deadline, f"orphaned workers: {workers}"
            time.sleep(0.1)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", service.port)) != 0
    assert service.output().count("prediction log drained") == 2, service.output(3000)


@pytest.mark.skipif(not spreads_connections(), reason="a socket per worker: Linux only")
def test_several_workers_on_a_port_in_use_exit_1_with_one_line(
    tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    """Even when the listener there would let a SO_REUSEPORT group in (serve/workers.py)."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "serve"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60,
                             env={**_workers(tiny, repo, tmp_path, pycache),
                                  "MEDCAST_PORT": str(port)})
    assert out.returncode == 1, out.stderr
    assert f"medcast serve: cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr
