"""Benchmark of the default protocol (80/20 split, seed 42, 5-fold CV) on both datasets, in a
fresh clone of HEAD: prints quality figures, pipeline wall times and the targets they meet.

    python -m bench.quality [--insurance PATH] [--mlp] [--keep DIR]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, **env: str) -> float:
    """Run a command, fail loudly with its output, return wall seconds."""
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env}
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def study(repo: Path, label: str, overrides: list[str]) -> dict:
    sh([sys.executable, "-m", "medcast.config", *overrides], repo)
    seconds = sh(["dvc", "repro"], repo)
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    return {"label": label, "seconds": seconds, "metrics": metrics, "board": board}


def find_insurance(arg: str | None) -> Path | None:
    for candidate in (arg, ROOT / "data/raw/insurance/insurance.csv",
                      ROOT.parent / "shared/data/insurance.csv"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--insurance", help="path of the real insurance.csv")
    ap.add_argument("--mlp", action="store_true", help="also tune the MLP on diabetes")
    ap.add_argument("--keep", help="run in this directory and keep it")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medcast-quality-"))
    repo = work / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    os.environ.update(env)

    results = [study(repo, "diabetes (default)", [])]
    noop = [sh(["dvc", "repro"], repo) for _ in range(3)]
    insurance = find_insurance(args.insurance)
    if insurance:
        (repo / "data/raw/insurance").mkdir(parents=True, exist_ok=True)
        shutil.copy(insurance, repo / "data/raw/insurance/insurance.csv")
        results.append(study(repo, "insurance", ["dataset=insurance"]))
    if args.mlp:
        # 15 trials: each MLP trial is 5 Keras fits (~40 s); 40 would take half an hour.
        results.append(study(repo, "diabetes, MLP tuned", ["train.select=mlp", "tune.n_trials=15"]))

    print(f"\n{'study':24} {'model':18} {'CV R²':>12} {'test R²':>8} {'test RMSE':>10} {'repro s':>8}")
    for r in results:
        m = r["metrics"]
        print(f"{r['label']:24} {m['model']:18} {m['cv.r2']:6.3f}±{m['cv.r2_std']:.3f}"
              f" {m['test.r2']:8.3f} {m['test.rmse']:10.4g} {r['seconds']:8.1f}")
    print(f"\nno-op `dvc repro`: median {statistics.median(noop):.2f} s over {len(noop)} runs")

    diabetes = results[0]
    board = {row["model"]: row for row in diabetes["board"]}
    best = max(row["cv_r2"] for row in board.values())
    checks = [
        ("diabetes test R² ≥ 0.48", diabetes["metrics"]["test.r2"] >= 0.48),
        ("diabetes CV R² ≥ 0.49", diabetes["metrics"]["cv.r2"] >= 0.49),
        ("diabetes full repro ≤ 600 s", diabetes["seconds"] <= 600),
        ("no-op repro ≤ 2 s (median)", statistics.median(noop) <= 2.0),
    ]
    if "mlp" in board:
        gap = best - board["mlp"]["cv_r2"]
        print(f"MLP (defaults) CV R² {board['mlp']['cv_r2']:.3f}; best candidate {best:.3f};"
              f" gap {gap:.3f}")
        checks.append(("MLP within 0.03 CV R² of the best (defaults)", gap <= 0.03))
    tuned_mlp = next((r for r in results if "MLP" in r["label"]), None)
    if tuned_mlp:
        best_tuned = diabetes["metrics"]["cv.r2"]
        gap = best_tuned - tuned_mlp["metrics"]["cv.r2"]
        print(f"MLP tuned CV R² {tuned_mlp['metrics']['cv.r2']:.3f} vs selected tuned "
              f"{best_tuned:.3f}: gap {gap:.3f}")
        checks.append(("MLP (tuned) within 0.03 CV R² of the selected model (tuned)", gap <= 0.03))
        test_gap = diabetes["metrics"]["test.r2"] - tuned_mlp["metrics"]["test.r2"]
        print(f"MLP tuned test R² {tuned_mlp['metrics']['test.r2']:.3f} vs selected tuned "
              f"{diabetes['metrics']['test.r2']:.3f}: gap {test_gap:.3f}")
        checks.append(("MLP (tuned) within 0.03 test R² of the selected model (tuned)",
                       test_gap <= 0.03))
    if insurance:
        ins = results[1]["metrics"]
        checks += [("insurance test R² ≥ 0.88", ins["test.r2"] >= 0.88),
                   ("insurance CV R² ≥ 0.86", ins["cv.r2"] >= 0.86)]
    else:
        print("insurance: skipped (no insurance.csv found; pass --insurance PATH)")
    print()
    for name, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
