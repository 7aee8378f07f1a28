"""Benchmark of the prediction service over loopback: throughput, latency, batch, cold start, and
that every 2xx prediction is in the prediction log.

Starts `python -m serve` in a subprocess on a free 127.0.0.1 port (PostgreSQL on 127.0.0.1:5432
database `test` in a throwaway schema when reachable, else SQLite in a temp dir), drives it from a
second process (asyncio; `--client httpx` for httpx.AsyncClient, default a minimal keep-alive
HTTP/1.1 client that costs the shared CPU less), then stops the service (it drains its log) and
counts the rows.

    python -m bench.serve [--model-dir models] [--db auto|postgres|sqlite] [--seconds 10]
                          [--client raw|httpx] [--interval adaptive|constant|none]

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
TARGETS = {"rps16": 2000.0, "p99_ms": 20.0, "cold_s": 2.0, "batch_ms": 20.0}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


# ---- load generator (runs in its own process) -----------------------------------------------


def _request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _raw_worker(host: str, port: int, bodies: list[bytes], deadline: float,
                      lat: list[float], statuses: dict[int, int], path: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    reqs = [_request_bytes(host, port, path, b) for b in bodies]
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
                        lat: list[float], statuses: dict[int, int], path: str) -> None:
    i = 0
    headers = {"Content-Type": "application/json"}
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        r = await client.post(url + path, content=bodies[i % len(bodies)], headers=headers)
        i += 1
        lat.append(time.perf_counter() - t0)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1


async def _load(port: int, conc: int, seconds: float, client: str, path: str,
                bodies: list[bytes]) -> dict[str, Any]:
    lat: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + seconds
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        async with httpx.AsyncClient(limits=limits, timeout=30) as c:
            await asyncio.gather(*[
                _httpx_worker(c, f"http://127.0.0.1:{port}", bodies, deadline, lat, statuses, path)
                for _ in range(conc)
            ])
    else:
        await asyncio.gather(*[
            _raw_worker("127.0.0.1", port, bodies, deadline, lat, statuses, path)
            for _ in range(conc)
        ])
    elapsed = time.perf_counter() - start
    return {"n": len(lat), "elapsed": elapsed, "statuses": statuses,
            "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "median_ms": statistics.median(lat) * 1000 if lat else float("nan")}


def load_main(argv: list[str]) -> None:
    port, conc, seconds, client, path, body_file = argv
    bodies = json.loads(Path(body_file).read_text())
    raw = [json.dumps(b).encode() for b in bodies]
    out = asyncio.run(_load(int(port), int(conc), float(seconds), client, path, raw))
    print(json.dumps(out))


def run_load(port: int, conc: int, seconds: float, client: str, path: str,
             bodies: list[Any]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bodies, f)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.serve", "--_load", str(port), str(conc), str(seconds),
             client, path, f.name],
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


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_load":
        load_main(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--db", choices=["auto", "postgres", "sqlite"], default="auto")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw")
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--interval", choices=["adaptive", "constant", "none"], default="adaptive",
                    help="the tiny model's prediction intervals")
    args = ap.parse_args()
    import sqlalchemy as sa

    from devtools.tiny_model import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="medcast-bench-"))
    model_dir = Path(args.model_dir)
    if (ROOT / model_dir / "model.onnx").exists() and (ROOT / model_dir / "model.json").exists():
        repo, rel = ROOT, str(model_dir)
        card = json.loads((ROOT / model_dir / "model.json").read_text())
        print(f"model: {ROOT / model_dir} ({card['name']})")
    else:
        interval = None if args.interval == "none" else args.interval
        tiny = build_tiny_model(tmp / "repo", interval=interval)
        repo, rel, card = tiny.root, "models", tiny.card
        print(f"model: none in {model_dir}/, built the tiny model ({card['name']}, intervals: "
              f"{args.interval})")

    bodies = bodies_from_card(card, 64)

    schema = None
    use_pg = args.db == "postgres" or (args.db == "auto" and pg_available())
    if use_pg:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_URL)
        with admin.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        db_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    else:
        db_url = f"sqlite:///{tmp / 'bench.db'}"
    print(f"prediction log: {'PostgreSQL schema ' + schema if schema else db_url}")

    # Byte-compiled imports, as in a deployed image (cached outside the venv).
    env = service_env(
        Path(tempfile.gettempdir()) / "medcast-bench-pycache",
        MEDCAST_REPO=str(repo),
        MEDCAST_MODEL_DIR=rel,
        MEDCAST_DATABASE_URL=db_url,
        MEDCAST_RATE_LIMIT="1000000/second",  # one load generator IP; keep the limiter's cost
        MEDCAST_LOG_LEVEL="WARNING",
    )
    results: dict[str, Any] = {}
    answered = 0  # rows the client got a 2xx for
    try:
        service, cold_first, cpu_first = start_service(env, tmp / "serve-first.log")
        print(f"cold start to ready (fresh database, runs the migration): {cold_first:.2f} s "
              f"(CPU {cpu_first:.2f} s)")
        service.stop()
        service, cold, cpu = start_service(env, tmp / "serve.log")
        port = service.port
        results["cold_s"] = cold
        print(f"cold start to ready (migrated database):                  {cold:.2f} s "
              f"(CPU {cpu:.2f} s; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores)")
        warm = run_load(port, 4, 1.0, args.client, "/predict", bodies)  # warm-up, logged too
        answered = sum(v for k, v in warm["statuses"].items() if 200 <= k < 300)
        for conc in (1, 16):
            r = run_load(port, conc, args.seconds, args.client, "/predict", bodies)
            ok = sum(v for k, v in r["statuses"].items() if 200 <= k < 300)
            answered += ok
            rps = r["n"] / r["elapsed"]
            results[f"rps{conc}"], results[f"p99_{conc}"] = rps, r["p99_ms"]
            print(f"POST /predict, {conc:2d} connection(s), {args.seconds:.0f} s, {args.client}: "
                  f"{rps:7.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                  f"statuses {r['statuses']}")
            if ok != r["n"]:
                print(f"  !! {r['n'] - ok} non-2xx responses")
            import httpx

            with httpx.Client() as c:
                depth = log_depth(c, port)
                waited = wait_log_below(c, port, 1)
            print(f"  prediction log backlog at the end: {depth} rows, "
                  f"written {waited:.2f} s later")
        batch = {"instances": [bodies[i % len(bodies)] for i in range(1000)]}
        lat = []
        import httpx

        with httpx.Client(timeout=30) as c:
            for _ in range(args.batches):
                # One batch at a time, each once the log has room for it: this measures a
                # batch's latency, not the database's sustained ingest rate (which is lower
                # than the batch endpoint's: a backlog answers 503 rather than drop rows).
                wait_log_below(c, port, 5000)
                t0 = time.perf_counter()
                resp = c.post(f"http://127.0.0.1:{port}/predict/batch", json=batch)
                lat.append((time.perf_counter() - t0) * 1000)
                assert resp.status_code == 200, resp.text
                answered += 1000
        results["batch_ms"] = statistics.median(lat)
        print(f"POST /predict/batch, 1,000 rows: median {statistics.median(lat):.1f} ms over "
              f"{args.batches} (min {min(lat):.1f}, max {max(lat):.1f})")
        m = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        for line in m.splitlines():
            if line.startswith("medcast_prediction_log_write_retries_total"):
                results["retries"] = int(float(line.rsplit(" ", 1)[1]))
        t0 = time.perf_counter()
        service.stop(timeout=60)
        print(f"shutdown (drains the log): {time.perf_counter() - t0:.2f} s")
        if "Traceback" in service.output():
            print(service.output(3000))
        engine = sa.create_engine(db_url)
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one()
            dup = c.execute(sa.text(
                "SELECT count(*) FROM (SELECT request_id, item FROM predictions "
                "GROUP BY request_id, item HAVING count(*) > 1) d")).scalar_one()
        engine.dispose()
        results["rows_ok"] = rows == answered and dup == 0
        print(f"prediction log: {rows} rows for {answered} predictions answered 2xx "
              f"(duplicates: {dup}, write retries: {results.get('retries', '?')}) → "
              f"{'OK' if results['rows_ok'] else 'MISMATCH'}")
    finally:
        if "service" in locals():
            service.kill()
        if schema:
            with admin.begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\ntargets:")
    checks = [
        ("≥ 2,000 req/s at 16 connections", results.get("rps16", 0) >= TARGETS["rps16"]),
        ("p99 ≤ 20 ms at 16 connections", results.get("p99_16", 1e9) <= TARGETS["p99_ms"]),
        ("cold start ≤ 2 s", results.get("cold_s", 1e9) <= TARGETS["cold_s"]),
        ("1,000-row batch ≤ 20 ms", results.get("batch_ms", 1e9) <= TARGETS["batch_ms"]),
        ("every 2xx logged, no duplicates", results.get("rows_ok", False)),
    ]
    for name, ok in checks:
        print(f"  {'met    ' if ok else 'NOT met'}  {name}")
    assert results.get("rows_ok"), "prediction log rows != 2xx responses"
    return 0


if __name__ == "__main__":
    sys.exit(main())
