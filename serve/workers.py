"""Several worker processes: on Linux, one listening socket per worker, so connections spread.

With one listening socket shared by every worker (uvicorn's supervisor binds one), whichever
worker wakes first accepts all the connections waiting: a client's burst of keep-alive
connections (a connection pool, wrk's 16) can land 16/0 on one worker and leave the other
cores idle, and how they split changes from run to run (docs/serving.md). On Linux, listening
sockets bound to the same address with SO_REUSEPORT form a group over which the kernel spreads
new connections by a hash of their addresses (socket(7), Linux 3.9 and later); `bind_sockets`
binds one per worker and `Supervisor` gives worker slot i socket i, for life: a replacement
takes over its slot's socket.

The supervisor keeps every socket open. A worker that dies leaves the connections its socket
had queued, and the new ones hashed to it, waiting for the replacement (spawn, imports and the
model: measured 1.02 s), not reset; the other workers keep answering theirs. A socket listens
once its worker has started: until then the kernel gives its share to the others. Elsewhere
(macOS's SO_REUSEPORT does not spread connections), for one worker, or when the platform has
no SO_REUSEPORT, one shared socket, as uvicorn binds it.

Only sockets of the same user join a SO_REUSEPORT group: a service already listening on the
port, ours or another's, is refused (EADDRINUSE) before the group is bound, so a second
`make serve` on the same port fails instead of silently sharing its connections.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("medcast.serve")


class BindError(Exception):
    """The address cannot be listened on (in use, not ours, not an address)."""


def spreads_connections() -> bool:
    """Whether this platform's SO_REUSEPORT spreads a group's connections (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn's bind_socket


def bind_sockets(host: str, port: int, workers: int) -> list[socket.socket]:
    """`workers` sockets bound to host:port with SO_REUSEPORT (not yet listening: each worker's
    server listens on its own); port 0 gives every one the same free port."""
    family = _family(host)
    probe = socket.socket(family)
    try:  # no SO_REUSEPORT: fails while anything listens there, whoever's group it is
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    except OSError as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(workers):
            sock = socket.socket(family)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError as exc:  # taken between the probe and the group (a race): say so
        for sock in sockets:
            sock.close()
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets


class Supervisor(Multiprocess):
    """uvicorn's supervisor (start, health checks, replacing a dead or hung worker, stop) with
    worker slot i on socket i when given one socket per worker; otherwise exactly uvicorn's.

    uvicorn's methods start each worker on `self.sockets`; per slot, they run with that slot's
    socket and process alone in view, so its own logic (replacement, a failed start stopping
    the supervisor) is what runs. Adding or removing a worker by signal (TTIN/TTOU) would leave
    a socket without one: there, they are refused with a message."""

    def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.slots = sockets if len(sockets) > 1 and len(sockets) == config.workers else None

    def _each_slot(self, method: Callable[[], None]) -> None:
        """`method` (uvicorn's) once per slot, with only that slot's socket and process in view;
        with one shared socket, once as uvicorn runs it."""
        slots = self.slots
        if slots is None:
            return method()
        shared, processes = self.sockets, self.processes
        try:
            for i, sock in enumerate(slots):
                self.sockets, self.processes_num = [sock], 1
                self.processes = processes[i:i + 1]
                method()
                processes[i:i + 1] = self.processes
        finally:
            self.sockets, self.processes, self.processes_num = shared, processes, len(slots)

    def init_processes(self) -> None:
        self._each_slot(super().init_processes)

    def keep_subprocess_alive(self) -> None:
        self._each_slot(super().keep_subprocess_alive)

    def restart_all(self) -> None:
        self._each_slot(super().restart_all)

    def handle_ttin(self) -> None:
        self._resize(super().handle_ttin)

    def handle_ttou(self) -> None:
        self._resize(super().handle_ttou)

    def _resize(self, method: Callable[[], None]) -> None:
        if self.slots is None:
            method()
        else:
            logger.warning("workers listen on a socket each: their number is MEDCAST_WORKERS, "
                           "set at start (SIGTTIN/SIGTTOU ignored)")


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
