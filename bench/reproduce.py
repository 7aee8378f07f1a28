"""Reproduce a committed study on this machine and say what differs: in a fresh clone of a
revision, pull its outputs (when a DVC remote is reachable), rerun every stage (`dvc repro -f`),
then print (1) the outputs whose md5 differ from the committed dvc.lock and (2) every metric of
`dvc metrics diff` with its absolute and relative difference, flagging those beyond a tolerance.

    python -m bench.reproduce [--rev HEAD] [--rtol 1e-4] [--atol 1e-9] [--insurance PATH] [--keep DIR]

On the machine that made dvc.lock nothing differs (tests/test_pipeline_e2e.py checks it). On
another CPU or BLAS build, float summation order changes the last bits of fitted weights, so
model files (and what is computed from them) may differ byte for byte while every metric agrees
within a small tolerance: that is what this prints. Exit 1 when a metric differs beyond it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def locked_md5s(lock_text: str) -> dict[str, str]:
    """{path: md5} of every stage output in a dvc.lock."""
    doc = yaml.safe_load(lock_text) or {}
    return {out["path"]: out.get("md5", "") for stage in (doc.get("stages") or {}).values()
            for out in stage.get("outs") or []}


def differing_outputs(before: str, after: str) -> list[str]:
    old, new = locked_md5s(before), locked_md5s(after)
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


def metric_rows(diff: dict, rtol: float, atol: float) -> list[dict]:
    """Rows of `dvc metrics diff --json` output: old, new, differences, within tolerance?"""
    rows = []
    for file, metrics in diff.items():
        for name, change in metrics.items():
            old, new = change.get("old"), change.get("new")
            row = {"metric": f"{file}:{name}", "old": old, "new": new, "ok": old == new}
            if isinstance(old, int | float) and isinstance(new, int | float):
                delta = abs(new - old)
                rel = delta / abs(old) if old else float("inf") if delta else 0.0
                row.update(abs=delta, rel=rel, ok=delta <= atol + rtol * abs(old))
            rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the committed study to reproduce")
    ap.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance per metric")
    ap.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance per metric")
    ap.add_argument("--insurance", type=Path, help="the insurance table, if the study needs it")
    ap.add_argument("--keep", type=Path, help="reproduce in this folder and keep it")
    args = ap.parse_args()

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="medcast-reproduce-"))
    repo = tmp / "repo"
    sh(["git", "clone", "-q", str(ROOT), str(repo)], tmp)
    sh(["git", "checkout", "-q", args.rev], repo)
    local = ROOT / ".dvc" / "config.local"
    if local.exists():  # the remote's endpoint and keys, if this checkout has them
        shutil.copy2(local, repo / ".dvc" / "config.local")
    if args.insurance:
        (repo / "data/raw/insurance").mkdir(parents=True, exist_ok=True)
        shutil.copy(args.insurance, repo / "data/raw/insurance/insurance.csv")
    pulled = sh(["dvc", "pull", "-q"], repo, check=False).returncode == 0
    committed = (repo / "dvc.lock").read_text()
    sh(["dvc", "repro", "-f"], repo)
    changed = differing_outputs(committed, (repo / "dvc.lock").read_text())
    print(f"reproduced {args.rev} in {repo}")
    print(f"outputs whose md5 differs from the committed dvc.lock: {len(changed)}")
    for path in changed:
        print(f"  {path}")
    if not pulled:
        print("no DVC remote reachable: the committed metrics could not be fetched; "
              "compare by md5 only (above)")
        return 0
    diff = json.loads(sh(["dvc", "metrics", "diff", args.rev, "--json", "--all"], repo).stdout
                      or "{}")
    rows = metric_rows(diff, args.rtol, args.atol)
    print(f"metrics: {len(rows)}; tolerance |new - old| <= {args.atol:g} + {args.rtol:g} × |old|")
    for r in rows:
        mark = "ok " if r["ok"] else "BAD"
        extra = f"  abs {r['abs']:.3g}  rel {r['rel']:.3g}" if "abs" in r else ""
        print(f"  {mark} {r['metric']:40} {r['old']!s:>14} → {r['new']!s:<14}{extra}")
    bad = [r for r in rows if not r["ok"]]
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
