"""The Litestar application: `create_app(settings)` wires the service state, routes, middleware,
lifespan and OpenAPI document together; `app_from_env` is the factory for ASGI servers.

Where things live: the state and the lifespan in serve.service, the REST handlers in
serve.routes (a prediction's answer in serve.predict, `POST /predict`'s hot path in
serve.hotpath), the dashboard in serve.dashboard, errors and the OpenAPI document in
serve.openapi, metrics in serve.prometheus.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from serve.dashboard import DASHBOARD
from serve.hotpath import HotPath
from serve.model import Artifacts
from serve.openapi import log_exception, openapi_config
from serve.prometheus import MetricsMiddleware
from serve.ratelimit import rate_limit_config
from serve.routes import API
from serve.service import Database, Service, lifespan
from serve.settings import Settings
from serve.tls import security_headers

# Paths the per-client rate limit never counts: probes, scrapes, docs and the dashboard page.
UNLIMITED = ["/health/", "/metrics", "/schema", "/dashboard"]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def create_app(
    settings: Settings | None = None,
    *,
    artifacts: Artifacts | None = None,
    database: Database | None = None,
) -> Litestar:
    """The app; nothing is loaded until its lifespan starts (ASGI server or TestClient)."""
    settings = settings or Settings.from_env()
    service = Service(settings, artifacts, database)
    middleware: list[Any] = [DefineMiddleware(MetricsMiddleware, metrics=service.metrics)]
    limit = None
    if settings.rate_limit is not None:
        limit = rate_limit_config(settings.rate_limit, UNLIMITED)
        middleware.append(limit.middleware)
    app = Litestar(
        route_handlers=[*API, *DASHBOARD],
        state=State({"service": service}),
        lifespan=[lifespan],
        middleware=middleware,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        after_exception=[log_exception],
        before_send=[security_headers()],
        openapi_config=openapi_config(),
    )
    # POST /predict answered in front of the router, as its stack would (serve.hotpath)
    app.asgi_handler = HotPath(app.asgi_handler, service, limit.counter if limit else None,
                               settings.max_body_bytes)
    return app


def app_from_env() -> Litestar:
    """Factory for ASGI servers: `uvicorn --factory serve.app:app_from_env` (or granian), and
    for each worker process of `python -m serve`."""
    stop_with_supervisor()
    return create_app(Settings.from_env())


def stop_with_supervisor() -> None:
    """In a worker process (multiprocessing's child: uvicorn's supervisor), ask Linux for a
    SIGTERM when the supervisor dies (prctl PR_SET_PDEATHSIG), so that a killed supervisor
    leaves no orphan holding the port: the worker drains its log and exits as on a normal
    stop. Elsewhere (one process, another OS) nothing is done."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent.pid:  # the supervisor died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)
