"""The one service launcher of tests, benchmarks and scripts (devtools/service.py): it says why
a service did not come up, and never leaves a process behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devtools.service import ServiceError, running, service_env, start

pytestmark = pytest.mark.timeout(60)


def test_a_service_that_exits_is_reported_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"exited with status 2(.|\n)*MEDCAST_MAX_BATCH"):
        start(service_env(MEDCAST_MAX_BATCH="lots"), cwd=tmp_path, log=tmp_path / "serve.log")


def test_a_service_never_ready_is_killed_and_reaped(tmp_path: Path) -> None:
    token = uuid.uuid4().hex  # names this test's process among everything on the machine
    hang = ["-c", f"import time; print('starting', flush=True); time.sleep(60)  # {token}"]
    with pytest.raises(ServiceError, match=r"not ready within 1 s(.|\n)*starting"):
        start(service_env(), cwd=tmp_path, log=tmp_path / "hang.log", args=hang, timeout=1)
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    assert not [pid for pid in pids if token in _cmdline(pid)]


def test_running_reaps_the_service_even_when_the_block_fails(
    repo: Path, tmp_path: Path, pycache: Path
) -> None:
    env = service_env(pycache, MEDCAST_REPO=str(repo),
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}")
    with pytest.raises(RuntimeError, match="the test failed"), \
            running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service:
        assert service.proc.poll() is None
        raise RuntimeError("the test failed")
    assert service.proc.returncode is not None  # killed and waited for


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
    except OSError:
        return ""
