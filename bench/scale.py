"""How the study's cost grows with rows: the stages on generated tables with the built-in
schemas at 1×, 10× and 100× the real row counts (1,000× with --huge).

    python -m bench.scale [--datasets insurance,diabetes] [--scales 1,10] [--huge]
                          [--stages preprocess,train,tune,evaluate] [--compare n_jobs|policy]
                          [-S key=value ...]

Tables: insurance-like rows from devtools.factories.insurance_frame (1× = 1,338 rows) and
diabetes-like rows resampled with jitter from scikit-learn's bundled table (1× = 442 rows; the
near-copies make CV R² optimistic above 1×). Each stage runs as `python -m medcast.<stage>` in
a scratch copy of conf/ with params composed as `dvc exp run -S` would. Printed per stage:
wall seconds, the peak RSS of its process tree (summed over the stage and its worker
processes, sampled every 0.2 s with psutil) and of its largest single process (ru_maxrss);
per candidate: busy seconds (its folds and final fit, summed) and what ran (fidelity); the
selected model with CV R², the tuned CV R² and the test R²; and the growth exponent of each
stage between consecutive scales, log(t2/t1) / log(n2/n1) (1: linear, 2: quadratic).

--compare runs every table twice, "before" then "after": n_jobs (train.n_jobs=1 against all
cores) or policy (train.large off against the defaults). -S passes overrides to both, e.g.
-S tune.n_trials=10 to shorten tuning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from devtools.factories import diabetes_frame, insurance_frame
from medcast.config import compose

ROOT = Path(__file__).resolve().parents[1]
BASE_ROWS = {"insurance": 1338, "diabetes": 442}
COMPARE = {
    "n_jobs": (["train.n_jobs=1"], []),
    "policy": (["train.large.max_rows.svr=null", "train.large.max_rows.random_forest=null",
                "train.large.hist_boosting_above=null", "train.large.mlp_max_steps=null"], []),
}
CANDIDATE_LINE = re.compile(r"\[\d+/\d+\] (\S+)\s+(?:CV RMSE .*?\((\d+\.\d)s\)(?: \[(\w+))?|"
                            r"(skipped))")


def workspace(root: Path, dataset: str, rows: int, overrides: list[str]) -> None:
    """conf/ and dvc.yaml copied, a generated table of `rows` rows as dataset `bench`."""
    shutil.copytree(ROOT / "conf", root / "conf")
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    spec = yaml.safe_load((ROOT / f"conf/dataset/{dataset}.yaml").read_text())
    spec.update(name="bench", source={"format": "csv", "path": "data/raw/bench/bench.csv"},
                description=f"{rows} generated {dataset}-like rows (bench.scale)")
    (root / "conf/dataset/bench.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    frame = insurance_frame(rows, seed=0) if dataset == "insurance" else diabetes_frame(rows, 0)
    (root / "data/raw/bench").mkdir(parents=True)
    frame.to_csv(root / "data/raw/bench/bench.csv", index=False)
    params = compose(["dataset=bench", *overrides], config_dir=root / "conf/params")
    params["tune"]["storage"] = f"sqlite:///{root}/optuna.db"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_stage(root: Path, stage: str) -> dict:
    """Wall seconds, peak tree RSS (sampled) and largest process RSS of one stage."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = open(root / f"{stage}.log", "w")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", f"medcast.{stage}"], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    log.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (root / f"{stage}.log").read_text().splitlines()[-15:]
        raise SystemExit(f"bench.scale: {stage} failed ({proc.returncode}):\n" + "\n".join(tail))
    return {"seconds": seconds, "tree_rss_mb": peak[0] / 2**20,
            "max_rss_mb": usage.ru_maxrss / 1024}


def candidates(root: Path) -> list[tuple[str, str, str]]:
    """(model, busy seconds, fidelity) from the train stage's log."""
    out = []
    for line in (root / "train.log").read_text().splitlines():
        m = CANDIDATE_LINE.search(line)
        if m:
            out.append((m[1], "-" if m[4] else m[2], "skipped" if m[4] else (m[3] or "full")))
    return out


def one(dataset: str, rows: int, stages: list[str], overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="medcast-bench-scale-") as tmp:
        root = Path(tmp)
        workspace(root, dataset, rows, overrides)
        result: dict = {"rows": rows, "stages": {}}
        for stage in stages:
            result["stages"][stage] = run_stage(root, stage)
        if "train" in stages:
            result["candidates"] = candidates(root)
            sel = json.loads((root / "models/selection.json").read_text())
            result["selected"] = (sel["model"], sel["cv"]["r2"])
        if "tune" in stages:
            result["tuned_cv_r2"] = json.loads((root / "reports/tuning.json").read_text())["cv"]["r2"]
        if "evaluate" in stages:
            result["test_r2"] = json.loads((root / "reports/metrics.json").read_text())["test.r2"]
        return result


def exponent(a: dict, b: dict, stage: str) -> float:
    t1, t2 = a["stages"][stage]["seconds"], b["stages"][stage]["seconds"]
    return math.log(t2 / t1) / math.log(b["rows"] / a["rows"])


def show(label: str, runs: list[dict], stages: list[str]) -> None:
    print(f"\n== {label}")
    for r in runs:
        print(f"-- {r['rows']:,} rows")
        for stage, s in r["stages"].items():
            print(f"   {stage:<10} {s['seconds']:8.1f} s   tree RSS {s['tree_rss_mb']:7.0f} MB   "
                  f"largest process {s['max_rss_mb']:6.0f} MB")
        if "selected" in r:
            print(f"   selected {r['selected'][0]} (CV R² {r['selected'][1]:.4f})"
                  + (f", tuned CV R² {r['tuned_cv_r2']:.4f}" if "tuned_cv_r2" in r else "")
                  + (f", test R² {r['test_r2']:.4f}" if "test_r2" in r else ""))
            print("   " + ", ".join(f"{m} {s}s" + ("" if f == "full" else f" [{f}]")
                                    for m, s, f in r["candidates"]))
    for a, b in zip(runs, runs[1:], strict=False):
        print(f"   growth exponent {a['rows']:,} → {b['rows']:,} rows: " + ", ".join(
            f"{stage} {exponent(a, b, stage):.2f}" for stage in stages))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="insurance,diabetes")
    ap.add_argument("--scales", default="1,10,100", help="multiples of the real row counts")
    ap.add_argument("--huge", action="store_true", help="also 1000× (hours on 2 cores)")
    ap.add_argument("--stages", default="preprocess,train,tune,evaluate")
    ap.add_argument("--compare", choices=sorted(COMPARE), default=None)
    ap.add_argument("-S", dest="overrides", action="append", default=[],
                    help="a params override for every run, e.g. tune.n_trials=10")
    args = ap.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")] + ([1000] if args.huge else [])
    stages = args.stages.split(",")
    variants = ({"before": COMPARE[args.compare][0], "after": COMPARE[args.compare][1]}
                if args.compare else {"defaults": []})
    print(f"bench.scale on {os.cpu_count()} cores, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; overrides {args.overrides or '-'}"
          + (f"; compare {args.compare}: before {variants['before']}" if args.compare else ""))
    for dataset in args.datasets.split(","):
        for label, extra in variants.items():
            runs = []
            for scale in scales:
                runs.append(one(dataset, BASE_ROWS[dataset] * scale, stages,
                                [*args.overrides, *extra]))
                show(f"{dataset} {label} (so far)", runs[-1:], [])
            show(f"{dataset} {label}", runs, stages)
    print(f"\nload average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"bench process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
