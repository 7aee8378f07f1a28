"""serve/workers.py: a SO_REUSEPORT socket per worker on Linux (the same port, a service already
listening refused), the supervisor keeping worker slot i on socket i through replacements, and
the real service's connections spread over its two workers."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from serve import workers
from serve.workers import BindError, Supervisor, bind_sockets
from tests.support.servers import children

linux_only = pytest.mark.skipif(not workers.spreads_connections(),
                                reason="SO_REUSEPORT spreads connections on Linux only")


@linux_only
def test_one_socket_per_worker_on_one_port() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(sockets) == 3 and len(ports) == 1 and ports != {0}
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
        assert all(s.get_inheritable() for s in sockets)
        assert all(not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in sockets)
    finally:
        workers.close_all(sockets)


@linux_only
@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "another-reuseport-group"])
def test_a_port_already_listened_on_is_refused(reuse_port: bool) -> None:
    """Also when the listener has SO_REUSEPORT itself (a second service of the same user): the
    group would otherwise take it in and share its connections."""
    with socket.socket() as other:
        if reuse_port:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(BindError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*in use"):
            bind_sockets("127.0.0.1", port, 2)


class FakeProcess:
    """Stands in for uvicorn's worker Process: records its sockets, alive until told."""

    started: list[FakeProcess] = []

    def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
        self.sockets, self.alive, self.killed = list(sockets), True, False
        self.exitcode, self.pid = -9, 1000 + len(FakeProcess.started)

    def start(self) -> None:
        FakeProcess.started.append(self)

    def is_alive(self, timeout: float = 5) -> bool:
        return self.alive

    def kill(self) -> None:
        self.killed = True

    def join(self) -> None:
        pass


class FakeConfig:
    workers = 3
    timeout_worker_healthcheck = 1


def test_supervisor_keeps_each_slot_on_its_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn.supervisors.multiprocess as mp

    monkeypatch.setattr(mp, "Process", FakeProcess)
    monkeypatch.setattr(FakeProcess, "started", [])
    monkeypatch.setattr(mp.signal, "signal", lambda *a: None)  # keep pytest's own handlers
    slots = [socket.socket() for _ in range(3)]
    try:
        sup = Supervisor(FakeConfig(), slots)
        sup.init_processes()
        assert [p.sockets for p in sup.processes] == [[s] for s in slots]
        first = list(sup.processes)
        first[1].alive = False  # the middle worker dies: its replacement takes its socket
        sup.keep_subprocess_alive()
        assert first[1].killed and sup.processes[1] is not first[1]
        assert sup.processes[1].sockets == [slots[1]]
        assert sup.processes[0] is first[0] and sup.processes[2] is first[2]
        assert sup.sockets == slots and sup.processes_num == 3 and len(FakeProcess.started) == 4
        sup.handle_ttin()  # a fourth worker would have no socket of its own: refused
        assert len(sup.processes) == 3
        sup.processes[2].alive, sup.processes[2].exitcode = False, 3  # uvicorn's STARTUP_FAILURE
        sup.keep_subprocess_alive()  # uvicorn's rule, per slot: a worker that cannot start stops all
        assert sup.should_exit.is_set() and len(FakeProcess.started) == 4
        assert len(sup.processes) == 3 and sup.sockets == slots
        shared = Supervisor(FakeConfig(), slots[:1])  # one socket: uvicorn's own behaviour
        shared.init_processes()
        assert [p.sockets for p in shared.processes] == [slots[:1]] * 3
    finally:
        workers.close_all(slots)


def _sockets(pid: int, port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets process `pid` holds on local port `port` in `state` (Linux
    /proc/net/tcp: "01" established, "0A" listening)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state and fields[9] in inodes:
                found.add(fields[9])
    return found


@linux_only
@pytest.mark.timeout(120)
def test_a_burst_of_connections_spreads_over_the_workers(
    tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    """Each of the two workers listens on a socket of its own on the service's port, and of
    32 keep-alive connections opened at once (as a pool or wrk opens them) each holds some.
    One shared socket gave them all to whichever worker woke first (16/0 in most rounds of
    the ceiling benchmark). Spread by the address hash, one of the two holding
    fewer than 4 of 32 has a chance of about 1 in 400,000 (binomial, p = 1/2)."""
    import http.client

    env = service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_WORKERS="2",
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
                      MEDCAST_RATE_LIMIT="off")
    body = json.dumps(tiny.examples[0]).encode()
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log", timeout=60) as service:
        # Ready means one worker answers; the other may still be loading, its socket not yet
        # listening (the kernel then gives every connection to the first): wait for both.
        deadline = time.monotonic() + 60
        while sum(bool(_sockets(pid, service.port, "0A")) for pid in children(service.pid)) < 2:
            assert time.monotonic() < deadline, service.output(3000)
            time.sleep(0.1)
        conns = [http.client.HTTPConnection("127.0.0.1", service.port, timeout=20)
                 for _ in range(32)]
        barrier = threading.Barrier(len(conns))

        def connect(c: http.client.HTTPConnection) -> None:
            barrier.wait()
            c.connect()

        threads = [threading.Thread(target=connect, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            for c in conns:  # each answered: accepted by its worker
                c.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = c.getresponse()
                assert response.status == 200, response.read()
                response.read()
            pids = children(service.pid)
            listening = {pid: _sockets(pid, service.port, "0A") for pid in pids}
            held = {pid: len(_sockets(pid, service.port, "01")) for pid in pids}
        finally:
            for c in conns:
                c.close()
    mine = list(listening.values())
    assert len(mine) == 2 and all(len(m) == 1 for m in mine) and mine[0] != mine[1], listening
    assert sum(held.values()) == 32, held
    assert min(held.values()) >= 4, held
