"""The Litestar application: `create_app(settings)` wires settings, model, log and routes.

The lifespan loads and verifies the model (ONNX Runtime only) and migrates the prediction-log
database, both in worker threads and concurrently; failures leave the service alive but unready
(`/health/ready` says why). Handlers read request bodies as bytes and validate them with the
msgspec decoders generated from the model card: one decode, no coercion.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.params import Parameter

from serve.dashboard import dashboard_handlers
from serve.db import Database, LogRow, fetch_page
from serve.log import PredictionLog
from serve.metrics import Metrics, metrics_middleware
from serve.model import Artifacts, LoadedModel, ModelError, load_model
from serve.ratelimit import rate_limit_config
from serve.schemas import BatchOut, ErrorOut, InputError, PredictionOut
from serve.settings import Settings

logger = logging.getLogger("medcast.serve")

JSON = "application/json"
_encode = msgspec.json.encode


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
        self.model_error: str | None = "the model is loading"
        self.metrics = Metrics()
        self.db = database or Database(settings.db_url)
        self.log = PredictionLog(
            self.db.write,
            self.db.prepare,
            max_rows=settings.log_buffer_max,
            flush_s=settings.log_flush_ms / 1000,
            chunk_rows=settings.log_chunk_rows,
            retry_max_s=settings.log_retry_max_s,
        )
        self.started = time.perf_counter()

    async def startup(self) -> None:
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
            logger.info(
                "model %s (%s, %s) loaded and verified in %.0f ms",
                model.card.name, model.revision, model.md5, model.load_seconds * 1000,
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
        gc.unfreeze()  # several apps in one process (tests): let the old one be collected

    # ---- readiness ------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons = []
        if self.model is None:
            reasons.append(f"model: {self.model_error}")
        if not self.log.prepared:
            reasons.append(f"database: not migrated yet ({self.log.last_error or 'connecting'})")
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
                "status": "failing" if self.log.last_error else "ok",
                "dialect": self.db.dialect,
                "reason": self.log.last_error,
                "buffered_rows": self.log.depth,
            },
        }
        if reasons:
            body["reason"] = "; ".join(reasons)
        return not reasons, body


PROMETHEUS = "text/plain; version=0.0.4"


def _error_spec(description: str) -> ResponseSpec:
    return ResponseSpec(ErrorOut, description=description)


# The errors any prediction request may get; each names the field when there is one.
ERRORS = {
    400: _error_spec("not JSON, or an empty body"),
    413: _error_spec("body larger than MEDCAST_MAX_BODY_BYTES"),
    422: _error_spec("a feature is missing, extra, of the wrong type, out of range or unknown"),
    429: _error_spec("rate limit exceeded (see the RateLimit-* and Retry-After headers)"),
    503: _error_spec("model not ready, or the prediction log buffer is full"),
}


def _error(status: int, detail: str, field: str | None = None, **headers: str) -> Response:
    body: dict[str, Any] = {"status_code": status, "detail": detail}
    if field is not None:
        body["field"] = field
    return Response(_encode(body), status_code=status, media_type=JSON, headers=headers or None)


def _json_schema_to_openapi(d: dict[str, Any]) -> Schema:
    return Schema(
        title=d.get("title"),
        type=OpenAPIType(d["type"]) if "type" in d else None,
        description=d.get("description"),
        properties={k: _json_schema_to_openapi(v) for k, v in d["properties"].items()}
        if "properties" in d
        else None,
        required=d.get("required"),
        additional_properties=d.get("additionalProperties"),
        items=_json_schema_to_openapi(d["items"]) if "items" in d else None,
        min_items=d.get("minItems"),
        max_items=d.get("maxItems"),
        minimum=d.get("minimum"),
        maximum=d.get("maximum"),
        enum=d.get("enum"),
        examples=d.get("examples"),
    )


def _operation_with_body(service: Service, which: str) -> type[Operation]:
    """An Operation class whose request body is built from the card when the schema is built."""

    @dataclass
    class CardOperation(Operation):
        def __post_init__(self) -> None:
            model = service.model
            if model is None:
                schema = Schema(type=OpenAPIType.OBJECT, description="model not loaded yet")
            else:
                js = (
                    model.schema.patient_json_schema()
                    if which == "one"
                    else model.schema.batch_json_schema()
                )
                schema = _json_schema_to_openapi(js)
            self.request_body = RequestBody(
                content={JSON: OpenAPIMediaType(schema=schema)}, required=True
            )

    return CardOperation


def create_app(
    settings: Settings | None = None,
    *,
    artifacts: Artifacts | None = None,
    database: Database | None = None,
) -> Litestar:
    """The app; nothing is loaded until its lifespan starts (ASGI server or TestClient)."""
    settings = settings or Settings.from_env()
    svc = Service(settings, artifacts, database)
    metrics, plog = svc.metrics, svc.log

    async def answer(request: Request, batch: bool) -> Response:
        """Both prediction routes: decode, one model call, rows offered to the log before the
        2xx (a full buffer answers 503 instead)."""
        start = time.perf_counter()
        model = svc.model
        if model is None:
            return _error(503, f"model not ready: {svc.model_error}")
        body = await request.body()
        try:
            patients = (model.schema.decode_batch(body) if batch
                        else [model.schema.decode_one(body)])
        except InputError as exc:
            return _error(exc.status, exc.detail, exc.field)
        astuple = msgspec.structs.astuple
        values = model.predict_rows([astuple(p) for p in patients]).tolist()
        rid = uuid.uuid4().hex
        latency = (time.perf_counter() - start) * 1000
        now = datetime.now(UTC)
        md5, revision, dataset = model.md5, model.revision, model.card.dataset
        rows = [LogRow(rid, i, now, md5, revision, dataset, p, v, latency)
                for i, (p, v) in enumerate(zip(patients, values, strict=True))]
        if not plog.offer(rows):
            return _error(503, "prediction log buffer is full; retry later", **{"Retry-After": "1"})
        metrics.predictions += len(rows)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s request_id=%s n=%d latency_ms=%.2f", "batch" if batch else "predict",
                         rid, len(rows), latency)
        out = (BatchOut(values, model.md5, rid, len(values)) if batch
               else PredictionOut(values[0], model.md5, rid))
        return Response(_encode(out), media_type=JSON, headers={"X-Request-ID": rid})

    @post(
        "/predict",
        status_code=200,
        summary="Predict for one patient",
        description="Body: one JSON object, one property per model feature (see GET /model).",
        operation_class=_operation_with_body(svc, "one"),
        responses={200: ResponseSpec(PredictionOut, description="the prediction"), **ERRORS},
    )
    async def predict(request: Request) -> Response:
        return await answer(request, batch=False)

    @post(
        "/predict/batch",
        status_code=200,
        summary="Predict for many patients (one model call)",
        description=f'Body: {{"instances": [...]}}, at most {settings.max_batch} objects.',
        operation_class=_operation_with_body(svc, "batch"),
        responses={200: ResponseSpec(BatchOut, description="predictions in input order"), **ERRORS},
    )
    async def predict_batch(request: Request) -> Response:
        return await answer(request, batch=True)

    @get("/model", summary="The model card of the served model")
    async def model_card() -> Response:
        model = svc.model
        if model is None:
            return _error(503, f"model not ready: {svc.model_error}")
        card = dict(model.card_dict)
        card["serving"] = {
            "md5": model.md5,
            "revision": model.revision,
            "load_ms": round(model.load_seconds * 1000, 1),
            "max_batch": settings.max_batch,
        }
        return Response(_encode(card), media_type=JSON)

    @get("/health/live", summary="The process is up")
    async def live() -> Response:
        return Response(b'{"status":"alive"}', media_type=JSON)

    @get("/health/ready", summary="Model verified and loaded, prediction log writable")
    async def ready() -> Response:
        ok, body = svc.readiness()
        return Response(_encode(body), status_code=200 if ok else 503, media_type=JSON)

    @get("/metrics", summary="Prometheus metrics", include_in_schema=True, media_type=PROMETHEUS)
    async def metrics_endpoint() -> Response:
        text = metrics.render(
            {
                "medcast_prediction_log_buffer_rows": (
                    "gauge", "Rows waiting to be written to the prediction log.", plog.depth),
                "medcast_prediction_log_rows_written_total": (
                    "counter", "Rows written to the prediction log.", plog.rows_written),
                "medcast_prediction_log_write_retries_total": (
                    "counter", "Failed prediction-log writes (retried).", plog.retries),
                "medcast_prediction_log_rejected_rows_total": (
                    "counter", "Rows refused because the buffer was full (503).", plog.rejected),
                "medcast_model_ready": (
                    "gauge", "1 when a verified model is loaded.", float(svc.model is not None)),
            }
        )
        return Response(text, media_type=PROMETHEUS)  # Litestar appends the charset

    def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if settings.api_key is None:
            raise PermissionDeniedException(
                "GET /predictions is disabled: no API key is configured "
                "(set MEDCAST_API_KEY or MEDCAST_API_KEY_FILE)"
            )
        given = connection.headers.get("x-api-key")
        if given is None or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise NotAuthorizedException("missing or wrong X-API-Key header")

    @get(
        "/predictions",
        guards=[require_api_key],
        summary="The prediction log, oldest first, paged by id (needs X-API-Key)",
        security=[{"ApiKey": []}],
        responses={k: v for k, v in ERRORS.items() if k not in (413, 422)}
        | {401: _error_spec("missing or wrong X-API-Key"),
           403: _error_spec("no API key configured: the log is disabled")},
    )
    async def predictions_page(
        after: Annotated[int, Parameter(ge=0, le=2**53,  # exact in JSON (a double)
                                        description="return rows with id > after")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> Response:
        try:
            rows = await asyncio.to_thread(fetch_page, svc.db.engine, after, limit)
        except Exception as exc:  # noqa: BLE001 - database down or not migrated
            return _error(503, f"prediction log unavailable: {type(exc).__name__}")
        nxt = rows[-1]["id"] if len(rows) == limit else None
        return Response(
            _encode({"items": rows, "next_after": nxt, "buffered_rows": plog.depth}),
            media_type=JSON,
        )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await svc.startup()
        ok, body = svc.readiness()
        level = logging.INFO if ok else logging.WARNING
        logger.log(level, "ready=%s in %.2f s after create_app%s", ok,
                   time.perf_counter() - svc.started, "" if ok else f": {body.get('reason')}")
        try:
            yield
        finally:
            await svc.shutdown()

    def log_exception(exc: Exception, scope: Any) -> None:
        if not isinstance(exc, HTTPException):  # server faults only; never the request body
            logger.error("%s %s failed: %s: %s", scope.get("method"), scope.get("path"),
                         type(exc).__name__, exc)

    middleware: list[Any] = [metrics_middleware(metrics)]
    if settings.rate_limit is not None:
        middleware.append(
            rate_limit_config(
                settings.rate_limit, ["/health/", "/metrics", "/schema", "/dashboard"]
            ).middleware
        )

    app = Litestar(
        route_handlers=[
            predict, predict_batch, model_card, live, ready, metrics_endpoint, predictions_page,
            *dashboard_handlers(settings),  # issue 7: GET / → /dashboard, page, assets, figures
        ],
        lifespan=[lifespan],
        middleware=middleware,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        after_exception=[log_exception],
        openapi_config=OpenAPIConfig(
            title="medcast",
            version="1",
            description="Predictions from the DVC-locked ONNX model; see GET /model for its card.",
            components=Components(
                security_schemes={
                    "ApiKey": SecurityScheme(
                        type="apiKey", name="X-API-Key", security_scheme_in="header"
                    )
                }
            ),
        ),
    )
    app.state.service = svc
    return app


def app_from_env() -> Litestar:
    """Factory for ASGI servers: `uvicorn --factory serve.app:app_from_env` (or granian)."""
    return create_app(Settings.from_env())
