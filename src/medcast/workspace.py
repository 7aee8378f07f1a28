"""`python -m medcast.workspace rollback` (`make rollback`): the workspace as git HEAD has it
again after a failed `dvc exp run` or `dvc repro`.

A failed run leaves params.yaml as the run composed it (`-S dataset=…`), dvc.lock with the
entries of the stages that did finish, and the outputs of the stage that failed deleted (DVC
removes a stage's outputs before running it) or half-written. Rollback restores params.yaml and
dvc.lock from HEAD (a dvc.lock HEAD does not have is removed), then every DVC-tracked output as
that dvc.lock records it, from the cache, with `dvc checkout --force`: without --force DVC
refuses to replace an output that is not in the cache, which is exactly what a half-written one
is (an output edited by hand is replaced too: a stage's output is what the stage wrote). Other
files you changed are left alone, and named. Then it says what `dvc status` and `git status`
still show, if anything."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from medcast.errors import MedcastError, cli, first_line

RESTORED = ("params.yaml", "dvc.lock")


def _run(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(["git", *args], root)


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "dvc", *args], root)


def restore_files(root: Path) -> list[str]:
    """params.yaml and dvc.lock as HEAD has them; the ones that differed."""
    if _git(root, "rev-parse", "--verify", "-q", "HEAD").returncode != 0:
        raise MedcastError(f"{root}: not a git repository with a commit: nothing to roll back to")
    changed = []
    for name in RESTORED:
        if _git(root, "cat-file", "-e", f"HEAD:{name}").returncode == 0:
            if _git(root, "diff", "--quiet", "HEAD", "--", name).returncode != 0:
                out = _git(root, "checkout", "HEAD", "--", name)
                if out.returncode != 0:
                    raise MedcastError(f"git checkout HEAD -- {name} failed: "
                                       f"{first_line(Exception(out.stderr))}")
                changed.append(name)
        elif (root / name).exists():  # written by the failed run: HEAD has none
            (root / name).unlink()
            changed.append(f"{name} (removed: HEAD has none)")
    return changed


def restore_outputs(root: Path) -> str:
    """`dvc checkout --force`; what it restored, or MedcastError saying what is missing."""
    out = _dvc(root, "checkout", "--force")
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0:
        missing = "missing" in text.lower() or "cache" in text.lower()
        hint = (": the cache lacks them; `make pull` fetches them from the remote, or "
                "`dvc repro` remakes them") if missing else ""
        raise MedcastError(f"dvc checkout --force failed{hint} ({first_line(Exception(text))})")
    changes = [line for line in text.splitlines() if line[:1] in ("A", "M", "D")]
    return f"{len(changes)} DVC-tracked output(s) restored" if changes else \
        "DVC-tracked outputs already as dvc.lock records them"


def remaining(root: Path) -> list[str]:
    """What `dvc status` and `git status` still show: empty when both are clean."""
    lines = []
    status = _dvc(root, "status", "--json")
    try:
        stages = json.loads(status.stdout or "{}") if status.returncode == 0 else None
    except json.JSONDecodeError:
        stages = None
    if stages is None:
        lines.append(f"dvc status failed: {first_line(Exception(status.stderr))}")
    elif stages:
        lines.append(f"dvc status: changed: {', '.join(stages)} (`dvc status` says how; "
                     "`dvc repro` brings them up to date)")
    dirty = _git(root, "status", "--porcelain").stdout.splitlines()
    if dirty:
        lines.append("git status: not rolled back (your changes): " + ", ".join(
            line[3:] for line in dirty))
    return lines


def rollback(root: Path = Path(".")) -> list[str]:
    """Restore params.yaml, dvc.lock and the DVC outputs from HEAD; lines saying what was done
    and what, if anything, still differs."""
    files = restore_files(root)
    lines = [f"restored from HEAD: {', '.join(files)}" if files
             else "params.yaml and dvc.lock: as HEAD has them"]
    lines.append(restore_outputs(root))
    left = remaining(root)
    return lines + (left or ["dvc status: up to date; git status: clean"])


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m medcast.workspace",
                                 description="The workspace against git HEAD.")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("rollback", help="params.yaml, dvc.lock and DVC outputs as git HEAD has them "
                                    "(after a failed `dvc exp run`)")
    ap.parse_args(argv)
    print("\n".join(rollback()))


if __name__ == "__main__":
    main()
