"""Run `python -m serve` on a free loopback port for the scripts that need a live service
(readme_examples.py, screenshot.py): a temp SQLite log, settings from the arguments (never from
the caller's MEDCAST_* variables), stopped by its pid on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ServiceError(RuntimeError):
    """The service did not start or did not become ready."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(repo: Path, workdir: Path, ready_s: float = 60,
                    **settings: str) -> Iterator[str]:
    """The service on `repo`'s model (dvc.lock, models/), working in `workdir`; yields its base
    URL once GET /health/ready answers 200. `settings`: extra MEDCAST_* variables."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCAST_")}
    env.update(PYTHONPATH=str(ROOT), MEDCAST_REPO=str(repo), MEDCAST_PORT=str(port),
               MEDCAST_DATABASE_URL=f"sqlite:///{workdir / 'log.db'}",
               MEDCAST_LOG_LEVEL="WARNING", **settings)
    proc = subprocess.Popen([sys.executable, "-m", "serve"], cwd=workdir, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise ServiceError(f"the service on {repo} exited ({proc.returncode}); "
                                   f"`python -m serve --check` in {repo} says why")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise ServiceError(f"the service on {repo} was not ready within {ready_s:g} s")
            time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
