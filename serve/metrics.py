"""Prometheus text exposition, hand-rolled (prometheus-client is not a dependency).

Request counts by route/method/status and a latency histogram by route come from an ASGI
middleware; prediction-log figures are read from the log when /metrics is scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from litestar.exceptions import HTTPException

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.hist: dict[str, list[float]] = {}  # route → bucket counts…, +Inf count, sum
        self.predictions = 0
        self.started = time.time()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[(route, method, status)] += 1
        h = self.hist.get(route)
        if h is None:
            h = self.hist[route] = [0.0] * (len(BUCKETS) + 2)
        h[bisect_left(BUCKETS, seconds)] += 1  # non-cumulative here; cumulated on render
        h[-1] += seconds

    def render(self, gauges: dict[str, tuple[str, str, float]]) -> str:
        out: list[str] = []
        out += [
            "# HELP medcast_http_requests_total HTTP requests by route, method and status.",
            "# TYPE medcast_http_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append(
                f'medcast_http_requests_total{{route="{_esc(route)}",method="{method}",'
                f'status="{status}"}} {n}'
            )
        out += [
            "# HELP medcast_http_request_duration_seconds Time from request to response.",
            "# TYPE medcast_http_request_duration_seconds histogram",
        ]
        for route, h in sorted(self.hist.items()):
            label = f'route="{_esc(route)}"'
            acc = 0.0
            for bound, n in zip(BUCKETS, h, strict=False):
                acc += n
                out.append(
                    f'medcast_http_request_duration_seconds_bucket{{{label},le="{bound}"}} {acc:g}'
                )
            acc += h[len(BUCKETS)]
            out.append(f'medcast_http_request_duration_seconds_bucket{{{label},le="+Inf"}} {acc:g}')
            out.append(f"medcast_http_request_duration_seconds_sum{{{label}}} {h[-1]:.6f}")
            out.append(f"medcast_http_request_duration_seconds_count{{{label}}} {acc:g}")
        out += [
            "# HELP medcast_predictions_total Predictions returned (a batch counts its rows).",
            "# TYPE medcast_predictions_total counter",
            f"medcast_predictions_total {self.predictions}",
        ]
        for name, (kind, help_, value) in gauges.items():
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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


def metrics_middleware(metrics: Metrics) -> Callable[[Any], MetricsMiddleware]:
    return lambda app: MetricsMiddleware(app, metrics)
