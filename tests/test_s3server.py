"""The local SeaweedFS server: signatures enforced, stop by pid, restart keeps data, side-by-side
servers, and the `scripts/s3.py` CLI that `make s3` / `make s3-stop` run."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support.s3_fixtures")  # imported here before the plugin loads

from devtools import s3server  # noqa: E402
from devtools.ports import free_ports, stable_free_port  # noqa: E402
from devtools.s3server import Credentials, S3Server  # noqa: E402
from tests.support.s3_fixtures import ROOT, committed_remote_section, isolated_env, run  # noqa: E402

pytest_plugins = ["tests.support.s3_fixtures"]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_server_enforces_signatures(s3_server: S3Server, s3_bucket: str) -> None:
    fs = s3server.filesystem(s3_server)
    fs.pipe(f"{s3_bucket}/hello.txt", b"hello")
    assert fs.cat(f"{s3_bucket}/hello.txt") == b"hello"

    wrong_secret = Credentials(s3_server.credentials.access_key, "not-the-secret")
    with pytest.raises(PermissionError, match="signature"):
        s3server.filesystem(s3_server, wrong_secret).ls(s3_bucket)
    with pytest.raises(PermissionError):
        s3server.filesystem(s3_server, wrong_secret).cat(f"{s3_bucket}/hello.txt")
    unknown_key = Credentials.generate()
    with pytest.raises(PermissionError):
        s3server.filesystem(s3_server, unknown_key).ls(s3_bucket)


def test_server_binds_loopback_only(s3_server: S3Server) -> None:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip("ss not available")
    mine = [line for line in out.stdout.splitlines() if f"pid={s3_server.pid}," in line]
    assert mine, "no listening sockets found for the server"
    assert all("127.0.0.1:" in line.split()[3] for line in mine), mine


def test_stop_by_pid_then_restart_keeps_data(s3_servers) -> None:
    server = s3_servers.start()
    s3server.ensure_bucket(server, "keep")
    s3server.filesystem(server).pipe("keep/object", b"x" * 1000)

    assert s3server.stop(server) is True
    assert not s3server.is_running(server.pid)
    assert not _answers(server.ports["s3"])
    assert not (server.root / "weed.pid").exists()
    assert s3server.stop(server) is False  # stopping twice is harmless

    again = s3_servers.restart(server)
    assert again.endpoint == server.endpoint
    assert s3server.filesystem(again).cat("keep/object") == b"x" * 1000


def test_two_servers_side_by_side_are_independent(s3_servers) -> None:
    a, b = s3_servers.start(), s3_servers.start()
    assert not set(a.ports.values()) & set(b.ports.values())
    s3server.ensure_bucket(a, "only-on-a")
    assert s3server.filesystem(a).exists("only-on-a")
    assert not s3server.filesystem(b).exists("only-on-a")


def test_stop_never_signals_a_process_that_is_not_weed(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert s3server.stop(sleeper.pid) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_start_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = dict(zip(s3server.PORT_NAMES, free_ports(10), strict=True))
        ports["s3"] = busy.getsockname()[1]
        with pytest.raises(s3server.S3ServerError, match="ports already in use: s3="):
            s3server.start(tmp_path / "s3", ports=ports, timeout=10)


def _cli(root: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m scripts.s3 <command>` as `make s3` runs it (from this checkout's root) for
    the project at `root`."""
    return run(
        [sys.executable, "-m", "scripts.s3", command, "--root", str(root)],
        ROOT,
        env,
        check=False,
        timeout=90,
    )


def test_cli_start_configures_dvc_push_then_stop(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = isolated_env(
        tmp_path / "home",
        # Below the kernel's ephemeral range: a port bind(0) returned could be handed to another
        # test's connection before `start` (seconds later) binds it, and the server then rightly
        # takes another (a fresh-clone CI run saw that).
        MEDCAST_S3_PORT=str(stable_free_port()),
        MEDCAST_S3_BUCKET="clibucket",
    )
    run(["git", "init", "-q", "-b", "main"], project, env)
    run(["dvc", "init", "-q"], project, env)
    (project / ".dvc" / "config").write_text(committed_remote_section())
    (project / "data.bin").write_bytes(os.urandom(2048))
    run(["dvc", "add", "-q", "data.bin"], project, env)
    local_config = project / ".dvc" / "config.local"
    local_config.write_text("")  # as an earlier `dvc remote modify --local` leaves it: 644
    local_config.chmod(0o644)
    try:
        started = _cli(project, "start", env)
        assert started.returncode == 0, started.stdout + started.stderr
        server = s3server.load(project / ".s3")
        assert server is not None and s3server.is_running(server.pid)
        assert server.ports["s3"] == int(env["MEDCAST_S3_PORT"])

        # Keys live only in git-ignored files.
        creds = project / ".s3" / "credentials.env"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert stat.S_IMODE(local_config.stat().st_mode) == 0o600
        assert server.credentials.secret_key in creds.read_text()
        local = (project / ".dvc" / "config.local").read_text()
        assert server.endpoint in local and server.credentials.secret_key in local
        assert "s3://clibucket/dvcstore" in local
        run(["git", "add", "-A"], project, env)
        staged = run(["git", "diff", "--cached", "--name-only"], project, env).stdout.split()
        assert not [f for f in staged if f.startswith(".s3/") or f.endswith("config.local")]
        assert server.credentials.secret_key not in (project / ".dvc" / "config").read_text()

        assert _cli(project, "status", env).returncode == 0
        again = _cli(project, "start", env)  # idempotent: reuses the running server
        assert "already running" in again.stdout
        pushed = run(["dvc", "push"], project, env)
        assert "1 file pushed" in pushed.stdout
        assert s3server.filesystem(server).find("clibucket/dvcstore")

        stopped = _cli(project, "stop", env)
        assert stopped.returncode == 0 and f"pid {server.pid}" in stopped.stdout
        assert not s3server.is_running(server.pid)
        assert _cli(project, "status", env).returncode == 3
    finally:
        leftover = s3server.load(project / ".s3")
        if leftover is not None:
            s3server.stop(leftover)
