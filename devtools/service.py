"""Run the prediction service as a subprocess, for tests, benchmarks and scripts: start
`python -m serve` (or another command, e.g. uvicorn with several workers) on a free loopback
port, wait until `GET /health/ready` answers 200, stop it with a signal, and always reap it.

The service's stdout and stderr go to a file the caller names, never to a pipe: a pipe nobody
reads fills up and blocks the server. `running()` kills and reaps whatever is left on the way
out, so a failed test or an interrupted benchmark never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.ports import HOST, free_port

ROOT = Path(__file__).resolve().parents[1]
SERVE = ("-m", "serve")


class ServiceError(RuntimeError):
    """The service exited, or was not ready in time; the message ends with its output."""


def service_env(pycache: Path | None = None, base: Mapping[str, str] | None = None,
                **settings: str) -> dict[str, str]:
    """An environment for the service: `base` (default: this process's) without any MEDCAST_*
    setting, plus `settings`; this checkout importable first (PYTHONPATH); with `pycache`,
    compiled modules are cached there. This machine sets PYTHONDONTWRITEBYTECODE and the
    virtualenv holds no .pyc files: without a cache every start compiles every module it
    imports from source."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("MEDCAST_")}
    # Both packages of this checkout (serve/ and src/medcast), ahead of the virtualenv's editable
    # install, which may point at another checkout (a git worktree sharing the virtualenv).
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.update(settings)
    return env


def is_ready(port: int, host: str = HOST, tls: ssl.SSLContext | None = None) -> bool:
    """One `GET /health/ready` (over HTTPS with `tls`, a client context that trusts the
    service's CA): True on 200; False on any other status or no answer."""
    conn = (http.client.HTTPSConnection(host, port, timeout=1, context=tls) if tls is not None
            else http.client.HTTPConnection(host, port, timeout=1))
    try:
        conn.request("GET", "/health/ready")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, not HTTP
        return False
    finally:
        conn.close()


@dataclass
class ServiceProcess:
    """A started service: its process, port and output file."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path  # the service's stdout and stderr
    ready_s: float = float("nan")  # wall seconds from the start to the first ready answer
    tls: ssl.SSLContext | None = None  # the client context of an HTTPS service

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self, tail: int | None = None) -> str:
        """What the service printed so far (the last `tail` characters)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return text if tail is None else text[-tail:]

    def wait_ready(self, timeout: float = 30, poll_s: float = 0.02) -> float:
        """Poll until ready; the wall seconds it took. Raises ServiceError (with the output's
        tail) if the process exits first or `timeout` passes."""
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServiceError(f"the service exited with status {self.proc.returncode} "
                                   f"before it was ready:\n{self.output(3000)}")
            if is_ready(self.port, tls=self.tls):
                return time.perf_counter() - start
            if time.monotonic() > deadline:
                raise ServiceError(f"the service was not ready within {timeout:g} s:\n"
                                   f"{self.output(3000)}")
            time.sleep(poll_s)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        """Send `sig` (SIGINT, SIGTERM: a graceful stop that drains the prediction log) and
        wait for the exit; SIGKILL after `timeout`. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL if still running, then reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start(env: Mapping[str, str], *, cwd: Path, log: Path, port: int | None = None,
          args: Sequence[str] = SERVE, timeout: float = 30, poll_s: float = 0.02,
          python: str = sys.executable, tls: ssl.SSLContext | None = None) -> ServiceProcess:
    """Start `python <args>` (default `-m serve`; `python` may be another virtualenv's) with
    MEDCAST_PORT=`port` (default: a free one) in `cwd`, its output into `log`, and wait until
    it is ready (over HTTPS with `tls`, the client's SSL context). On failure the process is
    killed and reaped before ServiceError is raised."""
    port = port or free_port()
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([python, *args], cwd=cwd,
                                env={**env, "MEDCAST_PORT": str(port)},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    service = ServiceProcess(proc, port, log, tls=tls)
    try:
        service.wait_ready(timeout, poll_s)
    except BaseException:
        service.kill()
        raise
    service.ready_s = time.perf_counter() - started
    return service


@contextlib.contextmanager
def running(env: Mapping[str, str], **kwargs: object) -> Iterator[ServiceProcess]:
    """`start(env, **kwargs)` for the block; killed and reaped on the way out if still alive
    (stop it gracefully inside the block to check how it exits)."""
    service = start(env, **kwargs)  # type: ignore[arg-type]
    try:
        yield service
    finally:
        service.kill()
