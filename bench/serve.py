"""Benchmark of the prediction service over loopback: throughput and latency of both log
durabilities side by side, the latency the group-commit window adds, batch latency, cold start,
and that every 2xx prediction is in the prediction log.

Starts `python -m serve` in a subprocess on a free 127.0.0.1 port (PostgreSQL on 127.0.0.1:5432
database `test` in a throwaway schema when reachable, else SQLite in a temp dir), once per
configuration, all at once: MEDCAST_LOG_DURABILITY=ack with each window of `--windows` (ms; the
first is the one checked against the targets) and buffered (window 20 ms). Each is driven from a
second process (asyncio; `--client httpx` for httpx.AsyncClient, default a minimal keep-alive
HTTP/1.1 client that costs the shared CPU less) at 1 and 16 connections, in interleaved rounds
(a shared machine's load drifts: the medians are compared), then stopped (it drains its log);
the log's rows are counted against the 2xx answers.

    python -m bench.serve [--model-dir models] [--db auto|postgres|sqlite] [--seconds 3]
                          [--rounds 3] [--windows 2,0] [--client raw|httpx]
                          [--interval adaptive|constant|none] [--secure | --against REV]

`--against REV` measures instead whether this checkout's service is slower than REV's (a
commit, tag or branch): REV's files from `git archive`, each revision serving the tiny model its
own code builds (without intervals, which older revisions did not have), both in
MEDCAST_LOG_DURABILITY=buffered (the only mode before ack existed) and this checkout's also in
ack, each in its own PostgreSQL schema; the same client and load, interleaved rounds, one run.

`--secure` measures instead what HTTPS and client keys cost: one service per configuration
(plain HTTP; keys; HTTPS; HTTPS + keys, certificates from devtools/certs.py), the same load
(16 connections, --seconds each), throughput and p99 printed side by side from one run.

Without a model in --model-dir (with its md5 in ./dvc.lock) it builds the tiny model into a
temp dir (devtools/tiny_model.py; needs scikit-learn and skl2onnx in the benchmark process only),
with prediction intervals of the `--interval` kind (`none`: a graph without them, to measure
what intervals cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from devtools.service import ServiceProcess, service_env, start

ROOT = Path(__file__).resolve().parents[1]
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# For MEDCAST_LOG_DURABILITY=ack (the default) with PostgreSQL, on 2 cores.
TARGETS = {"rps16": 2500.0, "p99_ms": 15.0, "p50_1_ms": 3.0, "cold_s": 2.0, "batch_ms": 20.0}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


# ---- load generator (runs in its own process) -----------------------------------------------


def _request_bytes(host: str, port: int, path: str, body: bytes, key: str | None = None) -> bytes:
    """A POST of `body`; without a body (b""), a GET."""
    extra = f"X-API-Key: {key}\r\n" if key else ""
    if not body:
        return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _tls_context(ca: str | None) -> Any:
    import ssl

    return ssl.create_default_context(cafile=ca) if ca else None


async def _raw_worker(host: str, port: int, bodies: list[bytes], deadline: float,
                      lat: list[float], statuses: dict[int, int], path: str,
                      ca: str | None = None, key: str | None = None) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=_tls_context(ca))
    reqs = [_request_bytes(host, port, path, b, key) for b in bodies]
    i = 0
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _httpx_worker(client: Any, url: str, bodies: list[bytes], deadline: float,
                        lat: list[float], statuses: dict[int, int], path: str,
                        key: str | None = None) -> None:
    i = 0
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        r = await client.post(url + path, content=bodies[i % len(bodies)], headers=headers)
        i += 1
        lat.append(time.perf_counter() - t0)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1


async def _load(port: int, conc: int, seconds: float, client: str, path: str,
                bodies: list[bytes], ca: str | None = None, key: str | None = None
                ) -> dict[str, Any]:
    lat: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + seconds
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        scheme = "https" if ca else "http"
        async with httpx.AsyncClient(limits=limits, timeout=30,
                                     verify=_tls_context(ca) or True) as c:
            await asyncio.gather(*[
                _httpx_worker(c, f"{scheme}://127.0.0.1:{port}", bodies, deadline, lat, statuses,
                              path, key)
                for _ in range(conc)
            ])
    else:
        await asyncio.gather(*[
            _raw_worker("127.0.0.1", port, bodies, deadline, lat, statuses, path, ca, key)
            for _ in range(conc)
        ])
    elapsed = time.perf_counter() - start
    return {"n": len(lat), "elapsed": elapsed, "statuses": statuses,
            "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "median_ms": statistics.median(lat) * 1000 if lat else float("nan")}


def load_main(argv: list[str]) -> None:
    port, conc, seconds, client, path, body_file, *secure = argv
    bodies = json.loads(Path(body_file).read_text())
    raw = [b"" if b is None else json.dumps(b).encode() for b in bodies]  # None: a GET
    options = json.loads(secure[0]) if secure else {}  # {"ca": CA file, "key": client key}
    out = asyncio.run(_load(int(port), int(conc), float(seconds), client, path, raw,
                            options.get("ca"), options.get("key")))
    print(json.dumps(out))


def run_load(port: int, conc: int, seconds: float, client: str, path: str,
             bodies: list[Any], ca: str | None = None, key: str | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bodies, f)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.serve", "--_load", str(port), str(conc), str(seconds),
             client, path, f.name, json.dumps({"ca": ca, "key": key})],
            cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=True,
        )
    finally:
        os.unlink(f.name)
    result = json.loads(out.stdout)
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    return result


# ---- the service under test -------------------------------------------------------------------


def bodies_from_card(card: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """n valid, varied patients: numbers spread over the observed (else allowed) range."""
    out = []
    for i in range(n):
        body: dict[str, Any] = {}
        for j, f in enumerate(card["features"]):
            if f["type"] == "category":
                body[f["name"]] = f["categories"][(i + j) % len(f["categories"])]
                continue
            lo = f["observed_min"] if f.get("observed_min") is not None else f.get("min") or 0
            hi = f["observed_max"] if f.get("observed_max") is not None else f.get("max") or 1
            value = lo + (hi - lo) * (((i + 1) * (j + 7) * 37) % 101) / 100
            body[f["name"]] = round(value) if f["type"] == "int" else round(value, 3)
        out.append(body)
    return out


def log_depth(client: Any, port: int) -> int:
    for line in client.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith("medcast_prediction_log_buffer_rows "):
            return int(float(line.split()[1]))
    return -1


def log_counts(port: int) -> tuple[float, float]:
    """(rows written, commits) of the prediction log so far, from /metrics."""
    import httpx

    values = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        values[name] = value
    return (float(values.get("medcast_prediction_log_rows_written_total", "nan")),
            float(values.get("medcast_prediction_log_commits_total", "nan")))


def wait_log_below(client: Any, port: int, rows: int, timeout: float = 30) -> float:
    t0 = time.perf_counter()
    while log_depth(client, port) >= rows and time.perf_counter() - t0 < timeout:
        time.sleep(0.005)
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(env: dict[str, str], log: Path) -> tuple[ServiceProcess, float, float]:
    """Start `python -m serve`; wall seconds until /health/ready is 200 and CPU seconds used."""
    service = start(env, cwd=ROOT, log=log, timeout=60, poll_s=0.005)
    return service, service.ready_s, cpu_seconds(service.pid)


def pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def secure_comparison(env: dict[str, str], tmp: Path, seconds: float, client: str,
                      bodies: list[Any]) -> int:
    """Plain HTTP, keys, HTTPS, HTTPS + keys: one service each, the same load; rows answered
    2xx (all must be logged)."""
    from devtools.certs import TestCA

    ca = TestCA(tmp / "pki")
    server = ca.server()
    clients = tmp / "clients"
    from serve.clients import add_key

    key = add_key(clients, "bench")
    keys = {"MEDCAST_CLIENTS_FILE": str(clients)}
    tls = {"MEDCAST_TLS_CERT_FILE": str(server.cert), "MEDCAST_TLS_KEY_FILE": str(server.key)}
    configurations = [("plain HTTP", {}, False), ("HTTP + client keys", keys, False),
                      ("HTTPS", tls, True), ("HTTPS + client keys", {**tls, **keys}, True)]
    context = _tls_context(str(ca.pem))
    answered = 0
    rows = []
    for name, extra, https in configurations:
        service = start({**env, **extra}, cwd=ROOT, log=tmp / "serve-secure.log", timeout=60,
                        poll_s=0.005, tls=context if https else None)
        try:
            opts = {"ca": str(ca.pem) if https else None,
                    "key": key if "MEDCAST_CLIENTS_FILE" in extra else None}
            warm = run_load(service.port, 4, 1.0, client, "/predict", bodies, **opts)
            answered += sum(v for k, v in warm["statuses"].items() if 200 <= k < 300)
            r = run_load(service.port, 16, seconds, client, "/predict", bodies, **opts)
        finally:
            service.stop(timeout=60)
        ok = sum(v for k, v in r["statuses"].items() if 200 <= k < 300)
        rows.append((name, r["n"] / r["elapsed"], r["p50_ms"], r["p99_ms"], ok, r["n"]))
        answered += ok
    print(f"\nPOST /predict, 16 connections, {seconds:.0f} s per configuration, {client} client, "
          f"one run (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, shared "
          "with other work: compare the columns, not the absolute figures)")
    print(f"  {'configuration':<22} {'req/s':>8} {'vs plain':>9} {'p50 ms':>8} {'p99 ms':>8}  2xx")
    base = rows[0][1]
    for name, rps, p50, p99, ok, n in rows:
        print(f"  {name:<22} {rps:8.0f} {rps / base:8.0%} {p50:8.2f} {p99:8.2f}  {ok}/{n}")
    return answered


# A revision's tiny model, built by that revision's own code (devtools/ or, before it existed,
# tests/serve_fixtures.py), printed as JSON.
_BUILD_TINY = """
import inspect, json, sys
from pathlib import Path
try:
    from devtools.tiny_model import build_tiny_model
except ImportError:
    from tests.serve_fixtures import build_tiny_model
kwargs = {"interval": None} if "interval" in inspect.signature(build_tiny_model).parameters else {}
tiny = build_tiny_model(Path(sys.argv[1]), **kwargs)
print(json.dumps({"root": str(tiny.root), "card": tiny.card}))
"""


def revision_tree(rev: str, tmp: Path) -> tuple[Path, str]:
    """REV's files (`git archive`, no history) in a temp folder, and its short hash."""
    try:
        short = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--against {rev}: not a commit of this repository "
                         f"({exc.stderr.strip()})") from None
    tree = tmp / f"rev-{short}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", short], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree, short


def tiny_model_of(tree: Path, dest: Path) -> tuple[Path, dict[str, Any]]:
    """The tiny model (no intervals) that the code in `tree` builds: its repo and card."""
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'src'}"}
    out = subprocess.run([sys.executable, "-c", _BUILD_TINY, str(dest)], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"building {tree.name}'s tiny model failed:\n{out.stderr[-3000:]}")
    built = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(built["root"]), built["card"]


def rows_per_commit(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Rows written per commit between two log_counts (NaN: a revision without the figure)."""
    commits = after[1] - before[1]
    return (after[0] - before[0]) / max(1.0, commits) if commits == commits else float("nan")


def measure(configs: list[tuple[str, dict[str, str], Path]], tmp: Path, args: argparse.Namespace,
            bodies: list[Any], services: list[ServiceProcess]) -> list[dict[str, Any]]:
    """Start every configuration (name, environment, working folder) at once, warm each, then
    `args.rounds` interleaved rounds at 1 and 16 connections. Returns the per-round cells; the
    started services are appended to `services` (the caller stops them, also on failure)."""
    results: list[dict[str, Any]] = []
    for k, (name, env, cwd) in enumerate(configs):
        service = start(env, cwd=cwd, log=tmp / f"serve-{k}.log", timeout=60, poll_s=0.005)
        services.append(service)
        results.append({"name": name, "answered": 0, "cold_s": service.ready_s, 1: [], 16: []})
    for r, service in zip(results, services, strict=True):
        warm = run_load(service.port, 4, 1.0, args.client, "/predict", bodies)
        r["answered"] += sum(v for k, v in warm["statuses"].items() if 200 <= k < 300)
    for _ in range(args.rounds):
        for r, service in zip(results, services, strict=True):
            for conc in (1, 16):
                before = log_counts(service.port)
                x = run_load(service.port, conc, args.seconds, args.client, "/predict", bodies)
                after = log_counts(service.port)
                ok = sum(v for k, v in x["statuses"].items() if 200 <= k < 300)
                r["answered"] += ok
                r[conc].append({"rps": x["n"] / x["elapsed"], "p50": x["p50_ms"],
                                "p99": x["p99_ms"], "non2xx": x["n"] - ok,
                                "rpc": rows_per_commit(before, after)})
    return results


def medians(r: dict[str, Any]) -> None:
    """Each figure of `r` as its median round (non-2xx: summed)."""
    for conc in (1, 16):
        cells = r[conc]
        r[conc] = {f: statistics.median(c[f] for c in cells) for f in ("rps", "p50", "p99", "rpc")}
        r[conc]["non2xx"] = sum(c["non2xx"] for c in cells)


def print_table(results: list[dict[str, Any]], title: str, vs: dict[str, Any] | None = None
                ) -> None:
    print(title)
    extra = f" {'vs first':>8}" if vs is not None else ""
    print(f"  {'configuration':30} {'conns':>5} {'req/s':>7}{extra} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'non-2xx':>7} {'rows/commit':>11}")
    for r in results:
        for conc in (1, 16):
            c = r[conc]
            ratio = f" {c['rps'] / vs[conc]['rps']:8.2f}" if vs is not None else ""
            print(f"  {r['name']:30} {conc:5d} {c['rps']:7.0f}{ratio} {c['p50']:7.2f} "
                  f"{c['p99']:7.2f} {c['non2xx']:7d} {c['rpc']:11.1f}")


def against_comparison(rev: str, base: dict[str, str], pycache: Path, tmp: Path,
                       args: argparse.Namespace, pg_schema: Any) -> int:
    """REV's service against this checkout's (see the module's docstring). Exit status 1 when
    this checkout is slower in buffered mode at 16 connections (the medians) or a 2xx row is
    missing."""
    tree, short = revision_tree(rev, tmp)
    before_repo, _ = tiny_model_of(tree, tmp / "before-model")
    after_repo, card = tiny_model_of(ROOT, tmp / "after-model")
    urls = {name: pg_schema(name) for name in ("before", "after", "after_ack")}
    env_before = service_env(pycache, **{**base, "MEDCAST_REPO": str(before_repo),
                                         "MEDCAST_MODEL_DIR": "models",
                                         "MEDCAST_DATABASE_URL": urls["before"],
                                         "MEDCAST_LOG_DURABILITY": "buffered"})
    env_before["PYTHONPATH"] = f"{tree}{os.pathsep}{tree / 'src'}"
    after = {**base, "MEDCAST_REPO": str(after_repo), "MEDCAST_MODEL_DIR": "models"}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or "this checkout"
    configs = [
        (f"{short} ({rev}), buffered", env_before, tree),
        (f"{head}, buffered", service_env(pycache, **{
            **after, "MEDCAST_DATABASE_URL": urls["after"], "MEDCAST_LOG_DURABILITY": "buffered"}),
         ROOT),
        (f"{head}, ack", service_env(pycache, **{
            **after, "MEDCAST_DATABASE_URL": urls["after_ack"], "MEDCAST_LOG_DURABILITY": "ack"}),
         ROOT),
    ]
    bodies = bodies_from_card(card, 64)
    services: list[ServiceProcess] = []
    answered = rows = dup = 0
    try:
        results = measure(configs, tmp, args, bodies, services)
        for r, service, name in zip(results, services, urls, strict=True):
            service.stop(timeout=60)
            medians(r)
            got, twice = count_log(urls[name])
            answered += r["answered"]
            rows += got
            dup += twice
    finally:
        for service in services:
            service.kill()
    print_table(results, f"\nPOST /predict, tiny model without intervals, {args.client} client, "
                f"median of {args.rounds} interleaved rounds of {args.seconds:g} s per cell, "
                f"one run (load average {os.getloadavg()[0]:.1f} at the end):", vs=results[0])
    ratio = results[1][16]["rps"] / results[0][16]["rps"]
    ok = rows == answered and dup == 0
    print(f"\n{head} vs {short}, buffered, 16 connections: {ratio:.2f}× the req/s, p99 "
          f"{results[1][16]['p99']:.2f} vs {results[0][16]['p99']:.2f} ms → "
          f"{'no slower' if ratio >= 0.97 else 'SLOWER'} (3% tolerance for noise)")
    print(f"prediction log: {rows} rows for {answered} predictions answered 2xx (duplicates: "
          f"{dup}) → {'OK' if ok else 'MISMATCH'}")
    return 0 if ok and ratio >= 0.97 else 1


def count_log(db_url: str) -> tuple[int, int]:
    """Rows in the log, and (request_id, item) pairs present more than once."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one()
            dup = c.execute(sa.text(
                "SELECT count(*) FROM (SELECT request_id, item FROM predictions "
                "GROUP BY request_id, item HAVING count(*) > 1) d")).scalar_one()
    finally:
        engine.dispose()
    return int(rows), int(dup)


def finish_config(out: dict[str, Any], service: ServiceProcess, args: argparse.Namespace,
                  bodies: list[Any], batch: bool) -> None:
    """Batch latency (if asked), write retries, then a graceful stop (it drains the log)."""
    import httpx

    port = service.port
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith("medcast_prediction_log_write_retries_total "):
            out["retries"] = int(float(line.rsplit(" ", 1)[1]))
    if batch:
        # encoded once, as bodies of the load are: the client's json.dumps of 1,000 objects
        # (~2 ms here) is not the service's latency
        body = json.dumps({"instances": [bodies[i % len(bodies)] for i in range(1000)]}).encode()
        headers = {"Content-Type": "application/json"}
        lat = []
        with httpx.Client(timeout=30) as c:
            for _ in range(args.batches):
                # One batch at a time, each once the log has room for it (buffered: a backlog
                # answers 503 rather than drop rows): a batch's latency.
                wait_log_below(c, port, 5000)
                t0 = time.perf_counter()
                resp = c.post(f"http://127.0.0.1:{port}/predict/batch", content=body,
                              headers=headers)
                lat.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 200, resp.text
                out["answered"] += 1000
        out["batch"] = (statistics.median(lat), min(lat), max(lat))
    service.stop(timeout=60)
    if "Traceback" in service.output():
        print(service.output(3000))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_load":
        load_main(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--db", choices=["auto", "postgres", "sqlite"], default="auto")
    ap.add_argument("--seconds", type=float, default=3, help="per cell and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians shown)")
    ap.add_argument("--windows", default="2,0",
                    help="ack group-commit windows to measure, ms (MEDCAST_LOG_FLUSH_MS)")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--secure", action="store_true",
                    help="compare plain HTTP with client keys and HTTPS instead")
    ap.add_argument("--against", metavar="REV",
                    help="compare this checkout's service with REV's (e.g. d5ba41b) instead")
    ap.add_argument("--interval", choices=["adaptive", "constant", "none"], default="adaptive",
                    help="the tiny model's prediction intervals")
    args = ap.parse_args()
    try:
        windows = [float(w) for w in args.windows.split(",")]
    except ValueError:
        ap.error(f"--windows {args.windows!r}: expected comma-separated numbers of ms")
    import sqlalchemy as sa

    from devtools.tiny_model import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="medcast-bench-"))
    model_dir = Path(args.model_dir)
    if args.against:
        repo, rel, card = tmp, "models", {}  # each revision builds its own (against_comparison)
    elif (ROOT / model_dir / "model.onnx").exists() and (ROOT / model_dir / "model.json").exists():
        repo, rel = ROOT, str(model_dir)
        card = json.loads((ROOT / model_dir / "model.json").read_text())
        print(f"model: {ROOT / model_dir} ({card['name']})")
    else:
        interval = None if args.interval == "none" else args.interval
        tiny = build_tiny_model(tmp / "repo", interval=interval)
        repo, rel, card = tiny.root, "models", tiny.card
        print(f"model: none in {model_dir}/, built the tiny model ({card['name']}, intervals: "
              f"{args.interval})")

    bodies = bodies_from_card(card, 64) if card else []

    use_pg = args.db == "postgres" or (args.db == "auto" and pg_available())
    schemas: list[str] = []
    admin = sa.create_engine(PG_URL) if use_pg else None

    def database(name: str = "bench") -> str:
        """A fresh prediction-log database: a throwaway PostgreSQL schema, or SQLite file."""
        if admin is None:
            return f"sqlite:///{tmp / name}.db"
        schemas.append(f"bench_{uuid.uuid4().hex[:10]}")
        with admin.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schemas[-1]}"'))
        return f"{PG_URL}?options=-csearch_path%3D{schemas[-1]}"

    db_url = database()
    schema = schemas[0] if schemas else None
    print(f"prediction log: {'PostgreSQL schema ' + schema if schema else db_url}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start "
          "(the machine may be shared: figures are as measured under that load)")

    # Byte-compiled imports, as in a deployed image (cached outside the venv).
    base = dict(
        MEDCAST_REPO=str(repo),
        MEDCAST_MODEL_DIR=rel,
        MEDCAST_DATABASE_URL=db_url,
        MEDCAST_RATE_LIMIT="1000000/second",  # one load generator IP; keep the limiter's cost
        MEDCAST_LOG_LEVEL="WARNING",
    )
    pycache = Path(tempfile.gettempdir()) / "medcast-bench-pycache"
    configs = [(f"ack, window {w:g} ms", {"MEDCAST_LOG_DURABILITY": "ack",
                                          "MEDCAST_LOG_FLUSH_MS": str(w)}) for w in windows]
    configs.insert(1, ("buffered, window 20 ms", {"MEDCAST_LOG_DURABILITY": "buffered"}))
    results: list[dict[str, Any]] = []
    services: list[ServiceProcess] = []
    answered = 0  # rows the clients got a 2xx for, over every configuration
    rows = dup = 0
    try:
        if args.against:
            return against_comparison(args.against, base, pycache, tmp, args, database)
        if args.secure:
            answered = secure_comparison(service_env(pycache, **base), tmp, args.seconds, args.client, bodies)
            engine = sa.create_engine(db_url)
            with engine.connect() as c:
                rows = c.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one()
                clients = c.execute(sa.text("SELECT count(*) FROM predictions "
                                            "WHERE client = 'bench'")).scalar_one()
            engine.dispose()
            print(f"prediction log: {rows} rows for {answered} predictions answered 2xx "
                  f"({clients} with client 'bench') → {'OK' if rows == answered else 'MISMATCH'}")
            return 0 if rows == answered else 1
        service, cold_first, cpu_first = start_service(service_env(pycache, **base),
                                                       tmp / "serve-first.log")
        print(f"cold start to ready (fresh database, runs the migration): {cold_first:.2f} s "
              f"(CPU {cpu_first:.2f} s)")
        service.stop()
        # Every configuration runs at once (idle while another is measured) and is measured in
        # `--rounds` interleaved rounds: the shared machine's load drifts, the medians compare.
        results = measure(
            [(name, service_env(pycache, **base, **extra), ROOT) for name, extra in configs],
            tmp, args, bodies, services)
        for k, (r, service) in enumerate(zip(results, services, strict=True)):
            finish_config(r, service, args, bodies, batch=k == 0)
            answered += r["answered"]
            medians(r)
        rows, dup = count_log(db_url)
    finally:
        for service in services:
            service.kill()
        if "service" in locals():
            service.kill()
        if admin is not None:
            with admin.begin() as c:
                for name in schemas:
                    c.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(results, f"\nPOST /predict, {args.client} client, "
                f"{'PostgreSQL' if use_pg else 'SQLite'} log; median of {args.rounds} interleaved "
                f"rounds of {args.seconds:g} s per cell (load average {os.getloadavg()[0]:.1f} at "
                "the end):")
    ack0, buffered = results[0], results[1]
    print("\nwhat waiting for the commit costs (ack minus buffered, same run): p50 "
          f"{ack0[1]['p50'] - buffered[1]['p50']:+.2f} ms at 1 connection, "
          f"{ack0[16]['p50'] - buffered[16]['p50']:+.2f} ms at 16")
    for r in results[2:]:
        print(f"what the window adds ({r['name']} vs {ack0['name']}): p50 "
              f"{r[1]['p50'] - ack0[1]['p50']:+.2f} ms at 1 connection, "
              f"{r[16]['p50'] - ack0[16]['p50']:+.2f} ms at 16; req/s at 16 "
              f"{r[16]['rps'] - ack0[16]['rps']:+.0f}")
    med, lo, hi = ack0["batch"]
    print(f"POST /predict/batch, 1,000 rows ({ack0['name']}): median {med:.1f} ms over "
          f"{args.batches} (min {lo:.1f}, max {hi:.1f})")
    print(f"cold start to ready (migrated database): {ack0['cold_s']:.2f} s")
    rows_ok = rows == answered and dup == 0
    print(f"prediction log: {rows} rows for {answered} predictions answered 2xx (duplicates: "
          f"{dup}, write retries: {sum(r.get('retries', 0) for r in results)}) → "
          f"{'OK' if rows_ok else 'MISMATCH'}")

    print(f"\ntargets ({ack0['name']}, {'PostgreSQL' if use_pg else 'SQLite (targets are for PostgreSQL)'}):")
    checks = [
        ("≥ 2,500 req/s at 16 connections", ack0[16]["rps"] >= TARGETS["rps16"]),
        ("p99 ≤ 15 ms at 16 connections", ack0[16]["p99"] <= TARGETS["p99_ms"]),
        ("p50 ≤ 3 ms at 1 connection", ack0[1]["p50"] <= TARGETS["p50_1_ms"]),
        ("cold start ≤ 2 s", ack0["cold_s"] <= TARGETS["cold_s"]),
        ("1,000-row batch ≤ 20 ms", med <= TARGETS["batch_ms"]),
        ("every 2xx logged, no duplicates", rows_ok),
    ]
    for name, ok in checks:
        print(f"  {'met    ' if ok else 'NOT met'}  {name}")
    assert rows_ok, "prediction log rows != 2xx responses"
    return 0


if __name__ == "__main__":
    sys.exit(main())
