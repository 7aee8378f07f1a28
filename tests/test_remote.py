"""`make push` / `make pull` (`python -m medcast.remote push|pull`): where plain `dvc push` stops
at "Unable to locate credentials", one message names `make s3` and the AWS settings; after
`make s3` (scripts/s3.py start) the same command pushes; a stopped local server and a missing
remote are named with their fix too."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support.s3_fixtures")  # imported here before the plugin loads

from devtools import s3server  # noqa: E402
from devtools.ports import free_ports  # noqa: E402
from tests.support.s3_fixtures import ROOT, committed_remote_section, isolated_env, run  # noqa: E402


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A git+DVC repository with this project's committed remote and one tracked file; an
    environment with no AWS setting and an empty HOME."""
    root = tmp_path / "project"
    root.mkdir()
    env = isolated_env(tmp_path / "home", MEDCAST_S3_PORT=str(free_ports(1)[0]),
                       MEDCAST_S3_BUCKET="pushbucket")
    run(["git", "init", "-q", "-b", "main"], root, env)
    run(["dvc", "init", "-q"], root, env)
    (root / ".dvc" / "config").write_text(committed_remote_section())
    (root / "data.bin").write_bytes(os.urandom(1024))
    run(["dvc", "add", "-q", "data.bin"], root, env)
    return root, env


def _remote(root: Path, env: dict[str, str], command: str = "push"):
    return run([sys.executable, "-m", "medcast.remote", command], root, env, check=False,
               timeout=120)


def test_push_without_credentials_names_make_s3_and_after_it_pushes(project):
    root, env = project
    out = _remote(root, env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        "error: DVC remote 'storage' (s3://medcast/dvcstore) has no credentials: `dvc push` "
        "would stop at \"Unable to locate credentials\". For the local S3 server run `make s3` "
        "(it writes the endpoint and keys into .dvc/config.local); for AWS S3, `dvc remote "
        "modify --local storage access_key_id …` and `… secret_access_key …` (or set "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) (README, \"Sharing "
        "artifacts through S3\")")
    try:
        started = run([sys.executable, "-m", "scripts.s3", "start", "--root", str(root)], ROOT,
                      env, timeout=90)  # what `make s3` runs
        assert "DVC remote 'storage' ->" in started.stdout
        pushed = _remote(root, env)
        assert pushed.returncode == 0, pushed.stderr
        assert "1 file pushed" in pushed.stdout
        server = s3server.load(root / ".s3")
        assert server is not None
        run([sys.executable, "-m", "scripts.s3", "stop", "--root", str(root)], ROOT, env)
        down = _remote(root, env, "pull")
        assert down.returncode == 2
        assert down.stderr.strip() == (
            f"error: DVC remote 'storage' (s3://pushbucket/dvcstore): nothing answers at "
            f"{server.endpoint}; start the local S3 server with `make s3` (`make s3-status` "
            "says whether it runs)")
    finally:
        leftover = s3server.load(root / ".s3")
        if leftover is not None:
            s3server.stop(leftover)


def test_without_a_default_remote_it_names_make_s3_and_dvc_remote_add(project):
    root, env = project
    (root / ".dvc" / "config").write_text("")
    out = _remote(root, env)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: no default DVC remote: `make s3` starts a local S3 server and points DVC at it, "
        "or add yours with `dvc remote add -d storage s3://BUCKET/dvcstore` (README, \"Sharing "
        "artifacts through S3\")")


def test_a_remote_needing_no_credentials_goes_straight_to_dvc(project, tmp_path):
    root, env = project
    run(["dvc", "remote", "add", "-f", "-d", "storage", str(tmp_path / "store")], root, env)
    out = _remote(root, env)
    assert out.returncode == 0, out.stderr
    assert "1 file pushed" in out.stdout and any((tmp_path / "store").rglob("*"))
