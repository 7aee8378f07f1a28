"""The real service, `python -m serve` (uvicorn) on a free loopback port, started through the
one launcher of tests, benchmarks and scripts (devtools/service.py): `real_server` stops it
gracefully and checks the stop; `launch` leaves the stopping to the test (fault tests send their
own signals); `children` and `kill_all` reach a multi-process service's workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.service import running, service_env

LAUNCH_KEY = "fuzz-key"  # MEDCAST_API_KEY of every server `launch` starts


def children(pid: int) -> set[int]:
    """The worker processes of `pid` (Linux /proc): its children but multiprocessing's
    resource tracker."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    out = set()
    for child in map(int, text.split()):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            out.add(child)
    return out


def kill_all(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL the service's workers, then its supervisor (one process: just it), as a power
    cut would: nothing drains. The pids killed."""
    pids = [*children(proc.pid), proc.pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return pids


@contextmanager
def real_server(tmp_path: Path, repo: Path, db_url: str, pycache: Path,
                python: str = sys.executable) -> Iterator[tuple[int, Any]]:
    """`python -m serve` (with `python`), ready; stopped gracefully (SIGINT) at the end of the
    block, which must exit 0 without a traceback and leave nothing listening."""
    env = service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_DATABASE_URL=db_url,
                      MEDCAST_RATE_LIMIT="100000/minute", MEDCAST_LOG_LEVEL="WARNING")
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log", python=python) as service:
        yield service.port, service.proc
        # graceful: uvicorn runs the lifespan shutdown (drain)
        assert service.stop(signal.SIGINT) == 0, service.output(3000)
        assert "Traceback" not in service.output(), service.output(3000)
    with socket.socket() as s:  # nothing left listening
        assert s.connect_ex(("127.0.0.1", service.port)) != 0


@contextmanager
def launch(repo: Path, db_url: str, pycache: Path, cwd: Path, **env: str
           ) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`python -m serve` on a free loopback port, ready; killed on the way out if still alive.

    Unlike real_server it does not stop the server itself: the fault tests send their own
    signals. Its output is in `proc.stderr_path`.
    """
    base = dict(MEDCAST_REPO=str(repo), MEDCAST_DATABASE_URL=db_url, MEDCAST_RATE_LIMIT="off",
                MEDCAST_LOG_LEVEL="WARNING", MEDCAST_API_KEY=LAUNCH_KEY)
    base.update(env)
    log = cwd / f"serve-{len(list(cwd.glob('serve-*.log')))}.log"
    with running(service_env(pycache, **base), cwd=cwd, log=log) as service:
        service.proc.stderr_path = log  # type: ignore[attr-defined]
        yield service.port, service.proc
