"""Free TCP ports on 127.0.0.1 for the servers that tests, benchmarks and scripts start.

A port found free may be taken by someone else before the server binds it; every caller that
starts a server either retries on another port or fails with the server's own message.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that were free a moment ago (chosen by the kernel)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One port that was free a moment ago (chosen by the kernel)."""
    return free_ports(1)[0]


def port_is_free(port: int) -> bool:
    """True if `port` can be bound now (TIME_WAIT leftovers of a stopped server do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def stable_free_port() -> int:
    """A free port below the kernel's ephemeral range when there is room, for a server that
    keeps its port across restarts: while it is down, a port the kernel hands out (to `bind(0)`
    elsewhere, or to any outgoing connection) could take it; ports below that range are only
    ever taken on purpose."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(100 if low > 16_000 else 0):
        port = rng.randrange(15_000, low)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    return free_port()
