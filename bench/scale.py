"""How the study's cost grows with rows: the stages on generated tables with the built-in
schemas at 1×, 10× and 100× the real row counts (1,000× with --huge).

    python -m bench.scale [--datasets insurance,diabetes] [--scales 1,10] [--huge]
                          [--stages preprocess,train,tune,evaluate,export,plot]
                          [--compare n_jobs|policy|halving] [--source insurance=PATH]
                          [--timeout SECONDS] [-S key=value ...]

Tables: insurance-like rows from devtools.factories.insurance_frame (1× = 1,338 rows) and
diabetes-like rows resampled with jitter from scikit-learn's bundled table (1× = 442 rows; the
near-copies make CV R² optimistic above 1×). `--source insurance=data/raw/insurance/insurance.csv`
resamples a real table with jitter instead (devtools.factories.resampled_frame; 1× = its rows).
Each stage runs as `python -m medcast.<stage>` in a scratch copy of conf/ with params composed
as `dvc exp run -S` would. Printed per stage: wall seconds, the peak RSS of its process tree
(summed over the stage and its worker processes, sampled every 0.2 s with psutil) and of its
largest single process (ru_maxrss); per run: the total wall seconds and the largest tree RSS
of any stage; per candidate: busy seconds (its folds and final fit, summed), its CV R², what
ran (fidelity) and its serving cost (ONNX MB, single-row ms; why it is over
train.serving_budget); the selected model with CV R², the tuned CV R² and the test R²; and the
growth exponent of each stage between consecutive scales, log(t2/t1) / log(n2/n1) (1: linear,
2: quadratic). After export: the served model, i.e. models/model.onnx's size and single-row
`POST /predict` latency at 1 connection (p50, p99: the median of 3 rounds of 3 s) from
`python -m serve` with one worker and a SQLite log on the run's own workspace (its dvc.lock
written from the files' md5s, as `dvc repro` would record them).

--compare runs every table twice, "before" then "after": n_jobs (cv.n_jobs=1 against all
cores), policy (every cv.large rule off against the defaults) or halving
(cv.large.halving_above=null, every candidate cross-validated on all rows, against
halving_above = a fifth of the training rows, about the defaults' share at 100×: 20,000 of
107,040). -S passes overrides to both, e.g. -S tune.n_trials=10 to shorten tuning. --timeout
stops a run's stage once the run has taken that many seconds; the stage is reported as
"> N s" and the later stages are not run.
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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from devtools.factories import diabetes_frame, insurance_frame, resampled_frame
from medcast.config import compose

ROOT = Path(__file__).resolve().parents[1]
BASE_ROWS = {"insurance": 1338, "diabetes": 442}
TEST_SIZE = 0.2  # preprocess.test_size, for the training rows --compare halving screens
RULES_OFF = ["cv.large.max_rows.svr=null", "cv.large.max_rows.random_forest=null",
             "cv.large.hist_boosting_above=null", "cv.large.mlp_max_steps=null",
             "cv.large.halving_above=null"]
# before, after: params overrides, or a function of the table's rows giving them.
COMPARE: dict[str, tuple[Any, Any]] = {
    "n_jobs": (["cv.n_jobs=1"], []),
    "policy": (RULES_OFF, []),
    "halving": (["cv.large.halving_above=null"],
                lambda rows: [f"cv.large.halving_above={int(rows * (1 - TEST_SIZE)) // 5}"]),
}
CANDIDATE_LINE = re.compile(r"\[\d+/\d+\] (\S+)\s+(?:CV RMSE .*?\((\d+\.\d)s\)"
                            r"(?:, ONNX (\S+) MB, (\S+) ms/row)?|(skipped))")


def table(dataset: str, rows: int, source: Path | None) -> pd.DataFrame:
    """`rows` generated rows with the dataset's columns (resampled from `source` if given)."""
    if source is not None:
        return resampled_frame(pd.read_csv(source), rows, seed=0)
    return insurance_frame(rows, seed=0) if dataset == "insurance" else diabetes_frame(rows, 0)


def workspace(root: Path, dataset: str, rows: int, overrides: list[str],
              source: Path | None = None) -> None:
    """conf/ and dvc.yaml copied, a generated table of `rows` rows as dataset `bench`."""
    shutil.copytree(ROOT / "conf", root / "conf")
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    spec = yaml.safe_load((ROOT / f"conf/dataset/{dataset}.yaml").read_text())
    spec.update(name="bench", source={"format": "csv", "path": "data/raw/bench/bench.csv"},
                description=f"{rows} generated {dataset}-like rows (bench.scale)")
    (root / "conf/dataset/bench.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    frame = table(dataset, rows, source)
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


def run_stage(root: Path, stage: str, timeout: float | None = None) -> dict:
    """Wall seconds, peak tree RSS (sampled) and largest process RSS of one stage; stopped
    (its process group killed) after `timeout` seconds, then `timed_out` is set."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = open(root / f"{stage}.log", "w")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", f"medcast.{stage}"], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak = [0]
    stop = threading.Event()
    timed_out = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            if timeout is not None and time.perf_counter() - start > timeout:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the stage and its workers
                return
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    log.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"seconds": seconds, "tree_rss_mb": peak[0] / 2**20,
              "max_rss_mb": usage.ru_maxrss / 1024, "timed_out": timed_out.is_set()}
    if timed_out.is_set():
        return result
    if proc.returncode != 0:
        tail = (root / f"{stage}.log").read_text().splitlines()[-15:]
        raise SystemExit(f"bench.scale: {stage} failed ({proc.returncode}):\n" + "\n".join(tail))
    return result


def candidates(root: Path) -> list[tuple[str, str, str, float | None, str]]:
    """(model, busy seconds from the train log, fidelity, CV R², serving cost) in the
    leaderboard's order; the serving cost (train.serving_budget) is "ONNX MB, ms/row" from the
    log, and the leaderboard's reason when the candidate is over the budget."""
    busy, cost = {}, {}
    for line in (root / "train.log").read_text().splitlines():
        m = CANDIDATE_LINE.search(line)
        if m:
            busy[m[1]] = "-" if m[5] else m[2]
            cost[m[1]] = f"{m[3]} MB, {m[4]} ms" if m[3] else ""
    board = json.loads((root / "reports/leaderboard.json").read_text())
    return [(r["model"], busy.get(r["model"], "-"), r["fidelity"], r.get("cv_r2"),
             cost.get(r["model"], "") + (f" OVER: {r['serving']}" if r.get("serving") not in
                                         (None, "", "within budget") else ""))
            for r in board]


def one(dataset: str, rows: int, stages: list[str], overrides: list[str],
        source: Path | None = None, timeout: float | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="medcast-bench-scale-") as tmp:
        root = Path(tmp)
        workspace(root, dataset, rows, overrides, source)
        result: dict = {"rows": rows, "stages": {}, "overrides": overrides}
        start = time.perf_counter()
        for stage in stages:
            left = None if timeout is None else timeout - (time.perf_counter() - start)
            result["stages"][stage] = run_stage(root, stage, left)
            if result["stages"][stage]["timed_out"]:
                result["timed_out"] = stage
                break
        ran = [s for s in stages if s in result["stages"]
               and not result["stages"][s]["timed_out"]]
        result["total_s"] = sum(s["seconds"] for s in result["stages"].values())
        result["peak_mb"] = max(s["tree_rss_mb"] for s in result["stages"].values())
        if "train" in ran:
            result["candidates"] = candidates(root)
            sel = json.loads((root / "models/selection.json").read_text())
            result["selected"] = (sel["model"], sel["cv"]["r2"])
        if "tune" in ran:
            result["tuned_cv_r2"] = json.loads((root / "reports/tuning.json").read_text())["cv"]["r2"]
        if "evaluate" in ran:
            result["test_r2"] = json.loads((root / "reports/metrics.json").read_text())["test.r2"]
        if "export" in ran:
            result["served"] = served(root)
        return result


def served(root: Path, rounds: int = 3, seconds: float = 3.0) -> dict:
    """The exported model as `make serve` serves it from this workspace: ONNX MB and the
    medians over `rounds` of single-row /predict p50 and p99 at 1 connection (bench.serve)."""
    import hashlib
    import statistics

    from bench.serve import bodies_from_card, run_load
    from devtools.service import service_env, start

    outs = [{"path": f"models/{name}",
             "md5": hashlib.md5((root / "models" / name).read_bytes()).hexdigest()}
            for name in ("model.onnx", "model.json")]
    (root / "dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"export": {"outs": outs}}}))
    card = json.loads((root / "models/model.json").read_text())
    env = service_env(base=None, MEDCAST_WORKERS="1", MEDCAST_RATE_LIMIT="off",
                      MEDCAST_DATABASE_URL=f"sqlite:///{root / 'serve.db'}")
    service = start(env, cwd=root, log=root / "serve.log", timeout=120)
    try:
        runs = [run_load(service.port, 1, seconds, "raw", "/predict", bodies_from_card(card, 64))
                for _ in range(rounds)]
    finally:
        service.stop()
    bad = {k: v for r in runs for k, v in r["statuses"].items() if k != 200}
    if bad:
        raise SystemExit(f"bench.scale: /predict answered {bad}; see {root / 'serve.log'}")
    return {"model": card["model"], "onnx_mb": (root / "models/model.onnx").stat().st_size / 1e6,
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs)}


def exponent(a: dict, b: dict, stage: str) -> str:
    sa, sb = a["stages"].get(stage), b["stages"].get(stage)
    if not sa or not sb or sa["timed_out"] or sb["timed_out"]:
        return "-"
    return f"{math.log(sb['seconds'] / sa['seconds']) / math.log(b['rows'] / a['rows']):.2f}"


def show(label: str, runs: list[dict], stages: list[str]) -> None:
    print(f"\n== {label}", flush=True)
    for r in runs:
        print(f"-- {r['rows']:,} rows ({' '.join(r['overrides']) or 'defaults'})")
        for stage, s in r["stages"].items():
            seconds = f"> {s['seconds']:6.0f}" if s["timed_out"] else f"{s['seconds']:8.1f}"
            print(f"   {stage:<10} {seconds} s   tree RSS {s['tree_rss_mb']:7.0f} MB   "
                  f"largest process {s['max_rss_mb']:6.0f} MB"
                  + ("   (stopped: --timeout)" if s["timed_out"] else ""))
        print(f"   total      {'> ' if 'timed_out' in r else ''}{r['total_s']:.1f} s, "
              f"peak tree RSS {r['peak_mb']:.0f} MB")
        if "selected" in r:
            print(f"   selected {r['selected'][0]} (CV R² {r['selected'][1]:.4f})"
                  + (f", tuned CV R² {r['tuned_cv_r2']:.4f}" if "tuned_cv_r2" in r else "")
                  + (f", test R² {r['test_r2']:.4f}" if "test_r2" in r else ""))
            print("   " + ", ".join(
                f"{m} {s}s" + (f" R² {r2:.4f}" if r2 is not None else "")
                + ("" if f == "full" else f" [{f}]") + (f" ({c})" if c else "")
                for m, s, f, r2, c in r["candidates"]))
        if "served" in r:
            v = r["served"]
            print(f"   served {v['model']}: ONNX {v['onnx_mb']:.2f} MB, POST /predict at 1 "
                  f"connection p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms")
    for a, b in zip(runs, runs[1:], strict=False):
        print(f"   growth exponent {a['rows']:,} → {b['rows']:,} rows: " + ", ".join(
            f"{stage} {exponent(a, b, stage)}" for stage in stages))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="insurance,diabetes")
    ap.add_argument("--scales", default="1,10,100", help="multiples of the real row counts")
    ap.add_argument("--huge", action="store_true", help="also 1000× (hours on 2 cores)")
    ap.add_argument("--stages", default="preprocess,train,tune,evaluate,export,plot")
    ap.add_argument("--compare", choices=sorted(COMPARE), default=None)
    ap.add_argument("--source", action="append", default=[], metavar="DATASET=PATH",
                    help="resample this real table (CSV) with jitter for DATASET")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per run; the stage running then is stopped")
    ap.add_argument("-S", dest="overrides", action="append", default=[],
                    help="a params override for every run, e.g. tune.n_trials=10")
    args = ap.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")] + ([1000] if args.huge else [])
    stages = args.stages.split(",")
    sources = {k: Path(v) for k, _, v in (s.partition("=") for s in args.source)}
    variants = ({"before": COMPARE[args.compare][0], "after": COMPARE[args.compare][1]}
                if args.compare else {"defaults": []})
    print(f"bench.scale on {os.cpu_count()} cores, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; overrides {args.overrides or '-'}"
          + (f"; compare {args.compare}" if args.compare else "")
          + (f"; sources {args.source}" if args.source else ""))
    for dataset in args.datasets.split(","):
        source = sources.get(dataset)
        base = len(pd.read_csv(source)) if source is not None else BASE_ROWS[dataset]
        for label, extra in variants.items():
            runs = []
            for scale in scales:
                rows = base * scale
                more = extra(rows) if callable(extra) else extra
                runs.append(one(dataset, rows, stages, [*args.overrides, *more], source,
                                args.timeout))
                show(f"{dataset} {label} (so far)", runs[-1:], [])
            show(f"{dataset} {label}", runs, stages)
    print(f"\nload average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"bench process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
