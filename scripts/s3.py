"""Run the project's local S3 server (SeaweedFS `weed mini`) for development.

    python -m scripts.s3 start          # start (or reuse), create the bucket, point DVC at it
    python -m scripts.s3 status         # exit 0 if running, 3 if not
    python -m scripts.s3 ensure-bucket  # create the bucket on the running server
    python -m scripts.s3 stop           # stop it by its pid and wait

(from the repository root; `make s3`, `make s3-stop`, `make s3-status` do that).

Writes under `.s3/` (git-ignored): `data/`, `identities.json`, `credentials.env` (random keys
made on the first start, reused afterwards; never committed), `weed.log`, `weed.pid`,
`server.json`, `aws-config` (fail-fast retries); and the endpoint, keys and that file into
`.dvc/config.local` (never committed) with `dvc remote modify --local`, so `dvc push` /
`dvc pull` work right after `make s3`.
Environment: MEDCAST_S3_BUCKET (default medcast), MEDCAST_S3_PORT (preferred S3 port,
default 8333; a free port is used if it is taken), MEDCAST_DVC_REMOTE (default storage).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from devtools import s3server

ROOT = Path(__file__).resolve().parent.parent

STATUS_NOT_RUNNING = 3


def _settings() -> tuple[str, int, str]:
    bucket = os.environ.get("MEDCAST_S3_BUCKET", "medcast")
    port = int(os.environ.get("MEDCAST_S3_PORT", "8333"))
    remote = os.environ.get("MEDCAST_DVC_REMOTE", "storage")
    return bucket, port, remote


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                values[key.strip()] = value.strip()
    return values


def _credentials(state: Path) -> s3server.Credentials:
    env = _read_env_file(state / "credentials.env")
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return s3server.Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    return s3server.Credentials.generate()


def _write_credentials(state: Path, server: s3server.S3Server, bucket: str) -> Path:
    path = state / "credentials.env"
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    lines = [
        "# Local SeaweedFS only (scripts/s3.py). `set -a; . .s3/credentials.env; set +a`",
        *(f"{key}={value}" for key, value in server.env().items()),
        f"MEDCAST_S3_BUCKET={bucket}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _running(state: Path) -> s3server.S3Server | None:
    server = s3server.load(state)
    if server is not None and s3server.is_running(server.pid):
        return server
    return None


def _dvc(root: Path, *args: str) -> tuple[int, str]:
    """Run a `dvc` command in-process (one import instead of one interpreter per command)."""
    import contextlib
    import io

    from dvc.cli import main as dvc_main

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    out = io.StringIO()
    cwd = Path.cwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = dvc_main(list(args))
    finally:
        os.chdir(cwd)
    return code, out.getvalue()


def configure_dvc(root: Path, server: s3server.S3Server, remote: str, bucket: str) -> str:
    """Point the DVC remote at the server in `.dvc/config.local`; a message on what was done."""
    if not (root / ".dvc").is_dir():
        return "no .dvc/ here: DVC not configured (run `dvc init` first)"
    code, url = _dvc(root, "config", "--project", f"remote.{remote}.url")
    if code != 0:
        return (
            f"DVC remote {remote!r} is not defined in .dvc/config; add it with "
            f"`dvc remote add -d {remote} s3://{bucket}/dvcstore` and run this again"
        )
    aws_config = s3server.write_aws_config(server.root / "aws-config")
    settings = s3server.dvc_remote_settings(server, aws_config)
    if urlsplit(url.strip()).netloc != bucket:
        settings["url"] = f"s3://{bucket}/dvcstore"
    # The secret key goes into config.local: owner-only, like .s3/credentials.env (also a file
    # an earlier `dvc remote modify --local` left readable; umask covers a rewrite by DVC).
    local = root / ".dvc" / "config.local"
    local.touch(mode=0o600, exist_ok=True)
    local.chmod(0o600)
    umask = os.umask(0o077)
    try:
        for key, value in settings.items():
            code, output = _dvc(root, "remote", "modify", "--local", remote, key, "--", value)
            if code != 0:
                raise SystemExit(f"dvc remote modify --local {remote} {key} failed: {output}")
    finally:
        os.umask(umask)
    local.chmod(0o600)
    return f"DVC remote {remote!r} -> {server.endpoint} (keys in .dvc/config.local, mode 600)"


def cmd_start(root: Path) -> int:
    bucket, port, remote = _settings()
    state = root / ".s3"
    state.mkdir(exist_ok=True)
    (state / ".gitignore").write_text("*\n")
    server = _running(state)
    if server is None:
        server = s3server.start(state, _credentials(state), s3_port=port)
        print(f"SeaweedFS started: pid {server.pid}, S3 {server.endpoint}, data {state}/data")
    else:
        print(f"SeaweedFS already running: pid {server.pid}, S3 {server.endpoint}")
    s3server.ensure_bucket(server, bucket)
    creds = _write_credentials(state, server, bucket)
    print(f"bucket {bucket!r} ready; credentials in {creds.relative_to(root)}")
    print(configure_dvc(root, server, remote, bucket))
    return 0


def cmd_stop(root: Path) -> int:
    server = s3server.load(root / ".s3")
    if server is None or not s3server.stop(server):
        print("SeaweedFS is not running")
        return 0
    print(f"SeaweedFS stopped (pid {server.pid})")
    return 0


def cmd_status(root: Path) -> int:
    server = _running(root / ".s3")
    if server is None:
        print("SeaweedFS is not running (start it with `make s3`)")
        return STATUS_NOT_RUNNING
    print(f"SeaweedFS running: pid {server.pid}, S3 {server.endpoint}, log {server.log_path}")
    return 0


def cmd_ensure_bucket(root: Path) -> int:
    bucket, _, _ = _settings()
    server = _running(root / ".s3")
    if server is None:
        print("SeaweedFS is not running (start it with `make s3`)", file=sys.stderr)
        return STATUS_NOT_RUNNING
    s3server.ensure_bucket(server, bucket)
    print(f"bucket {bucket!r} ready on {server.endpoint}")
    return 0


COMMANDS = {
    "start": cmd_start,
    "stop": cmd_stop,
    "status": cmd_status,
    "ensure-bucket": cmd_ensure_bucket,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--root", type=Path, default=ROOT, help="project root (default: repo)")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args.root.resolve())
    except s3server.S3ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
