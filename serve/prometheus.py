"""Prometheus metrics of the service (prometheus_client), exact at any count.

Request counts by route, method and status and a latency histogram by route come from an ASGI
middleware; predictions from the prediction routes; the prediction log reports its figures
(rows buffered, written, refused, failed writes) as they change; model readiness is set at
startup. `render()` is the text exposition format 0.0.4.

Several worker processes (`uvicorn --workers N`): give every worker the same empty directory
in PROMETHEUS_MULTIPROC_DIR (emptied before each start). prometheus_client then keeps each
process's values in files there, and a scrape, whichever worker answers it, merges them:
counters and histograms summed over every process that ran since the start (a restarted
worker's counts are kept), buffered rows summed and model readiness the minimum over live
processes. A worker that stops cleanly removes its live values; those of a killed one are
removed by the next scrape. Without the variable each process counts alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

from litestar.exceptions import HTTPException
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from serve.settings import MULTIPROC_ENV

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4"  # what generate_latest writes; Litestar adds the charset
_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


class Metrics:
    """The metrics of one app; also the prediction log's `LogFigures`."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: the names stay the documented ones
        # prometheus_client chose its value store from this variable when it was imported.
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("medcast_http_requests", "HTTP requests by route, method and status.",
                                ("route", "method", "status"), registry=r)
        self.duration = Histogram("medcast_http_request_duration_seconds",
                                  "Time from request to response.", ("route",), buckets=BUCKETS,
                                  registry=r)
        self.predictions = Counter("medcast_predictions",
                                   "Predictions returned (a batch counts its rows).", registry=r)
        self.log_buffer = Gauge("medcast_prediction_log_buffer_rows",
                                "Rows waiting to be written to the prediction log.", registry=r,
                                multiprocess_mode="livesum")
        self.log_written = Counter("medcast_prediction_log_rows_written",
                                   "Rows written to the prediction log.", registry=r)
        self.log_commits = Counter("medcast_prediction_log_commits",
                                   "Prediction-log transactions committed (group commits).",
                                   registry=r)
        self.log_retries = Counter("medcast_prediction_log_write_retries",
                                   "Failed prediction-log writes (retried).", registry=r)
        self.log_rejected = Counter("medcast_prediction_log_rejected_rows",
                                    "Rows refused with a 503 (buffer full, or no commit in time).",
                                    registry=r)
        self.model_ready = Gauge("medcast_model_ready", "1 when a verified model is loaded.",
                                 registry=r, multiprocess_mode="livemin")
        # (route, method, status) → its counter and histogram children: labels() costs a lock
        # and a lookup; the request path pays for it once per combination.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(route, method, str(status)),
                                              self.duration.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    # ---- serve.log.LogFigures ---------------------------------------------------------------

    def buffered(self, rows: int) -> None:
        self.log_buffer.inc(rows)

    def written(self, rows: int) -> None:
        self.log_written.inc(rows)
        self.log_commits.inc()

    def retried(self) -> None:
        self.log_retries.inc()

    def rejected(self, rows: int) -> None:
        self.log_rejected.inc(rows)

    # ---- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        """The /metrics body: this app's metrics, or every worker's when they share a folder."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        forget_dead_processes(self.multiproc_dir)
        merged = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(merged, path=self.multiproc_dir)
        return generate_latest(merged)

    def close(self) -> None:
        """At shutdown: this process's live values leave the merged figures."""
        if self.multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiproc_dir)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")  # a zombie has exited


def forget_dead_processes(folder: str) -> list[int]:
    """Remove the live values of processes that exited without doing it (killed, OOM)."""
    dead = sorted({int(m[1]) for name in os.listdir(folder)
                   if (m := _LIVE_FILE.fullmatch(name)) and not alive(int(m[1]))})
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker's scrape was first
            multiprocess.mark_process_dead(pid, folder)
    return dead


class MetricsMiddleware:
    """Outermost user middleware: sees the final status, including 429 and 413 exceptions."""

    __slots__ = ("app", "metrics")

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            self.metrics.observe(
                scope.get("path_template") or "other",
                scope["method"],
                status,
                time.perf_counter() - start,
            )
