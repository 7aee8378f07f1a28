"""The prediction service against its own ceiling and against MLflow's server, in one run.

Three servers, started as a user starts them, at the same number of worker processes (one per
core unless `--workers`), driven one at a time at 16 connections (`--connections`) over
loopback in interleaved rounds (a shared machine's load drifts: the medians are compared):

* `python -m serve`, as `make serve` runs it (MEDCAST_WORKERS unset: one per core), its
  prediction log in its default durable `ack` mode (PostgreSQL on 127.0.0.1:5432 in a
  throwaway schema when reachable, else SQLite): `POST /predict`, one patient a request;
* the same server's trivial `GET /health/live`: what uvicorn, Litestar and the middlewares
  answer at most, the ceiling a prediction is compared with;
* `mlflow models serve` of the same study's champion (the model export registered;
  `--env-manager local`, `--workers` the same): `POST /invocations`, one patient a request as
  `{"dataframe_records": [...]}`.

The load comes from wrk (`--client wrk`, the default when it is on PATH: `apt-get install
wrk`, or `make bench-ceiling`, which installs it), one thread, or from bench.serve's raw
asyncio client; its requests are formatted once, in wrk's init: per request the client picks
one (a Lua call), as wrk's static GET formats nothing per request either. The log's rows are counted
against the predictions answered 2xx. Each ratio is judged on the median of its round-by-round
values (a round's cells run seconds apart, the rounds minutes apart on a host whose speed
drifts); the ratio of the medians is printed beside it.

    python -m bench.serve_ceiling [--seconds 5] [--rounds 3] [--workers N] [--client wrk|raw]
                                  [--connections 16] [--durability ack|buffered]
                                  [--no-mlflow] [--against REV]

`--against REV` also starts REV's service (its files from `git archive`, the same model, the
same settings, its own log schema) and drives its `POST /predict` and `GET /health/live` in the
same rounds: the before/after of one run. `--durability buffered` runs every service's log in
`buffered` mode (rows written at most a flush window after the answer, in large commits): what
the same server answers without a commit per group of requests, the bound of `ack`'s cost.

Needs a model built by `make repro` (models/, its md5s in dvc.lock) and its registered
champion in the MLflow store (mlflow.db, or MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.serve import (
    PG_URL,
    ROOT,
    bodies_from_card,
    count_log,
    log_counts,
    pg_available,
    revision_tree,
    run_load,
)
from devtools.ports import HOST, free_port
from devtools.service import ServiceProcess, service_env, start
from medcast.tracking import tracking_uri

CONNECTIONS = 16  # the figure; --connections to sweep
# The targets (#28), for the defaults on 2 cores.
TARGETS = {"of_ceiling": 0.40, "of_mlflow": 30.0, "p99_ms": 10.0}


def wrk_script(method: str, path: str, bodies: list[bytes]) -> str:
    """A wrk Lua script: with bodies, `method path` with each body in turn (a GET without them
    is wrk's own static request, the cheapest for the client); done() prints one JSON line
    (requests, answers ≥ 400, socket errors, latency percentiles in µs)."""
    request = ""
    if bodies:
        quoted = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies)
        # Each request formatted once, in init (as wrk's own static request is): wrk.format
        # per request would count the client's Lua work against the prediction's rate.
        request = f"""
local bodies = {{{quoted}}}
local prepared = {{}}
local i = 0
init = function(args)
  for k, body in ipairs(bodies) do
    prepared[k] = wrk.format("{method}", "{path}", {{["Content-Type"] = "application/json"}},
                             body)
  end
end
request = function()
  i = i + 1
  return prepared[(i % #prepared) + 1]
end
"""
    return request + """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"n": %d, "elapsed_us": %d, "non2xx": %d, "socket_errors": %d, "p50_us": %d, ' ..
    '"p99_us": %d}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_load(port: int, method: str, path: str, bodies: list[bytes], seconds: float,
             tmp: Path, connections: int = CONNECTIONS) -> dict[str, Any]:
    script = tmp / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(wrk_script(method, path, bodies))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s",
         str(script), f"http://{HOST}:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True)
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}") from None
    ok = result["n"] - result["non2xx"]
    return {"rps": result["n"] / (result["elapsed_us"] / 1e6), "ok": ok,
            "failed": result["non2xx"] + result["socket_errors"],
            "p50": result["p50_us"] / 1000, "p99": result["p99_us"] / 1000}


def raw_load(port: int, method: str, path: str, bodies: list[Any], seconds: float,
             connections: int = CONNECTIONS) -> dict[str, Any]:
    r = run_load(port, connections, seconds, "raw", path,
                 bodies if method == "POST" else [None])
    ok = sum(v for k, v in r["statuses"].items() if 200 <= k < 300)
    return {"rps": r["n"] / r["elapsed"], "ok": ok, "failed": r["n"] - ok,
            "p50": r["p50_ms"], "p99": r["p99_ms"]}


def start_mlflow(model_uri: str, workers: int, log: Path, timeout: float = 180
                 ) -> tuple[subprocess.Popen[bytes], int]:
    """`mlflow models serve` of model_uri on a free port, waited for until GET /ping answers
    200: the process and its port."""
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(ROOT),
           "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", model_uri,
             "-h", HOST, "-p", str(port), "-w", str(workers), "--env-manager", "local"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # its uvicorn and workers: one process group to stop
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.5)
    stop_group(proc)
    raise RuntimeError(f"mlflow models serve not ready in {timeout:g} s:\n"
                       f"{log.read_text()[-3000:]}")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group of `proc` (MLflow's CLI, its uvicorn and its workers),
    SIGKILL after 30 s."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5, help="per cell and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes of both servers (default: one per core)")
    ap.add_argument("--client", choices=["wrk", "raw"],
                    default="wrk" if shutil.which("wrk") else "raw")
    ap.add_argument("--connections", type=int, default=CONNECTIONS,
                    help="concurrent connections of the client (default: %(default)s)")
    ap.add_argument("--durability", choices=["ack", "buffered"], default="ack",
                    help="the services' MEDCAST_LOG_DURABILITY (default: %(default)s, the "
                         "service's own default)")
    ap.add_argument("--no-mlflow", action="store_true", help="leave MLflow's server out")
    ap.add_argument("--against", metavar="REV", help="also measure REV's service (git archive)")
    args = ap.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    card_path = ROOT / "models" / "model.json"
    if not card_path.exists():
        print("no models/model.json: run `make repro` first", file=sys.stderr)
        return 2
    card = json.loads(card_path.read_text())
    bodies = bodies_from_card(card, 64)
    raw_bodies = [json.dumps(b).encode() for b in bodies]
    tmp = Path(tempfile.mkdtemp(prefix="medcast-bench-ceiling-"))
    import sqlalchemy as sa

    use_pg = pg_available()
    trees = {"this checkout": ROOT}
    if args.against:
        tree, short = revision_tree(args.against, tmp)
        trees = {short: tree, **trees}
    schemas = {name: f"bench_{uuid.uuid4().hex[:10]}" for name in trees}
    admin = sa.create_engine(PG_URL) if use_pg else None
    if admin is not None:
        with admin.begin() as c:
            for schema in schemas.values():
                c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    db_urls = {name: (f"{PG_URL}?options=-csearch_path%3D{schema}" if use_pg
                      else f"sqlite:///{tmp / f'log-{schema}.db'}")
               for name, schema in schemas.items()}
    print(f"{workers} worker processes each; {args.client} at {args.connections} connections; "
          f"{'PostgreSQL' if use_pg else 'SQLite'} log ({args.durability}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start")

    def load(port: int, method: str, path: str, payload: list[Any]) -> dict[str, Any]:
        if args.client == "wrk":
            return wrk_load(port, method, path, payload, args.seconds, tmp, args.connections)
        return raw_load(port, method, path, [json.loads(b) for b in payload], args.seconds,
                        args.connections)

    services: dict[str, ServiceProcess] = {}
    mlflow_proc: subprocess.Popen[bytes] | None = None
    mlflow_port = 0
    cells: dict[str, list[dict[str, Any]]] = {}
    for name in trees:
        cells[cell(name, "live")], cells[cell(name, "predict")] = [], []
    cells["mlflow"] = []
    logs: dict[str, tuple[int, int]] = {}
    try:
        for name, tree in trees.items():
            env = service_env(Path(tempfile.gettempdir()) / "medcast-bench-pycache",
                              MEDCAST_REPO=str(ROOT), MEDCAST_DATABASE_URL=db_urls[name],
                              MEDCAST_LOG_LEVEL="WARNING", MEDCAST_LOG_DURABILITY=args.durability,
                              MEDCAST_RATE_LIMIT="1000000/second",  # one client IP
                              **({} if args.workers is None
                                 else {"MEDCAST_WORKERS": str(workers)}))
            env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(tree)])
            services[name] = start(env, cwd=tree, log=tmp / f"serve-{len(services)}.log",
                                   timeout=120)
        if not args.no_mlflow:
            uri = f"models:/medcast-{card['dataset']}@champion"
            mlflow_proc, mlflow_port = start_mlflow(uri, workers, tmp / "mlflow.log")
            mlflow_bodies = [json.dumps({"dataframe_records": [b]}).encode() for b in bodies]
            probe = urllib.request.Request(
                f"http://{HOST}:{mlflow_port}/invocations",
                data=mlflow_bodies[0], headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(probe, timeout=30) as r:
                print(f"mlflow models serve {uri}: {r.read()[:80]!r}")
        for k in range(args.rounds):
            for name, service in services.items():
                cells[cell(name, "live")].append(load(service.port, "GET", "/health/live", []))
                rows0, commits0 = log_counts(service.port)
                run = load(service.port, "POST", "/predict", raw_bodies)
                rows1, commits1 = log_counts(service.port)
                # rows a group commit carried (requests in flight at the end are in neither)
                run["rows_per_commit"] = (rows1 - rows0) / max(commits1 - commits0, 1)
                cells[cell(name, "predict")].append(run)
            if mlflow_proc is not None:
                cells["mlflow"].append(load(mlflow_port, "POST", "/invocations",
                                            mlflow_bodies))
            print(f"round {k + 1}: " + ", ".join(
                f"{name} {runs[-1]['rps']:,.0f} req/s" for name, runs in cells.items() if runs))
        for name, service in services.items():
            service.stop(timeout=60)  # drains the log
            logs[name] = count_log(db_urls[name])
    finally:
        for service in services.values():
            service.kill()
        if mlflow_proc is not None:
            stop_group(mlflow_proc)
        if admin is not None:
            with admin.begin() as c:
                for schema in schemas.values():
                    c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in cells[name]) if cells[name] else float("nan")

    print(f"\nmedian of {args.rounds} interleaved rounds of {args.seconds:g} s, {workers} "
          f"processes each (load average {os.getloadavg()[0]:.1f} at the end):")
    print("| server | req/s | p50 ms | p99 ms | failed |\n|---|---:|---:|---:|---:|")
    labels = {}
    for name in trees:
        labels[cell(name, "live")] = f"medcast ({name}) GET /health/live (the ceiling)"
        labels[cell(name, "predict")] = f"medcast ({name}) POST /predict"
    labels["mlflow"] = "mlflow models serve POST /invocations"
    for key, label in labels.items():
        if cells[key]:
            print(f"| {label} | {med(key, 'rps'):,.0f} | {med(key, 'p50'):.2f} | "
                  f"{med(key, 'p99'):.2f} | {sum(r['failed'] for r in cells[key])} |")
    all_logged = True
    for name in trees:
        live, predict = cell(name, "live"), cell(name, "predict")
        # Each round's cells ran within seconds of each other, the rounds minutes apart on a
        # host whose speed drifts: the verdict is the median of the round-by-round ratios
        # (paired); the ratio of the medians is printed beside it.
        of_ceiling_rounds = ratios(cells[predict], cells[live])
        of_mlflow_rounds = ratios(cells[predict], cells["mlflow"])
        of_ceiling = statistics.median(of_ceiling_rounds)
        answered = sum(r["ok"] for r in cells[predict])
        rows, dup = logs[name]
        # wrk stops with up to one request a connection in flight: the server answers and logs
        # it, wrk does not count it. A 2xx without its row would make rows < answered.
        in_flight = args.connections * args.rounds if args.client == "wrk" else 0
        logged = answered <= rows <= answered + in_flight and dup == 0
        all_logged = all_logged and logged
        print(f"\n{name}: prediction log: {rows} rows for {answered} predictions answered 2xx"
              + (f" (+ at most {in_flight} in flight when wrk stopped)" if in_flight else "")
              + f", duplicates {dup} → {'OK' if logged else 'MISMATCH'}")
        print("  rows a group commit carried, per round: "
              + ", ".join(f"{r['rows_per_commit']:.1f}" for r in cells[predict]))
        checks = [(f"≥ {TARGETS['of_ceiling']:.0%} of the trivial route's rate: "
                   f"{of_ceiling:.0%} (ratio of the medians "
                   f"{med(predict, 'rps') / med(live, 'rps'):.0%})",
                   of_ceiling >= TARGETS["of_ceiling"]),
                  (f"p99 ≤ {TARGETS['p99_ms']:g} ms: {med(predict, 'p99'):.2f} ms",
                   med(predict, "p99") <= TARGETS["p99_ms"]),
                  ("every 2xx has its row", logged)]
        if of_mlflow_rounds:
            of_mlflow = statistics.median(of_mlflow_rounds)
            checks.insert(1, (f"≥ {TARGETS['of_mlflow']:g}× mlflow models serve: "
                              f"{of_mlflow:.1f}× (ratio of the medians "
                              f"{med(predict, 'rps') / med('mlflow', 'rps'):.1f}×)",
                              of_mlflow >= TARGETS["of_mlflow"]))
        if args.connections != CONNECTIONS:  # the targets hold for the load only
            print(f"  (at {args.connections} connections: the targets are set for "
                  f"{CONNECTIONS}, so these lines do not judge them)")
        for text, ok in checks:
            print(f"  {'met    ' if ok else 'NOT met'}  {text}")
        print(f"  per round, of the trivial route: "
              f"{', '.join(f'{r:.0%}' for r in of_ceiling_rounds)}")
        if of_mlflow_rounds:
            print(f"  per round, of mlflow models serve: "
                  f"{', '.join(f'{r:.1f}×' for r in of_mlflow_rounds)}")
    if len(trees) > 1:
        before, after = (cell(name, "predict") for name in trees)
        paired = ratios(cells[after], cells[before])
        print(f"\nPOST /predict, this checkout against {next(iter(trees))}: "
              f"{statistics.median(paired):.2f}× the req/s (median of the rounds: "
              f"{', '.join(f'{r:.2f}×' for r in paired)})")
    return 0 if all_logged else 1


def ratios(runs: list[dict[str, Any]], against: list[dict[str, Any]]) -> list[float]:
    """req/s of `runs` over req/s of `against`, round by round (empty without `against`)."""
    return [r["rps"] / a["rps"] for r, a in zip(runs, against, strict=True)] if against else []


def cell(name: str, kind: str) -> str:
    """The key of one service's cell: `kind` (live, predict) of the service `name`."""
    return f"{kind} ({name})"


if __name__ == "__main__":
    sys.exit(main())
