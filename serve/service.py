"""The state of one app (`app.state.service`): settings, the verified model or why there is none,
the prediction-log database and buffer, the metrics; the lifespan that loads and stops them,
and the readiness verdict of /health/ready. Handlers reach it with `service_of(request)`.

The lifespan loads and verifies the model (ONNX Runtime only) and migrates the prediction-log
database, both in worker threads and concurrently; failures leave the service alive but unready
(`/health/ready` says why) and the log keeps retrying the database in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from litestar import Litestar
from litestar.connection import ASGIConnection

from medcast.errors import first_line
from serve.clients import CLIENT, Clients, Entry
from serve.coalesce import Coalescer
from serve.db import LogRow, RowWriter, make_engine
from serve.log import PredictionLog
from serve.migrate import ensure_schema
from serve.model import Artifacts, LoadedModel, ModelError, load_model
from serve.prometheus import Metrics
from serve.settings import MULTIPROC_ENV, Settings

logger = logging.getLogger("medcast.serve")


class Database:
    """The prediction-log database: the engine (created lazily: a bad URL is a readiness reason,
    not a crash), its schema, its writes."""

    def __init__(self, url: str, sqlite_synchronous: str = "full") -> None:
        self.url = url
        self.sqlite_synchronous = sqlite_synchronous
        self._engine: sa.Engine | None = None
        self._writer: RowWriter | None = None
        self.schema_status: str | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = make_engine(self.url, self.sqlite_synchronous)
        return self._engine

    @property
    def dialect(self) -> str:
        return sa.engine.make_url(self.url).get_backend_name()

    def prepare(self) -> None:
        """Migrate to head (raises while the database is unreachable)."""
        self.schema_status = ensure_schema(self.engine)

    def write(self, rows: list[LogRow]) -> int:
        if self._writer is None:
            self._writer = RowWriter(self.engine)
        return self._writer.write(rows)

    def ping(self) -> None:
        """One round trip (raises while the database is unreachable)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._engine is not None:
            self._engine.dispose()


class Service:
    """Everything the handlers share; one per app."""

    def __init__(
        self,
        settings: Settings,
        artifacts: Artifacts | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self.artifacts = artifacts
        self.model: LoadedModel | None = None
        # concurrent single predictions in one ORT call, when the model's answers allow it
        self.coalescer: Coalescer | None = None
        self.model_error: str | None = "the model is loading"
        self.metrics = Metrics()
        # a bad or unsafe clients file raises here: the service does not start
        self.clients = Clients(settings.clients_file) if settings.clients_file else None
        self.db = database or Database(settings.db_url, settings.sqlite_synchronous)
        self.log = PredictionLog(
            self.db.write,
            self.db.prepare,
            durability=settings.log_durability,
            max_rows=settings.log_buffer_max,
            window_s=settings.flush_window_ms / 1000,
            chunk_rows=settings.log_chunk_rows,
            ack_timeout_s=settings.log_ack_timeout_ms / 1000,
            retry_max_s=settings.log_retry_max_s,
            probe=self.db.ping,
            figures=self.metrics,
        )
        self.started = time.perf_counter()

    async def startup(self) -> None:
        if self.metrics.multiproc_dir is None and multiprocessing.parent_process() is not None:
            logger.warning("this is one of several worker processes, but %s is not set: "
                           "/metrics counts this process only", MULTIPROC_ENV)
        model_task = asyncio.to_thread(load_model, self.settings, self.artifacts)
        db_error, model = await asyncio.gather(
            self.log.prepare_now(), model_task, return_exceptions=True
        )
        if isinstance(model, ModelError):
            self.model_error = str(model)
            logger.error("model NOT loaded, the service stays unready: %s", model)
        elif isinstance(model, BaseException):
            self.model_error = f"{type(model).__name__}: {model}"
            logger.error("model NOT loaded, the service stays unready: %s", self.model_error)
        else:
            self.model, self.model_error = model, None
            if model.batch_invariant:
                self.coalescer = Coalescer(model.predict_with_bounds, awaited=self.log.awaited,
                                           window_s=self.log.window_s)
            else:
                logger.info("this model's answers depend on the rows beside them in a call: "
                            "every request is predicted alone")
            self.metrics.model_ready.set(1)
            logger.info(
                "model %s (%s, %s) loaded and verified in %.0f ms",
                model.card.name, model.source.describe(), model.md5, model.load_seconds * 1000,
            )
        if isinstance(db_error, BaseException):  # prepare_now() does not raise; belt and braces
            db_error = f"{type(db_error).__name__}: {db_error}"
        if db_error:
            logger.warning(
                "prediction log database (%s) not ready, retrying in the background: %s",
                self.db.dialect, db_error,
            )
        else:
            logger.info("prediction log on %s: %s", self.db.dialect, self.db.schema_status)
        # The ~10^5 objects of the imported libraries and the model live as long as the
        # process: move them out of the collector's reach, or every full collection walks them
        # all (~50 ms here, the p99 under load).
        gc.collect()
        gc.freeze()
        self.log.start()

    async def shutdown(self) -> None:
        left = await self.log.stop(self.settings.log_drain_s)
        if not left:
            logger.info("prediction log drained (%d rows written)", self.log.rows_written)
        await asyncio.to_thread(self.db.dispose)
        self.metrics.close()
        gc.unfreeze()  # several apps in one process (tests): let the old one be collected

    async def readiness_now(self, quiet_s: float = 1.0, timeout_s: float = 2.0
                            ) -> tuple[bool, dict[str, Any]]:
        """readiness(), after one round trip to the database when this process has not reached
        it for `quiet_s`: an idle process (one worker of several) would otherwise vouch for a
        database it has not tried since it went down."""
        log = self.log
        if log.prepared and not log.failing and time.monotonic() - log.last_ok > quiet_s:
            for attempt in (1, 2):  # a pooled connection the server closed (a restart) fails
                try:              # once and is discarded by SQLAlchemy: the second try is fresh
                    await asyncio.wait_for(asyncio.to_thread(self.db.ping), timeout_s)
                    break
                except Exception as exc:  # noqa: BLE001 - any failure: not ready, and why
                    if attempt == 2:
                        reason = type(exc).__name__ + (f": {first_line(exc)[:200]}"
                                                       if str(exc).strip() else "")
                        return self.readiness(unreachable=reason)
            log.last_ok = time.monotonic()
        return self.readiness()

    def readiness(self, unreachable: str | None = None) -> tuple[bool, dict[str, Any]]:
        reasons = []
        if self.model is None:
            reasons.append(f"model: {self.model_error}")
        if not self.log.prepared:
            reasons.append(f"database: not migrated yet ({self.log.last_error or 'connecting'})")
        elif self.log.failing:
            reasons.append(f"database: writes failing ({self.log.last_error})")
        elif unreachable is not None:
            reasons.append(f"database: unreachable ({unreachable})")
        if self.log.depth >= self.log.max_rows:
            reasons.append("prediction log buffer is full (database down or too slow)")
        body: dict[str, Any] = {
            "ready": not reasons,
            "model": (
                {"status": "ok", "md5": self.model.md5, "revision": self.model.revision}
                if self.model
                else {"status": "unavailable", "reason": self.model_error}
            ),
            "database": {
                "status": "failing" if self.log.last_error or unreachable else "ok",
                "dialect": self.db.dialect,
                "durability": self.log.durability,
                "reason": self.log.last_error or unreachable,
                "buffered_rows": self.log.depth,
            },
        }
        if reasons:
            body["reason"] = "; ".join(reasons)
        return not reasons, body


def service_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Service:
    """The Service of the app serving this request (create_app puts it in the app's state)."""
    return connection.app.state.service  # type: ignore[no-any-return]


_CALLER = "medcast.caller"  # the scope key caching a request's clients-file entry (False: none)


def caller_of(scope: Any) -> Entry | None:
    """The clients-file entry (name, role) whose key the request's X-API-Key is (None: no key,
    a wrong key, or no clients file); resolved once per request (the rate limit, the guard and
    the handler all ask)."""
    cached = scope.get(_CALLER)
    if cached is None:
        clients = scope["app"].state.service.clients
        entry = None
        if clients is not None:
            key = None
            for name, value in scope["headers"]:
                if name == b"x-api-key":
                    key = value.decode("latin-1")
                    break
            entry = clients.lookup(key)
        cached = scope[_CALLER] = entry or False
    return cached or None


def client_of(scope: Any) -> str | None:
    """The name of the client whose key the request carries: whom a prediction is logged for,
    and whose rows alone it may read back. None for an auditor's key (it predicts nothing)."""
    entry = caller_of(scope)
    return entry.name if entry is not None and entry.role == CLIENT else None


def _hangup(service: Service) -> None:
    logger.info("SIGHUP: re-reading the client keys")
    if service.clients is not None:
        service.clients.reload()


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    service: Service = app.state.service
    await service.startup()
    if service.clients is not None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the
            # main thread (TestClient) or no signals here: the mtime check still reloads
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _hangup, service)
    ok, body = service.readiness()
    level = logging.INFO if ok else logging.WARNING
    logger.log(level, "ready=%s in %.2f s after create_app%s", ok,
               time.perf_counter() - service.started, "" if ok else f": {body.get('reason')}")
    try:
        yield
    finally:
        if service.clients is not None:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await service.shutdown()
