"""Read a DVC-tracked artifact at any git revision, straight from the cache or a DVC remote.

Reads `dvc.lock` / `*.dvc` files from git at the requested revision (no checkout, no pull)
and the artifact's bytes through `dvc.api`. `read_verified()` checks the bytes' md5 against
the one recorded at that revision, which is what a service loading a model by revision needs.
Every common failure (unknown revision, untracked path, remote unreachable, bad md5) is a
medcast.errors.ArtifactError naming what to do.

    python -m medcast.artifacts md5 models/model.onnx --rev v1.0
    python -m medcast.artifacts get models/model.onnx --rev v1.0 -o /tmp/model.onnx
"""

from __future__ import annotations

import argparse
import posixpath
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcast.card import md5_hex
from medcast.errors import ArtifactError

if TYPE_CHECKING:
    from dvc.api import DVCFileSystem


@dataclass(frozen=True)
class LockedOut:
    """Where a path's md5 is recorded: the lock/.dvc file, the out containing it, its hash."""

    source: str  # "dvc.lock" or "data/raw/insurance.csv.dvc"
    out_path: str  # the out as written in the source, relative to the repo root
    md5: str  # ends with ".dir" for a directory out


def _rev_label(rev: str | None) -> str:
    return f"revision {rev!r}" if rev else "the workspace"


def _normalize(path: str) -> str:
    norm = posixpath.normpath(Path(path).as_posix()).lstrip("/")
    if norm.startswith("..") or norm in ("", "."):
        raise ArtifactError(f"{path!r} is not a path inside the repository")
    return norm


def _remote_label(
    repo: str, rev: str | None, remote: str | None, remote_config: dict[str, Any] | None
) -> str:
    """'DVC remote 'storage' (s3://bucket/dvcstore at http://endpoint)': name, URL and endpoint
    of the remote a read tries (never credentials)."""
    try:
        config = _fs(repo, rev, remote, remote_config).repo.config
        name = remote or config["core"].get("remote")
        options = {**config["remote"].get(name, {}), **(remote_config or {})} if name else {}
    except Exception:  # noqa: BLE001 - only a label for a message already being built
        return "the DVC remote"
    if not name:
        return "no DVC remote (none is configured)"
    where = str(options.get("url", "no url"))
    if options.get("endpointurl"):
        where += f" at {options['endpointurl']}"
    return f"DVC remote {name!r} ({where})"


def _recorded(
    path: str, rev: str | None, repo: str, remote: str | None,
    remote_config: dict[str, Any] | None,
) -> LockedOut | None:
    """The lock entry of `path` at `rev`, or None (also when it cannot be read)."""
    try:
        return _find_out(_fs(repo, rev, remote, remote_config), path)
    except Exception:  # noqa: BLE001 - the caller reports the original failure
        return None


def _friendly(
    exc: BaseException, path: str, rev: str | None, repo: str, remote: str | None = None,
    remote_config: dict[str, Any] | None = None,
) -> ArtifactError:
    """Turn the exceptions DVC, scmrepo, s3fs and botocore raise into one clear message."""
    from dvc.config import NoRemoteError
    from dvc.exceptions import DvcException, NotDvcRepoError, PathMissingError
    from dvc.scm import RevError
    from dvc_data.index.index import DataIndexDirError

    where = f"{path!r} at {_rev_label(rev)} of {repo!r}"
    if isinstance(exc, RevError):
        return ArtifactError(f"unknown git revision {rev!r} in {repo!r}")
    if isinstance(exc, NotDvcRepoError):
        return ArtifactError(f"{repo!r} is not a DVC repository")
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    names = {type(e).__module__.split(".")[0] for e in chain}
    kinds = {type(e).__name__ for e in chain}
    text = "; ".join(dict.fromkeys(str(e) for e in chain if str(e)))

    def remote_used() -> str:  # opens the repository again: only for the messages that name it
        return f"the {_remote_label(repo, rev, remote, remote_config)}"

    if "NoCredentialsError" in kinds:
        return ArtifactError(
            f"{where}: no credentials for {remote_used()}: `make s3` writes them into "
            ".dvc/config.local, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, PermissionError) or "Forbidden" in text or "SignatureDoesNotMatch" in text:
        return ArtifactError(f"{where}: the remote refused the credentials ({text})")
    # DVC says "does not exist" (a file out) or "failed to load directory" (a file in a
    # directory out, the listing's object missing) when the revision records the path but no
    # copy of that version is at hand: not an unreachable remote, which fails with its own error.
    missing = isinstance(exc, PathMissingError) or (
        isinstance(exc, DataIndexDirError | FileNotFoundError)
        and not names & {"botocore", "aiobotocore", "aiohttp"})
    if missing and (entry := _recorded(path, rev, repo, remote, remote_config)) is not None:
        return ArtifactError(
            f"{where}: tracked ({entry.source} records {entry.out_path!r} as md5 {entry.md5}), "
            f"but neither the local cache nor {remote_used()} holds that version; run "
            "`dvc push` at that revision on a machine that has it (or `dvc push --all-commits`)"
        )
    if isinstance(exc, PathMissingError):
        return ArtifactError(f"{where}: not tracked by DVC or git")
    if isinstance(exc, NoRemoteError):
        return ArtifactError(
            f"{where}: not in the local cache and no DVC remote is configured (pass remote=)"
        )
    if isinstance(exc, FileNotFoundError):
        return ArtifactError(f"{where}: missing from the DVC remote and the local cache ({text})")
    if names & {"botocore", "aiobotocore", "aiohttp", "s3fs"} or isinstance(exc, OSError):
        return ArtifactError(f"{where}: {remote_used()} is unreachable ({text})")
    if isinstance(exc, DvcException) or "dvc_data" in names:
        return ArtifactError(f"{where}: {text}")
    return ArtifactError(f"{where}: {type(exc).__name__}: {text}")


def _fs(
    repo: str, rev: str | None, remote: str | None, remote_config: dict[str, Any] | None
) -> DVCFileSystem:
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(repo, rev=rev, remote=remote, remote_config=remote_config)
    _ = fs.repo  # opens the repo at `rev` now: an unknown revision fails here, loudly
    return fs


def _read_yaml(fs: DVCFileSystem, path: str) -> dict[str, Any] | None:
    import yaml

    try:
        if not fs.isfile(path):
            return None
        data = yaml.safe_load(fs.read_text(path))
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def _find_out(fs: DVCFileSystem, path: str) -> LockedOut | None:
    """The out that is `path` or contains it, from `dvc.lock` files or `.dvc` files."""
    parts = path.split("/")
    # Nearest first: the path itself, then each parent directory, for .dvc files ...
    for i in range(len(parts), 0, -1):
        candidate = "/".join(parts[:i])
        doc = _read_yaml(fs, candidate + ".dvc")
        if doc:
            base = posixpath.dirname(candidate)
            for out in doc.get("outs") or []:
                out_path = posixpath.normpath(posixpath.join(base, out["path"]))
                if out_path == candidate and out.get("md5"):
                    return LockedOut(candidate + ".dvc", out_path, str(out["md5"]))
    # ... and each folder that may hold a dvc.lock (paths in it are relative to the folder).
    for i in range(len(parts) - 1, -1, -1):
        folder = "/".join(parts[:i])
        lock_path = posixpath.join(folder, "dvc.lock") if folder else "dvc.lock"
        doc = _read_yaml(fs, lock_path)
        if not doc:
            continue
        for stage in (doc.get("stages") or {}).values():
            for out in stage.get("outs") or []:
                out_path = posixpath.normpath(posixpath.join(folder, out["path"]))
                if (path == out_path or path.startswith(out_path + "/")) and out.get("md5"):
                    return LockedOut(lock_path, out_path, str(out["md5"]))
    return None


def locked_out(
    path: str,
    rev: str | None = None,
    repo: str = ".",
    remote: str | None = None,
    remote_config: dict[str, Any] | None = None,
) -> LockedOut:
    """The lock entry (file and out) that records `path` at `rev` (None: the workspace)."""
    path = _normalize(path)
    try:
        found = _find_out(_fs(repo, rev, remote, remote_config), path)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a clear message
        raise _friendly(exc, path, rev, repo, remote, remote_config) from exc
    if found is None:
        raise ArtifactError(
            f"{path!r} is not an output recorded in dvc.lock or a .dvc file at "
            f"{_rev_label(rev)} of {repo!r}"
        )
    return found


def locked_md5(
    path: str,
    rev: str | None = None,
    repo: str = ".",
    remote: str | None = None,
    remote_config: dict[str, Any] | None = None,
) -> str:
    """The md5 recorded for `path` at `rev` in `dvc.lock` (or the `.dvc` file that adds it).

    For a file inside a directory out, the directory's listing (`<md5>.dir`, from the cache or
    the remote) gives the file's md5; the listing itself is checked against the lock first.
    """
    path = _normalize(path)
    entry = locked_out(path, rev, repo, remote, remote_config)
    if entry.out_path == path:
        return entry.md5
    if not entry.md5.endswith(".dir"):
        raise ArtifactError(f"{path!r}: {entry.out_path!r} is a file out, not a directory")
    try:
        fs = _fs(repo, rev, remote, remote_config)
        dir_md5 = fs.info(entry.out_path)["md5"]
        if dir_md5 != entry.md5:
            raise ArtifactError(
                f"{entry.out_path!r}: DVC's index says {dir_md5}, {entry.source} says {entry.md5}"
            )
        info = fs.info(path)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a clear message
        raise _friendly(exc, path, rev, repo, remote, remote_config) from exc
    md5 = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if not md5:
        raise ArtifactError(f"{path!r} at {_rev_label(rev)}: no md5 recorded in {entry.out_path!r}")
    return str(md5)


def read_bytes(
    path: str,
    rev: str | None = None,
    remote: str | None = None,
    repo: str = ".",
    remote_config: dict[str, Any] | None = None,
) -> bytes:
    """The bytes of `path` at `rev`, from the local cache or else the DVC remote (not verified).

    `remote` names a remote of the repo's config (default: the default remote);
    `remote_config` overrides its options, e.g. {"endpointurl": ...}. Credentials come from
    `.dvc/config.local` or the standard AWS_* variables.
    """
    import dvc.api

    path = _normalize(path)
    try:
        data = dvc.api.read(
            path, repo=repo, rev=rev, remote=remote, mode="rb", remote_config=remote_config
        )
    except Exception as exc:  # noqa: BLE001 - mapped to a clear message
        raise _friendly(exc, path, rev, repo, remote, remote_config) from exc
    assert isinstance(data, bytes)
    return data


def read_verified(
    path: str,
    rev: str | None = None,
    remote: str | None = None,
    repo: str = ".",
    remote_config: dict[str, Any] | None = None,
) -> bytes:
    """`read_bytes()`, then raise ArtifactError unless the md5 equals the one locked at `rev`."""
    expected = locked_md5(path, rev, repo, remote, remote_config)
    data = read_bytes(path, rev, remote, repo, remote_config)
    actual = md5_hex(data)
    if actual != expected:
        raise ArtifactError(
            f"{path!r} at {_rev_label(rev)}: md5 of the {len(data)} bytes read is {actual}, "
            f"but the revision records {expected} — the remote or cache object is corrupted"
        )
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medcast.artifacts", description=__doc__)
    parser.add_argument("command", choices=["md5", "get"])
    parser.add_argument("path")
    parser.add_argument("--rev", default=None, help="git revision (default: the workspace)")
    parser.add_argument("--remote", default=None, help="DVC remote name (default: the default)")
    parser.add_argument("--repo", default=".", help="repository path or git URL")
    parser.add_argument("-o", "--out", default=None, help="write the verified bytes here")
    args = parser.parse_args(argv)
    try:
        if args.command == "md5":
            print(locked_md5(args.path, args.rev, args.repo, args.remote))
        else:
            data = read_verified(args.path, args.rev, args.remote, args.repo)
            if args.out:
                Path(args.out).write_bytes(data)
                print(f"{args.out}: {len(data)} bytes, md5 verified")
            else:
                sys.stdout.buffer.write(data)
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
