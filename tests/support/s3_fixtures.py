"""Pytest plugin: a real local S3 server (SeaweedFS) and small throwaway DVC+git repositories.

Fixtures: `s3_server` (one server per xdist worker, always stopped), `s3_servers` (a factory
for servers a test may stop and restart; all stopped at teardown), `s3_bucket` (a fresh bucket
per test), `dvc_template` (a two-revision DVC repo, built once per worker) and `dvc_repo` (a
copy of it per test whose default remote points at the test's bucket). Every server gets its
own folder and free ports, so `pytest -n 2` workers never share anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools import s3server
from devtools.s3server import Credentials, S3Server

ROOT = Path(__file__).resolve().parents[2]
REMOTE = "storage"
GIT_ID = {
    "GIT_AUTHOR_NAME": "medcast tests",
    "GIT_AUTHOR_EMAIL": "tests@medcast.invalid",
    "GIT_COMMITTER_NAME": "medcast tests",
    "GIT_COMMITTER_EMAIL": "tests@medcast.invalid",
}


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment without the caller's AWS, DVC or git settings.

    HOME is a fresh folder (no ~/.aws, no global DVC or git config); credentials and endpoint
    come only from what a test passes or writes into `.dvc/config.local`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_", "GIT_"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(GIT_ID)
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    env.update(extra)
    return env


def run(
    cmd: list[str], cwd: Path, env: dict[str, str], *, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({out.returncode}) in {cwd}:\n{out.stdout}\n{out.stderr}"
        )
    return out


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def committed_remote_section() -> str:
    """The default-remote part of this project's .dvc/config (url, verify, timeouts), so the
    throwaway repositories test the settings we ship, not a copy of them."""
    from configobj import ConfigObj

    conf = ConfigObj(str(ROOT / ".dvc" / "config"))
    assert conf.get("core", {}).get("remote") == REMOTE, "no default remote in .dvc/config"
    section = dict(conf[f'remote "{REMOTE}"'])
    lines = ["[core]", f"    remote = {REMOTE}", f"['remote \"{REMOTE}\"']"]
    lines += [f"    {k} = {v}" for k, v in section.items()]
    return "\n".join(lines) + "\n"


def write_local_remote(
    repo: Path,
    url: str | None = None,
    server: S3Server | None = None,
    *,
    fail_fast: bool = True,
) -> None:
    """`.dvc/config.local` as `make s3` writes it: url override, endpoint, keys and the AWS
    config file with fail-fast retries (`fail_fast=False`: botocore's defaults)."""
    options: dict[str, str] = {"url": url} if url else {}
    if server:
        aws_config = s3server.write_aws_config(repo / ".dvc" / "aws-config") if fail_fast else None
        options.update(s3server.dvc_remote_settings(server, aws_config))
    lines = [f"['remote \"{REMOTE}\"']"] + [f"    {k} = {v}" for k, v in options.items()]
    local = repo / ".dvc" / "config.local"
    local.write_text("\n".join(lines) + "\n")
    local.chmod(0o600)  # it holds the secret key


GENERATE = textwrap.dedent(
    """\
    import random
    from pathlib import Path

    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    rng = random.Random(params["seed"])
    Path("data").mkdir(exist_ok=True)
    Path("data/raw.bin").write_bytes(rng.randbytes(params["size"]))
    """
)
MODEL = textwrap.dedent(
    """\
    import hashlib
    from pathlib import Path

    raw = Path("data/raw.bin").read_bytes()
    parts = Path("models/parts")
    parts.mkdir(parents=True, exist_ok=True)
    blocks = [hashlib.sha256(raw + bytes([i])).digest() * 64 for i in range(3)]
    Path("models/model.bin").write_bytes(b"".join(blocks))
    for i, block in enumerate(blocks):
        (parts / f"part{i}.bin").write_bytes(block[::-1])
    """
)
DVC_YAML = textwrap.dedent(
    """\
    stages:
      generate:
        cmd: python generate.py
        deps: [generate.py]
        params: [seed, size]
        outs: [data/raw.bin]
      model:
        cmd: python model.py
        deps: [model.py, data/raw.bin]
        outs: [models/model.bin, models/parts]
    """
)
# Outputs of the throwaway repo (plain files, a directory out, and a `dvc add`ed file).
OUT_FILES = [
    "data/raw.bin",
    "models/model.bin",
    "models/parts/part0.bin",
    "models/parts/part1.bin",
    "models/parts/part2.bin",
    "data/extra.bin",
]


@dataclass
class Template:
    """A git+DVC repo with tags v1 and v2 (different seeds), its cache full, no remote yet."""

    path: Path
    env: dict[str, str]
    v1: dict[str, bytes] = field(default_factory=dict)  # path -> bytes at v1
    v2: dict[str, bytes] = field(default_factory=dict)


def build_template(path: Path, env: dict[str, str]) -> Template:
    path.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], path, env)
    run(["dvc", "init", "-q"], path, env)
    (path / ".dvc" / "config").write_text(committed_remote_section())
    (path / "generate.py").write_text(GENERATE)
    (path / "model.py").write_text(MODEL)
    (path / "dvc.yaml").write_text(DVC_YAML)
    template = Template(path=path, env=env)
    for tag, seed, snapshot in (("v1", 1, template.v1), ("v2", 2, template.v2)):
        (path / "params.yaml").write_text(f"seed: {seed}\nsize: 4096\n")
        (path / "data").mkdir(exist_ok=True)
        (path / "data" / "extra.bin").write_bytes(os.urandom(3000))
        run(["dvc", "repro", "-q"], path, env)
        run(["dvc", "add", "-q", "data/extra.bin"], path, env)
        run(["git", "add", "-A"], path, env)
        run(["git", "commit", "-q", "-m", tag], path, env)
        run(["git", "tag", tag], path, env)
        snapshot.update({rel: (path / rel).read_bytes() for rel in OUT_FILES})
    return template


@dataclass
class ThrowawayRepo:
    """A copy of the template whose default remote is `url` (in config.local) on `server`."""

    path: Path
    env: dict[str, str]  # no credentials: pass `self.aws_env(...)` or use .dvc/config.local
    server: S3Server
    bucket: str
    url: str
    template: Template

    def aws_env(self, server: S3Server | None = None, **extra: str) -> dict[str, str]:
        """`env` plus the standard AWS_* variables for `server` (default: this repo's)."""
        return {**self.env, **(server or self.server).env(), **extra}

    def dvc(self, *args: str, cwd: Path | None = None, check: bool = True, **kw: object):
        env = kw.pop("env", None) or self.aws_env()
        return run(["dvc", *args], cwd or self.path, env, check=check, **kw)  # type: ignore[arg-type]

    def clone(self, dest: Path) -> Path:
        """A fresh `git clone` (no DVC cache, no config.local)."""
        run(["git", "clone", "-q", str(self.path), str(dest)], dest.parent, self.env)
        return dest


def remote_objects(server: S3Server, bucket: str) -> list[str]:
    fs = s3server.filesystem(server)
    return sorted(p for p in fs.find(bucket) if not p.endswith("/"))


def lock_outs(repo: Path) -> dict[str, str]:
    """path -> md5 of every out in dvc.lock and *.dvc files (dir outs end with .dir)."""
    import yaml

    outs: dict[str, str] = {}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        outs.update({o["path"]: o["md5"] for o in stage.get("outs", [])})
    for dvcfile in repo.rglob("*.dvc"):
        if not dvcfile.is_file() or dvcfile.relative_to(repo).parts[0] in (".dvc", ".git"):
            continue
        base = dvcfile.parent.relative_to(repo)
        for o in yaml.safe_load(dvcfile.read_text())["outs"]:
            outs[(base / o["path"]).as_posix()] = o["md5"]
    return outs


def cache_object(repo: Path, md5: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS per test session (per xdist worker); tests must not stop it."""
    server = s3server.start(tmp_path_factory.mktemp("seaweedfs"), timeout=30)
    try:
        yield server
    finally:
        s3server.stop(server)


class Servers:
    """Start, stop and restart servers of one test; `close()` stops whatever is left."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.running: dict[Path, S3Server] = {}

    def start(self, credentials: Credentials | None = None) -> S3Server:
        root = self.base / f"s3-{len(self.running)}-{uuid.uuid4().hex[:6]}"
        server = s3server.start(root, credentials, timeout=30)
        self.running[root] = server
        return server

    def stop(self, server: S3Server) -> None:
        s3server.stop(server)
        self.running.pop(server.root, None)

    def restart(self, server: S3Server) -> S3Server:
        """Same folder, ports and keys: the endpoint clients know comes back."""
        self.stop(server)
        again = s3server.start(server.root, server.credentials, ports=server.ports, timeout=30)
        self.running[server.root] = again
        return again

    def close(self) -> None:
        for server in list(self.running.values()):
            s3server.stop(server)
        self.running.clear()


@pytest.fixture
def s3_servers(tmp_path: Path) -> Iterator[Servers]:
    servers = Servers(tmp_path / "servers")
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session server."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3server.ensure_bucket(s3_server, bucket)
    return bucket


@pytest.fixture(scope="session")
def dvc_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("dvc-template")
    return build_template(base / "repo", isolated_env(base / "home"))


def copy_repo(template: Template, dest: Path, server: S3Server, bucket: str) -> ThrowawayRepo:
    shutil.copytree(template.path, dest, symlinks=True)
    url = f"s3://{bucket}/dvcstore"
    # The committed url (s3://medcast/...) is overridden per test, like MEDCAST_S3_BUCKET does.
    write_local_remote(dest, url)
    env = isolated_env(dest.parent / f"{dest.name}-home")
    return ThrowawayRepo(dest, env, server, bucket, url, template)


@pytest.fixture
def dvc_repo(
    dvc_template: Template, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> ThrowawayRepo:
    """A committed copy of the template whose default remote is a fresh bucket (not pushed)."""
    return copy_repo(dvc_template, tmp_path / "repo", s3_server, s3_bucket)


def dir_listing(repo: Path, md5: str) -> dict[str, str]:
    """relpath -> md5 from a `.dir` object in the repo's cache."""
    entries = json.loads(cache_object(repo, md5).read_text())
    return {e["relpath"]: e["md5"] for e in entries}
