"""Throwaway PostgreSQL clusters for the tests that must stop, kill or reconfigure a server.

The machine's shared PostgreSQL (127.0.0.1:5432) is never touched: `PgCluster` runs `initdb`
in a fresh temporary folder and a private postmaster on a free loopback port, with its Unix
socket inside that folder. `pg_cluster` (fixture) yields one that is started;
`pg_cluster_factory` (fixture) and `cluster_maker()` (context manager, for wider-scoped
fixtures) give a function that makes more (not started, e.g. to configure TLS first). Whatever
happens, teardown stops every cluster (`pg_ctl stop -m immediate`, then the postmaster's own
pid) and deletes its folder.

initdb refuses to run as root: as root the server binaries run as the `postgres` OS user
(`runuser -u postgres --`) and the folder is handed to that user. Durability settings are the
defaults (fsync on, synchronous_commit on): the fault tests rely on acknowledged commits
surviving an immediate stop. Tests skip when no PostgreSQL server binaries are installed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from devtools.ports import stable_free_port

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"  # the OS user the server runs as when the tests run as root
DB_USER = "postgres"  # the cluster's superuser (trust authentication on loopback)
BASE_CONF = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'16MB'",
    "max_connections": "40",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
    "fsync": "on",  # kept: the kill test checks that acknowledged commits survive
    "synchronous_commit": "on",
}


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and postgres."""
    if not PG_ROOT.is_dir():
        return None
    versions = sorted(
        (d for d in PG_ROOT.iterdir() if d.name.split(".")[0].isdigit()),
        key=lambda d: tuple(int(p) for p in d.name.split(".") if p.isdigit()),
        reverse=True,
    )
    for d in versions:
        b = d / "bin"
        if all((b / exe).is_file() and os.access(b / exe, os.X_OK)
               for exe in ("initdb", "pg_ctl", "postgres")):
            return b
    return None


class PgCluster:
    """One private cluster: `init()` once, then `start()`/`stop()` as often as a test needs."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam(OS_USER)  # KeyError: no such user (the fixture skips)
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        # /tmp: traversable by the server's user, and short (Unix socket paths: ≤ 107 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="medcast-pg-",
                                          dir="/tmp" if os.path.isdir("/tmp") else None))
        self.data = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = 0
        self.conf: dict[str, str] = {}  # settings on top of BASE_CONF (see `configure`)
        self.hba: list[str] | None = None  # None: initdb's (trust on the socket and loopback)
        try:
            self.sockdir.mkdir()
            self.give(self.root, self.sockdir)
            os.chmod(self.root, 0o755)  # mkdtemp makes it 0700
            os.chmod(self.sockdir, 0o700)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    # ---- files ---------------------------------------------------------------------------

    def give(self, *paths: Path) -> None:
        """Hand files to the server's OS user (as root only; otherwise they are ours already)."""
        if self.as_root:
            for p in paths:
                os.chown(p, self._uid, self._gid)

    def write_private(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        """A file in the cluster's folder (keys: 0600) owned by the server's OS user."""
        path = self.root / name
        path.write_bytes(data)
        os.chmod(path, mode)
        self.give(path)
        return path

    # ---- commands ------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        # cwd: the server's user may not be able to read the caller's cwd (pg_ctl warns)
        out = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "LC_ALL": "C", "LANG": "C"})
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}):\n"
                               f"{out.stdout[-2000:]}{out.stderr[-2000:]}\n{self.log_tail()}")
        return out

    def init(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", DB_USER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions", timeout=120)
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\ninclude_if_exists = 'medcast.conf'\n")
        return self

    def configure(self, **settings: str) -> None:
        """postgresql.conf settings (values as written in the file, strings quoted: "'x'").

        Applied at the next start (or `reload()`); they override BASE_CONF.
        """
        self.conf.update(settings)

    def _write_conf(self) -> None:
        conf = {**BASE_CONF, "port": str(self.port),
                "unix_socket_directories": f"'{self.sockdir}'", **self.conf}
        path = self.data / "medcast.conf"
        path.write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        self.give(path)
        if self.hba is not None:
            hba = self.data / "pg_hba.conf"
            hba.write_text("\n".join(self.hba) + "\n")
            self.give(hba)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self, timeout: int = 30) -> None:
        """Start on `self.port` (a free port chosen on the first start, kept across restarts)."""
        fresh = self.port == 0
        for attempt in range(3):
            if fresh:
                self.port = stable_free_port()
            self._write_conf()
            out = self._run("pg_ctl", "start", "-w", "-t", str(timeout), "-D", str(self.data),
                            "-l", str(self.logfile), timeout=timeout + 15, check=False)
            if out.returncode == 0:
                return
            in_use = "could not bind" in self.log_tail() or "in use" in self.log_tail()
            if not (fresh and in_use) or attempt == 2:  # another process took the port: retry
                raise RuntimeError(f"pg_ctl start failed ({out.returncode}):\n{out.stdout}"
                                   f"{out.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast", timeout: int = 30) -> None:
        """`pg_ctl stop -m <smart|fast|immediate>`; waits until the postmaster is gone."""
        self._run("pg_ctl", "stop", "-w", "-t", str(timeout), "-m", mode, "-D", str(self.data),
                  timeout=timeout + 15)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def reload(self) -> None:
        self._write_conf()
        self._run("pg_ctl", "reload", "-D", str(self.data))

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def url(self, host: str = "127.0.0.1", database: str = "postgres",
            driver: str = "postgresql+psycopg", **query: str) -> str:
        q = {"connect_timeout": "5", **query}
        return f"{driver}://{DB_USER}@{host}:{self.port}/{database}?{urlencode(q)}"

    def destroy(self) -> None:
        """Stop (immediate) whatever runs, then delete the folder. Never raises."""
        with contextlib.suppress(Exception):
            if self.running:
                self._run("pg_ctl", "stop", "-w", "-t", "20", "-m", "immediate", "-D",
                          str(self.data), timeout=40, check=False)
        with contextlib.suppress(Exception):  # pg_ctl failed: the postmaster we started, by pid
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)  # postgres' own "immediate shutdown" signal
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # ProcessLookupError once it is gone
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _bindir_or_skip() -> Path:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) under {PG_ROOT}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no '{OS_USER}' OS user to run initdb as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing")
    return bindir


@contextlib.contextmanager
def cluster_maker() -> Iterator[Callable[[], PgCluster]]:
    """`make()` → a new initialised (not started) cluster; all destroyed on the way out.

    Skips the calling test (or the module, from a module-scoped fixture) without binaries.
    """
    bindir = _bindir_or_skip()
    made: list[PgCluster] = []

    def make() -> PgCluster:
        cluster = PgCluster(bindir)
        made.append(cluster)
        return cluster.init()

    try:
        yield make
    finally:
        for cluster in made:
            cluster.destroy()


@pytest.fixture
def pg_cluster_factory() -> Iterator[Callable[[], PgCluster]]:
    """`make()` → a new initialised (not started) cluster; all are destroyed at teardown."""
    with cluster_maker() as make:
        yield make


@pytest.fixture
def pg_cluster(pg_cluster_factory: Callable[[], PgCluster]) -> PgCluster:
    """A started private cluster (trust auth on 127.0.0.1); `.url()` is its SQLAlchemy URL."""
    cluster = pg_cluster_factory()
    cluster.start()
    return cluster
