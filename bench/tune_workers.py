"""Benchmark of distributed tuning: trials/s of one Optuna study on PostgreSQL run by the tune
stage alone (1 process) and by the stage plus 1 or 2 `python -m medcast.tune --worker` processes.

    python -m bench.tune_workers [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                 [--trials 24] [--runs 3] [--model random_forest]

Diabetes (bundled), the default protocol (5-fold CV), the model's default search space. Each run
uses a new PostgreSQL schema (dropped afterwards). trials/s = finished trials / (last trial
completed − first trial started), read from the study itself, so process start-up is left out.
On this machine (2 cores) a third process only competes for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

from medcast.config import compose, load_params
from medcast.optuna_storage import open_storage
from medcast.study import TICKET

ROOT = Path(__file__).resolve().parents[1]


def workspace(root: Path, storage: str, trials: int, model: str) -> None:
    import shutil

    shutil.copytree(ROOT / "conf", root / "conf")
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    raw = compose([f"tune.n_trials={trials}"], config_dir=ROOT / "conf/params")
    raw["tune"]["storage"] = storage
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run([sys.executable, "-m", "medcast.preprocess"], cwd=root, check=True,
                   capture_output=True, timeout=120)
    (root / "models").mkdir(exist_ok=True)
    (root / "models/selection.json").write_text(json.dumps({"model": model}))


def one_run(pg: str, processes: int, trials: int, model: str) -> dict:
    import sqlalchemy as sa

    schema = f"medcast_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="medcast-bench-tune-") as tmp:
            root = Path(tmp)
            sep = "&" if "?" in pg else "?"
            workspace(root, f"{pg}{sep}options=-csearch_path%3D{schema}", trials, model)
            env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
            procs = [subprocess.Popen([sys.executable, "-m", "medcast.tune"], cwd=root, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
            procs += [subprocess.Popen([sys.executable, "-m", "medcast.tune", "--worker"], cwd=root,
                                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True) for _ in range(processes - 1)]
            for p in procs:
                _, err = p.communicate(timeout=3600)
                if p.returncode:
                    sys.exit(f"tune process failed ({p.returncode}):\n{err[-3000:]}")
            import optuna

            params = load_params(root / "params.yaml")

            (summary,) = optuna.get_all_study_summaries(open_storage(params.tune))
            study = optuna.load_study(study_name=summary.study_name, storage=open_storage(params.tune))
            done = [t for t in study.trials if t.user_attrs.get(TICKET) is not None
                    and t.state.name in ("COMPLETE", "PRUNED")]
            span = (max(t.datetime_complete for t in done)
                    - min(t.datetime_start for t in done)).total_seconds()
            by = {}
            for t in done:
                by[t.user_attrs["worker"]] = by.get(t.user_attrs["worker"], 0) + 1
            return {"finished": len(done), "seconds": span, "trials_per_s": len(done) / span,
                    "per_process": sorted(by.values(), reverse=True),
                    "best_rmse": study.best_value}
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default="random_forest")
    ap.add_argument("--processes", default="1,2,3", help="process counts to compare")
    args = ap.parse_args()

    results: dict[int, list[dict]] = {}
    for run in range(args.runs):
        for n in (int(x) for x in args.processes.split(",")):
            r = one_run(args.pg, n, args.trials, args.model)
            results.setdefault(n, []).append(r)
            print(f"run {run + 1}, {n} process(es): {r['finished']} trials in {r['seconds']:.1f} s "
                  f"= {r['trials_per_s']:.3f} trials/s (per process {r['per_process']}, "
                  f"best CV RMSE {r['best_rmse']:.2f})", flush=True)
    base = statistics.median(r["trials_per_s"] for r in results[min(results)])
    print(f"\n{args.model} on diabetes, {args.trials} trials, median of {args.runs} runs:")
    for n, rs in sorted(results.items()):
        med = statistics.median(r["trials_per_s"] for r in rs)
        print(f"  {n} process(es) (stage + {n - 1} worker(s)): {med:.3f} trials/s, "
              f"×{med / base:.2f} vs 1")


if __name__ == "__main__":
    main()
