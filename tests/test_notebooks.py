"""The notebook runner and what the notebooks share: one-line failures, no traceback, no
transport warning; the service client's messages."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from devtools.ports import free_port
from medcast.errors import MedcastError
from medcast.notebooks import (
    NotebookStop,
    notebook_path,
    require_outputs,
    service_client,
    service_url,
)
from tests.conftest import ROOT, venv_env


def test_service_url_is_medcast_url_else_the_default_address_on_medcast_port(monkeypatch):
    monkeypatch.delenv("MEDCAST_URL", raising=False)
    monkeypatch.delenv("MEDCAST_PORT", raising=False)
    assert service_url() == "http://127.0.0.1:8000"
    monkeypatch.setenv("MEDCAST_PORT", "8123")
    assert service_url() == "http://127.0.0.1:8123"
    monkeypatch.setenv("MEDCAST_URL", "https://medcast.example.org")
    assert service_url() == "https://medcast.example.org"


def test_service_client_without_a_service_says_where_it_looked_and_what_to_start():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NotebookStop, match=rf"^no service at MEDCAST_URL={url} .*; start it with "
                                           r"`make serve`$") as err:
        service_client(url)
    assert err.value._render_traceback_() == [f"NotebookStop: {err.value}"]  # what Jupyter shows


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b'{"status":"not ready","reasons":["model md5 differs from dvc.lock"]}'
        self.send_response(503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_service_client_of_a_service_not_ready_says_why():
    server = HTTPServer(("127.0.0.1", 0), _NotReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(NotebookStop, match=r"is not ready \(503: .*model md5 differs"):
            service_client(url)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ["notebooks/04-api-client.ipynb", "04-api-client"])
def test_notebook_04_without_a_service_stops_with_one_line_and_exit_2(tmp_path: Path, name):
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "medcast.notebooks", name, "--out", str(tmp_path)],
        cwd=ROOT, env=venv_env(MEDCAST_URL=url), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: 04-api-client.ipynb: NotebookStop: no service at MEDCAST_URL={url} "
        f"([Errno 111] Connection refused); start it with `make serve` "
        f"(cells run so far: {tmp_path / '04-api-client.ipynb'})"
    ], out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "ConnectError" not in out.stderr + out.stdout
    # The kernel talks to nbclient over IPC sockets: no "running over TCP without encryption".
    assert "without encryption" not in out.stderr + out.stdout
    assert (tmp_path / "04-api-client.ipynb").exists()  # the cells run so far, for a look


def test_a_notebook_is_found_by_name_or_prefix_and_an_unknown_one_lists_them(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert notebook_path("04-api-client") == Path("notebooks/04-api-client.ipynb")
    assert notebook_path("02") == Path("notebooks/02-experiments.ipynb")
    with pytest.raises(MedcastError) as err:
        notebook_path("05-report")
    assert str(err.value) == (
        "no notebook '05-report' in notebooks/ (01-eda, 02-experiments, 03-monitoring, "
        "04-api-client); e.g. `python -m medcast.notebooks 01-eda`")


def test_missing_pipeline_outputs_stop_a_notebook_naming_them_and_make_repro(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/tuning.json").write_text("{}")
    require_outputs("reports/tuning.json")
    with pytest.raises(NotebookStop) as err:
        require_outputs("reports/cv_scores.csv", "reports/tuning.json", "data/processed/test.parquet")
    assert str(err.value) == (
        "reports/cv_scores.csv, data/processed/test.parquet not found: run the pipeline first "
        "(`make repro`), or fetch the committed results (`make pull`)")
