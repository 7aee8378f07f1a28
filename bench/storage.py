"""Benchmark of the S3 round trip: push a repo's cached DVC outputs to a freshly started local
SeaweedFS, pull them into a fresh copy, print push MB/s, pull MB/s and fresh-clone restore
seconds (median of --runs). Nothing in the benchmarked repo is modified.

    python -m bench.storage [--repo DIR] [--runs 3]       # default repo: this project
    python -m bench.storage --dummy-mb 64                 # a throwaway repo with 64 MB of outputs

MB = 10^6 bytes. Each run uses a new bucket; "push" and "pull" are the wall time of `dvc push` /
`dvc pull` (DVC's start-up included, printed separately); "restore" is the time from nothing to
a workspace `dvc status` calls clean: copy the git-tracked files (as a clone would), `dvc pull`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devtools import s3server

ROOT = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent
EXIT_NO_OUTPUTS = 2


@dataclass
class Outputs:
    objects: dict[str, int]  # md5 -> size of every cached file object (dir contents included)
    missing: list[str]  # outs (or files of dir outs) with no cache object
    n_outs: int

    @property
    def nbytes(self) -> int:
        return sum(self.objects.values())


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(home / "dvc-site-cache"),
        AWS_EC2_METADATA_DISABLED="true",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@medcast.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@medcast.invalid",
    )
    return env


def sh(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> float:
    """Run a command, fail loudly with its output, return wall seconds."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{out.stdout[-3000:]}\n{out.stderr}")
    return time.perf_counter() - start


def cache_dir(repo: Path) -> Path:
    out = subprocess.run(
        [str(BIN / "dvc"), "cache", "dir"], cwd=repo, capture_output=True, text=True
    )
    return Path(out.stdout.strip()) if out.returncode == 0 else repo / ".dvc" / "cache"


def declared_outs(repo: Path) -> list[tuple[str, str]]:
    """(path, md5) of every out in dvc.lock files and .dvc files of the workspace."""
    import yaml

    outs: list[tuple[str, str]] = []
    for lock in repo.rglob("dvc.lock"):
        if ".dvc" in lock.relative_to(repo).parts or ".git" in lock.relative_to(repo).parts:
            continue
        doc = yaml.safe_load(lock.read_text()) or {}
        for stage in (doc.get("stages") or {}).values():
            outs += [(o["path"], o["md5"]) for o in stage.get("outs") or [] if o.get("md5")]
    for dvcfile in repo.rglob("*.dvc"):
        rel = dvcfile.relative_to(repo)
        if not dvcfile.is_file() or rel.parts[0] in (".dvc", ".git", ".venv"):
            continue
        doc = yaml.safe_load(dvcfile.read_text()) or {}
        outs += [(o["path"], o["md5"]) for o in doc.get("outs") or [] if o.get("md5")]
    return outs


def cached_outputs(repo: Path) -> Outputs:
    cache = cache_dir(repo) / "files" / "md5"
    objects: dict[str, int] = {}
    missing: list[str] = []
    outs = declared_outs(repo)

    def add(label: str, md5: str) -> Path | None:
        obj = cache / md5[:2] / md5[2:]
        if not obj.is_file():
            missing.append(label)
            return None
        objects[md5] = obj.stat().st_size
        return obj

    for path, md5 in outs:
        obj = add(path, md5)
        if obj is not None and md5.endswith(".dir"):
            for entry in json.loads(obj.read_text()):
                add(f"{path}/{entry['relpath']}", entry["md5"])
    return Outputs(objects=objects, missing=missing, n_outs=len(outs))


def fresh_copy(repo: Path, dest: Path) -> None:
    """What a clone of the working tree holds: tracked and new non-ignored files, no cache."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    for rel in filter(None, out.stdout.split("\0")):
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".dvc" / "config.local").unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def remote_options(repo: Path) -> dict[str, str]:
    """The repo's `storage` remote options (verify, timeouts), else this project's."""
    from configobj import ConfigObj

    for config in (repo / ".dvc" / "config", ROOT / ".dvc" / "config"):
        section = ConfigObj(str(config)).get('remote "storage"') if config.is_file() else None
        if section:
            return {k: v for k, v in section.items() if k != "url"}
    return {"verify": "true"}


def point_at(
    copy: Path, server: s3server.S3Server, bucket: str, options: dict, cache: Path | None = None
) -> None:
    """config.local of a copy: remote `bench` (default) on the server; optionally a cache."""
    aws_config = s3server.write_aws_config(copy / ".dvc" / "aws-config")
    settings = {
        **options,
        "url": f"s3://{bucket}/dvcstore",
        **s3server.dvc_remote_settings(server, aws_config),
    }
    lines = ["[core]", "    remote = bench"]
    if cache is not None:
        lines += ["[cache]", f"    dir = {cache}"]
    lines += ["['remote \"bench\"']"] + [f"    {k} = {v}" for k, v in settings.items()]
    (copy / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


def make_dummy_repo(dest: Path, megabytes: float, env: dict[str, str]) -> Path:
    """A git+DVC repo with `megabytes` of random outputs: one big file and a folder of 100."""
    dest.mkdir(parents=True)
    sh(["git", "init", "-q"], dest, env)
    sh(["dvc", "init", "-q"], dest, env)
    total = int(megabytes * 1_000_000)
    data = dest / "data"
    (data / "many").mkdir(parents=True)
    with open(data / "big.bin", "wb") as f:
        remaining = total // 2
        while remaining > 0:
            chunk = min(remaining, 8 << 20)
            f.write(os.urandom(chunk))
            remaining -= chunk
    small = (total - total // 2) // 100
    for i in range(100):
        (data / "many" / f"part{i:03d}.bin").write_bytes(os.urandom(small))
    sh(["dvc", "add", "-q", "data/big.bin", "data/many"], dest, env)
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "commit", "-q", "-m", "dummy artifacts"], dest, env)
    return dest


def run_once(
    repo: Path, server: s3server.S3Server, work: Path, i: int, options: dict, env: dict
) -> tuple[float, float, float]:
    bucket = f"bench-{i}-{uuid.uuid4().hex[:8]}"
    s3server.ensure_bucket(server, bucket)
    pusher = work / f"push-{i}"
    pusher.mkdir()
    fresh_copy(repo, pusher)
    point_at(pusher, server, bucket, options, cache=cache_dir(repo))  # reads the repo's cache
    push_s = sh(["dvc", "push"], pusher, env)

    start = time.perf_counter()
    clone = work / f"clone-{i}"
    clone.mkdir()
    fresh_copy(repo, clone)
    point_at(clone, server, bucket, options)
    pull_s = sh(["dvc", "pull", "--allow-missing"], clone, env)
    restore_s = time.perf_counter() - start
    status = subprocess.run(
        ["dvc", "status", "--json"], cwd=clone, env=env, capture_output=True, text=True
    )
    # Only the data matters here; a stage whose code changed since `dvc repro` is not our issue.
    data_issues = [
        f"{stage}: {change}"
        for stage, changes in (json.loads(status.stdout or "{}") or {}).items()
        for change in changes
        if not (isinstance(change, dict) and set(change) <= {"changed deps", "changed command"})
    ]
    if status.returncode or data_issues:
        print(f"  warning: run {i}: restored outputs differ from the lock: {data_issues}")
    return push_s, pull_s, restore_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, default=ROOT, help="DVC repo (default: this one)")
    parser.add_argument("--dummy-mb", type=float, default=None, help="benchmark N MB of dummies")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="medcast-bench-storage-"))
    env = env_for(work / "home")
    server = None
    try:
        if args.dummy_mb:
            repo = make_dummy_repo(work / "dummy", args.dummy_mb, env)
        else:
            repo = args.repo.resolve()
            if not (repo / ".dvc").is_dir():
                print(f"error: {repo} is not a DVC repository", file=sys.stderr)
                return EXIT_NO_OUTPUTS
        outputs = cached_outputs(repo)
        if not outputs.objects:
            print(
                f"error: {repo} has no cached DVC outputs to benchmark "
                f"({outputs.n_outs} outs declared, none in the cache). Run `make repro` first, "
                "or use --dummy-mb N for generated artifacts.",
                file=sys.stderr,
            )
            return EXIT_NO_OUTPUTS
        if outputs.missing:
            print(f"note: {len(outputs.missing)} outputs not in the cache are skipped")
        mb = outputs.nbytes / 1e6
        print(
            f"repo {repo}: {outputs.n_outs} outs, {len(outputs.objects)} cache objects, {mb:.2f} MB"
        )

        server = s3server.start(work / "s3")
        startup = statistics.median(sh(["dvc", "remote", "list"], repo, env) for _ in range(3))
        print(f"SeaweedFS at {server.endpoint}; DVC start-up (`dvc remote list`) {startup:.2f} s")
        options = remote_options(repo)
        pushes, pulls, restores = [], [], []
        for i in range(1, args.runs + 1):
            push_s, pull_s, restore_s = run_once(repo, server, work, i, options, env)
            pushes.append(push_s)
            pulls.append(pull_s)
            restores.append(restore_s)
            print(
                f"  run {i}: push {push_s:.2f} s ({mb / push_s:.3g} MB/s), "
                f"pull {pull_s:.2f} s ({mb / pull_s:.3g} MB/s), restore {restore_s:.2f} s"
            )
        push_s, pull_s = statistics.median(pushes), statistics.median(pulls)
        print(
            f"median of {args.runs}: push {mb / push_s:.3g} MB/s, pull {mb / pull_s:.3g} MB/s, "
            f"fresh-clone restore {statistics.median(restores):.2f} s "
            f"({mb:.2f} MB, verify={options.get('verify', 'false')})"
        )
        return 0
    finally:
        if server is not None:
            s3server.stop(server)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
