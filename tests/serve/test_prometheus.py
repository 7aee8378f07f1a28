"""The service's Prometheus metrics (serve/prometheus.py): the documented names and labels, exact
counts at any size, and one set of figures across worker processes (prometheus_client's
multiprocess mode), down to a real `uvicorn --workers 2` run whose scrapes equal the requests
sent, with a worker killed on the way."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from serve import db as servedb
from serve.prometheus import Metrics
from tests.support.serving import metric

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
# Every series /metrics has carried since it exists (histogram: its three sample names).
SERIES = {
    "medcast_http_requests_total": ("route", "method", "status"),
    "medcast_http_request_duration_seconds_bucket": ("route", "le"),
    "medcast_http_request_duration_seconds_sum": ("route",),
    "medcast_http_request_duration_seconds_count": ("route",),
    "medcast_predictions_total": (),
    "medcast_prediction_log_buffer_rows": (),
    "medcast_prediction_log_rows_written_total": (),
    "medcast_prediction_log_commits_total": (),
    "medcast_prediction_log_write_retries_total": (),
    "medcast_prediction_log_rejected_rows_total": (),
    "medcast_model_ready": (),
}


def samples(text: str) -> dict[str, set[tuple[str, ...]]]:
    """Sample name → the label-name sets it appears with."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[tuple[str, ...]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, set()).add(tuple(sorted(s.labels)))
    return out


def test_metrics_keep_their_names_and_label_sets() -> None:
    m = Metrics()
    m.observe("/predict", "POST", 200, 0.003)
    found = samples(m.render().decode())
    assert set(found) == set(SERIES), set(found) ^ set(SERIES)  # no *_created series either
    for name, labels in SERIES.items():
        assert found[name] == {tuple(sorted(labels))}, name


def test_large_counts_are_rendered_exactly() -> None:
    """`:g` formatting printed 1234567891 as 1.23457e+09: counters stood still for minutes."""
    m = Metrics()
    big = {"medcast_predictions_total": 1_234_567_891,
           "medcast_prediction_log_rows_written_total": 9_007_199_254_740_991,  # 2**53 - 1
           "medcast_prediction_log_rejected_rows_total": 1_000_001}
    m.predictions.inc(big["medcast_predictions_total"])
    m.written(big["medcast_prediction_log_rows_written_total"])
    m.rejected(big["medcast_prediction_log_rejected_rows_total"])
    m.buffered(10_000_001)
    for _ in range(3):
        m.observe("/predict", "POST", 200, 0.003)
    m.requests.labels("/predict", "POST", "200").inc(1_999_997)  # 2,000,000 with the three
    text = m.render().decode()
    for name, value in big.items():
        assert metric(text, name) == value, name  # exact: every integer < 2**53 is a float
    assert metric(text, "medcast_prediction_log_buffer_rows") == 10_000_001
    assert metric(text, "medcast_http_requests_total", route="/predict", method="POST",
                  status="200") == 2_000_000
    assert metric(text, "medcast_http_request_duration_seconds_bucket", route="/predict",
                  le="0.005") == 3


_PROCESS = textwrap.dedent("""
    import json, sys
    from serve.prometheus import Metrics
    m = Metrics()
    step = json.loads(sys.argv[1])
    m.predictions.inc(step["predictions"])
    m.written(step["written"])
    m.buffered(step["buffered"])
    m.model_ready.set(step["ready"])
    if step.get("render"):
        sys.stdout.write(m.render().decode())
    if step.get("close"):
        m.close()
""")


def test_worker_processes_are_summed_and_dead_ones_leave_the_live_figures(tmp_path: Path) -> None:
    """Three processes share a folder: one exits cleanly, one is gone without a word (killed),
    the third renders. Counters sum all three exactly; buffered rows and readiness count the
    live processes only."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}

    def run(**step: object) -> str:
        out = subprocess.run([sys.executable, "-c", _PROCESS, json.dumps(step)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    run(predictions=1_000_001, written=1_000_000, buffered=7, ready=1, close=True)
    run(predictions=2_000_003, written=5, buffered=11, ready=0)  # no close: as if killed
    text = run(predictions=5, written=4, buffered=2, ready=1, render=True)
    assert metric(text, "medcast_predictions_total") == 3_000_009
    assert metric(text, "medcast_prediction_log_rows_written_total") == 1_000_009
    assert metric(text, "medcast_prediction_log_buffer_rows") == 2  # not 2 + 11 (+ 7)
    assert metric(text, "medcast_model_ready") == 1  # the dead one's 0 no longer counts
    live = {p.stem.rsplit("_", 1)[1] for p in folder.glob("gauge_live*.db")}
    assert len(live) == 1, live  # the renderer's own; the others' are gone


def test_a_missing_multiprocess_folder_is_a_settings_error(tmp_path: Path) -> None:
    env = service_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "nope"))
    out = subprocess.run([sys.executable, "-m", "serve"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "PROMETHEUS_MULTIPROC_DIR" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


# ---- a real two-worker server ---------------------------------------------------------------


def per_process(folder: Path, sample: str) -> dict[int, float]:
    """A counter's value in each worker's own file (pid → value)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    out = {}
    for path in folder.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)], accumulate=False):
            for s in family.samples:
                if s.name == sample:
                    out[int(path.stem.rsplit("_", 1)[1])] = s.value
    return out


async def _send(url: str, body: bytes, n: int, concurrency: int = 16) -> int:
    """`n` POST /predict, each on a fresh connection (so the kernel spreads them over the
    workers); the number answered 200."""
    import httpx

    ok = 0
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        async def one() -> None:
            nonlocal ok
            r = await client.post("/predict", content=body,
                                  headers={"Content-Type": "application/json"})
            ok += r.status_code == 200

        await asyncio.wait_for(asyncio.gather(*[one() for _ in range(n)]), 60)
    return ok


def scrape(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/metrics", timeout=5).text


def test_two_uvicorn_workers_scrape_the_requests_sent(
    tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    env = service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_DATABASE_URL=db_url,
                      MEDCAST_RATE_LIMIT="off", PROMETHEUS_MULTIPROC_DIR=str(folder))
    from devtools.ports import free_port

    port = free_port()
    args = ["-m", "uvicorn", "--factory", "serve.app:app_from_env", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    body = json.dumps(tiny.examples[0]).encode()
    with running(env, cwd=tmp_path, log=tmp_path / "uvicorn.log", port=port, args=args,
                 timeout=60) as service:
        sent = 0
        for _ in range(20):  # until both workers have answered some (bounded)
            sent += asyncio.run(_send(service.url, body, 100))
            served = per_process(folder, "medcast_predictions_total")
            if len([v for v in served.values() if v > 0]) >= 2:
                break
        assert len([v for v in served.values() if v > 0]) == 2, served
        assert sum(served.values()) == sent

        def totals(text: str) -> tuple[float | None, ...]:
            return (metric(text, "medcast_predictions_total"),
                    metric(text, "medcast_http_requests_total", route="/predict",
                           method="POST", status="200"),
                    metric(text, "medcast_http_request_duration_seconds_count", route="/predict"))

        for _ in range(6):  # whichever worker answers the scrape, it sees both
            assert totals(scrape(service.url)) == (sent, sent, sent)
        deadline = time.monotonic() + 10
        while metric(text := scrape(service.url), "medcast_prediction_log_rows_written_total") < sent:
            assert time.monotonic() < deadline, "rows not written"
            time.sleep(0.05)
        assert metric(text, "medcast_prediction_log_buffer_rows") == 0
        assert metric(text, "medcast_model_ready") == 1

        # A worker killed: its counts stay in the totals; its live figures leave them;
        # uvicorn starts a new worker, which counts on.
        victim = max(served, key=lambda pid: served[pid])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            pids = set(per_process(folder, "medcast_predictions_total"))
            text = scrape(service.url)
            if len(pids) == 3 and metric(text, "medcast_model_ready") == 1:
                break
            assert time.monotonic() < deadline, f"no new worker: {pids}\n{service.output(3000)}"
            time.sleep(0.2)
        assert not list(folder.glob(f"gauge_live*_{victim}.db"))
        assert totals(text) == (sent, sent, sent)
        more = asyncio.run(_send(service.url, body, 50))
        assert totals(scrape(service.url)) == (sent + more,) * 3
        assert service.stop(signal.SIGINT, timeout=30) == 0, service.output(3000)
    output = service.output()
    assert "Traceback" not in output and "PROMETHEUS_MULTIPROC_DIR is not set" not in output
    engine = sa.create_engine(db_url)
    try:
        logged = servedb.count_rows(engine)
    finally:
        engine.dispose()
    # The victim was idle and had written all its rows; the others drained theirs at the stop.
    assert logged == sent + more
