"""CPU per prediction, by component: where one service process spends its time on `POST /predict`.

Starts `python -m serve` as one process (MEDCAST_WORKERS=1, rate limit off, PostgreSQL log in
`ack` on 127.0.0.1:5432 when reachable, else SQLite), drives it with bench.serve's load client
(16 connections) and, meanwhile, samples its stacks with py-spy (`record --format raw
--nonblocking`, 500 Hz). The process's own CPU time (/proc, user + system) divided by the
predictions it answered gives the CPU µs per request; the samples split that total by the
component on the stack (the first of COMPONENTS found, leaf first). Samples parked in a wait
(the event loop's select, an idle thread-pool worker, psycopg waiting for the server) are left
out of the split. The database server's own CPU is not in the figure.

    python -m bench.serve_cpu [--against REV] [--seconds 10] [--conc 16] [--model-dir models]

`--against REV` measures REV's service too (its files from `git archive`), on the same model
and database, interleaved with this checkout's in `--rounds` rounds (medians): the before/after
table of one run. Sampling shares are estimates (a few %); the total is measured.
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
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.serve import (
    PG_URL,
    ROOT,
    bodies_from_card,
    cpu_seconds,
    pg_available,
    revision_tree,
    run_load,
)
from devtools.service import ServiceProcess, service_env, start

# (component, substrings of a frame "function (file:line)"): the first component matching a
# frame, scanning from the leaf, takes the sample.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("ONNX Runtime (the model)", ("Session.run ",)),
    ("log: database write (its thread)", ("insert_rows ", "Database.write ", "serve/db.py",
                                          "psycopg/", "sqlalchemy/")),
    ("log: group commit (event loop)", ("PredictionLog.",)),
    ("decode + validate the request", ("RequestSchema.", "decode_one", "decode_batch")),
    ("metrics (Prometheus)", ("MetricsMiddleware", "Metrics.", "prometheus_client")),
    ("rate limit", ("RateLimitMiddleware", "RateCounter.", "ratelimit")),
    ("prediction handler (ours)", ("_answer ", "Coalescer.", "LoadedModel.", "serve/routes.py",
                                   "serve/coalesce.py", "serve/model.py", "serve/predict.py",
                                   "serve/hotpath.py")),
    ("Litestar (routing, request, response)", ("litestar/",)),
    ("uvicorn + httptools (HTTP)", ("uvicorn/", "httptools")),
    ("asyncio event loop", ("asyncio/", "uvloop")),
]
# Leaf frames of a thread that waits (GIL released, no CPU): not part of the split.
WAITS = ("select (selectors.py", "_worker (concurrent/futures/thread.py", "Runner.run (",
         "wait (psycopg/", "Connection.wait (", "_wait_for_tstate_lock", "Condition.wait (",
         "poll (selectors.py", "run_forever (")


def classify(stack: str) -> str | None:
    """The component of one raw py-spy stack ("frame;frame;…", root first); None: a wait."""
    frames = stack.split(";")
    if any(frames[-1].startswith(w) or w in frames[-1] for w in WAITS):
        return None
    for frame in reversed(frames):
        for name, marks in COMPONENTS:
            if any(m in frame for m in marks):
                return name
    return "other"


def split_samples(raw: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        component = classify(stack)
        if component is not None:
            counts[component] += int(n)
    return counts


def predictions_served(url: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("medcast_predictions_total "):
            return float(line.split()[1])
    return float("nan")


def pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (it is in the dev extra: make install)")
    return found


def profile(service: ServiceProcess, bodies: list[Any], seconds: float, conc: int,
            out: Path) -> dict[str, Any]:
    """One measured round: CPU µs per prediction and the samples' split."""
    run_load(service.port, conc, 2, "raw", "/predict", bodies)  # warm
    n0, cpu0 = predictions_served(service.url), cpu_seconds(service.pid)
    spy = subprocess.Popen([pyspy(), "record", "--pid", str(service.pid), "--rate", "500",
                            "--duration", str(int(seconds)), "--format", "raw", "--nonblocking",
                            "--output", str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    load = run_load(service.port, conc, seconds, "raw", "/predict", bodies)
    cpu1, n1 = cpu_seconds(service.pid), predictions_served(service.url)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not out.exists():
        raise SystemExit(f"py-spy failed (it needs ptrace permission): {err.decode()[-500:]}")
    served = n1 - n0
    return {"us_per_request": (cpu1 - cpu0) / served * 1e6, "served": served,
            "rps": load["n"] / load["elapsed"], "p99_ms": load["p99_ms"],
            "samples": split_samples(out.read_text())}


def table(results: dict[str, list[dict[str, Any]]], conc: int) -> str:
    """Markdown: µs per request by component (medians over rounds), one column per service."""
    names = list(results)
    per: dict[str, dict[str, float]] = {}
    totals = {}
    for name, rounds in results.items():
        totals[name] = statistics.median(r["us_per_request"] for r in rounds)
        shares: dict[str, list[float]] = {}
        for r in rounds:
            total = sum(r["samples"].values()) or 1
            for component, n in r["samples"].items():
                shares.setdefault(component, []).append(n / total * r["us_per_request"])
        per[name] = {c: statistics.median(v + [0.0] * (len(rounds) - len(v)))
                     for c, v in shares.items()}
    order = [c for c, _ in COMPONENTS] + ["other"]
    lines = ["| component | " + " | ".join(f"{n} µs/request" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for c in order:
        if any(c in per[n] for n in names):
            lines.append(f"| {c} | " + " | ".join(f"{per[n].get(c, 0.0):.0f}" for n in names)
                         + " |")
    lines.append("| **total (process CPU / predictions)** | "
                 + " | ".join(f"**{totals[n]:.0f}**" for n in names) + " |")
    lines.append(f"| req/s (one process, {conc} connections) | " + " | ".join(
        f"{statistics.median(r['rps'] for r in results[n]):,.0f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.serve_cpu", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--against", metavar="REV", help="also measure REV's service (git archive)")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model-dir", default="models")
    args = ap.parse_args()
    card_file = ROOT / args.model_dir / "model.json"
    if not card_file.exists():
        raise SystemExit(f"no {card_file}: run `make repro` first (the benchmark serves it)")
    bodies = bodies_from_card(json.loads(card_file.read_text()), 64)
    with tempfile.TemporaryDirectory(prefix="medcast-cpu-") as folder:
        tmp = Path(folder)
        trees = {"this checkout": ROOT}
        if args.against:
            tree, short = revision_tree(args.against, tmp)
            trees = {short: tree, **trees}
        pg = pg_available()
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                if pg:
                    import sqlalchemy as sa

                    schema = f"bench_cpu_{uuid.uuid4().hex[:10]}"
                    admin = sa.create_engine(PG_URL)
                    with admin.begin() as conn:
                        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
                    db = f"{PG_URL}?options=-csearch_path%3D{schema}"
                else:
                    db = f"sqlite:///{tmp / f'log-{round_}-{len(results[name])}.db'}"
                env = service_env(tmp / "pycache", MEDCAST_REPO=str(ROOT),
                                  MEDCAST_MODEL_DIR=args.model_dir, MEDCAST_DATABASE_URL=db,
                                  MEDCAST_WORKERS="1", MEDCAST_RATE_LIMIT="off",
                                  MEDCAST_LOG_LEVEL="WARNING")
                env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(tree)])
                service = start(env, cwd=tree, log=tmp / f"serve-{round_}.log", timeout=60)
                try:
                    results[name].append(profile(service, bodies, args.seconds, args.conc,
                                                 tmp / f"spy-{round_}-{len(results[name])}.txt"))
                finally:
                    service.stop()
                    if pg:
                        with admin.begin() as conn:
                            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                        admin.dispose()
                r = results[name][-1]
                print(f"round {round_ + 1} {name}: {r['us_per_request']:.0f} µs CPU/request, "
                      f"{r['rps']:,.0f} req/s, p99 {r['p99_ms']:.1f} ms", flush=True)
    print()
    print(table(results, args.conc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
