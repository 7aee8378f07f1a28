"""`python -m medcast.remote push|pull [DVC ARGS …]` (`make push`, `make pull`): `dvc push` or
`dvc pull`, once the checks pass that DVC itself reports only as "Unable to locate credentials"
or as a long wait: a default DVC remote is configured; an S3 remote has credentials (in its
options, .dvc/config.local included, or in the AWS chain: AWS_* variables, AWS_PROFILE, ~/.aws,
SSO, the instance's role); an endpoint on this machine (the local S3 server of `make s3`)
answers. Each failed check is one message naming the command that fixes it (README "Sharing
artifacts through S3"), exit 2; the transfer's own output and exit status are DVC's."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from medcast.errors import MedcastError, cli, first_line

README = 'README, "Sharing artifacts through S3"'
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_remote(root: Path = Path(".")) -> tuple[str, dict[str, Any]]:
    """The default remote's name and options (project, global and local config merged)."""
    from dvc.config import Config

    try:
        config = Config(dvc_dir=str(root / ".dvc"))
    except Exception as err:  # noqa: BLE001 - DVC raises its own types for a bad config file
        raise MedcastError(f"{root / '.dvc'}: DVC's configuration cannot be read: "
                           f"{first_line(err)}") from None
    name = config["core"].get("remote")
    options = config["remote"].get(name) if name else None
    if not name or not options or not options.get("url"):
        raise MedcastError(
            "no default DVC remote: `make s3` starts a local S3 server and points DVC at it, "
            f"or add yours with `dvc remote add -d storage s3://BUCKET/dvcstore` ({README})")
    return name, dict(options)


def aws_credentials_found(options: dict[str, Any]) -> bool:
    """Would botocore find credentials for this remote (its options, or the AWS chain)?"""
    if options.get("access_key_id") and options.get("secret_access_key"):
        return True
    if options.get("allow_anonymous_login") or options.get("credentialpath"):
        return True
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session(profile=options.get("profile"))
        return session.get_credentials() is not None
    except botocore.exceptions.BotoCoreError as err:  # e.g. a profile that does not exist
        raise MedcastError(f"AWS credentials: {first_line(err)} ({README})") from None


def endpoint_answers(endpoint: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def check(command: str, root: Path = Path(".")) -> str:
    """The default remote's name, once it is configured and (S3) has credentials and a local
    endpoint that answers; else MedcastError naming the fix."""
    name, options = default_remote(root)
    url = str(options["url"])
    if urlsplit(url).scheme != "s3":
        return name
    endpoint = options.get("endpointurl") or os.environ.get("AWS_ENDPOINT_URL")
    if not aws_credentials_found(options):
        raise MedcastError(
            f"DVC remote {name!r} ({url}) has no credentials: `dvc {command}` would stop at "
            "\"Unable to locate credentials\". For the local S3 server run `make s3` (it writes "
            f"the endpoint and keys into .dvc/config.local); for AWS S3, `dvc remote modify "
            f"--local {name} access_key_id …` and `… secret_access_key …` (or set "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) ({README})")
    if endpoint and urlsplit(endpoint).hostname in LOOPBACK and not endpoint_answers(endpoint):
        raise MedcastError(
            f"DVC remote {name!r} ({url}): nothing answers at {endpoint}; start the local S3 "
            "server with `make s3` (`make s3-status` says whether it runs)")
    return name


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m medcast.remote", description=__doc__.split(
        "\n\n")[0] if __doc__ else None)
    ap.add_argument("command", choices=("push", "pull"))
    ap.add_argument("args", nargs=argparse.REMAINDER, help="passed to dvc (targets, -j, …)")
    args = ap.parse_args(argv)
    check(args.command)
    done = subprocess.run([sys.executable, "-m", "dvc", args.command, *args.args], check=False)
    raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
