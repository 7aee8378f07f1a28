"""The REST API's route handlers: predictions, the card, health, metrics and the prediction log.

Each handler reads the app's Service (`service_of`). The prediction routes take the body as
bytes and validate it with the decoders generated from the model card: one decode, no
coercion; a prediction's rows are offered to the log before its 2xx is sent.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from serve.db import LogRow, fetch_page
from serve.metrics import CONTENT_TYPE
from serve.openapi import ERRORS, JSON, error_response, error_spec
from serve.schemas import BatchOut, InputError, IntervalOut, PredictionOut
from serve.service import service_of

logger = logging.getLogger("medcast.serve")

_encode = msgspec.json.encode


async def _answer(request: Request[Any, Any, Any], batch: bool) -> Response:
    """Both prediction routes: decode, one model call, rows offered to the log before the
    2xx (a full buffer answers 503 instead)."""
    start = time.perf_counter()
    service = service_of(request)
    model = service.model
    if model is None:
        return error_response(503, f"model not ready: {service.model_error}")
    body = await request.body()
    try:
        patients = model.schema.decode_batch(body) if batch else [model.schema.decode_one(body)]
    except InputError as exc:
        return error_response(exc.status, exc.detail, exc.field)
    astuple = msgspec.structs.astuple
    values, lower, upper = model.predict_with_bounds([astuple(p) for p in patients])
    rid = uuid.uuid4().hex
    latency = (time.perf_counter() - start) * 1000
    now = datetime.now(UTC)
    md5, revision, dataset = model.md5, model.revision, model.card.dataset
    level = model.interval_level
    intervals = None
    if level is not None and lower is not None and upper is not None:
        rows = [LogRow(rid, i, now, md5, revision, dataset, p, v, latency, lo, hi)
                for i, (p, v, lo, hi) in enumerate(zip(patients, values, lower, upper,
                                                       strict=True))]
        intervals = [IntervalOut(level, lo, hi) for lo, hi in zip(lower, upper, strict=True)]
    else:
        rows = [LogRow(rid, i, now, md5, revision, dataset, p, v, latency)
                for i, (p, v) in enumerate(zip(patients, values, strict=True))]
    if not service.log.offer(rows):
        return error_response(503, "prediction log buffer is full; retry later",
                              **{"Retry-After": "1"})
    service.metrics.predictions.inc(len(rows))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s request_id=%s n=%d latency_ms=%.2f", "batch" if batch else "predict",
                     rid, len(rows), latency)
    out = (BatchOut(values, intervals, md5, rid, len(values)) if batch
           else PredictionOut(values[0], intervals[0] if intervals else None, md5, rid))
    return Response(_encode(out), media_type=JSON, headers={"X-Request-ID": rid})


def _answers(out: type, description: str) -> dict[int, ResponseSpec]:
    """A prediction route's documented responses: its result, or one of the ERRORS."""
    return {200: ResponseSpec(out, description=description), **ERRORS}


@post("/predict", status_code=200, summary="Predict for one patient",
      description="Body: one JSON object, one property per model feature (see GET /model).",
      responses=_answers(PredictionOut, "the prediction and its interval"))
async def predict(request: Request[Any, Any, Any]) -> Response:
    return await _answer(request, batch=False)


@post("/predict/batch", status_code=200, summary="Predict for many patients (one model call)",
      description='Body: {"instances": [...]}, at most MEDCAST_MAX_BATCH objects (maxItems).',
      responses=_answers(BatchOut, "predictions and their intervals in input order"))
async def predict_batch(request: Request[Any, Any, Any]) -> Response:
    return await _answer(request, batch=True)


@get("/model", summary="The model card of the served model")
async def model_card(request: Request[Any, Any, Any]) -> Response:
    service = service_of(request)
    model = service.model
    if model is None:
        return error_response(503, f"model not ready: {service.model_error}")
    card = dict(model.card_dict)
    card["serving"] = {
        "md5": model.md5,
        "revision": model.revision,
        "load_ms": round(model.load_seconds * 1000, 1),
        "max_batch": service.settings.max_batch,
    }
    return Response(_encode(card), media_type=JSON)


@get("/health/live", summary="The process is up")
async def live() -> Response:
    return Response(b'{"status":"alive"}', media_type=JSON)


@get("/health/ready", summary="Model verified and loaded, prediction log writable")
async def ready(request: Request[Any, Any, Any]) -> Response:
    ok, body = service_of(request).readiness()
    return Response(_encode(body), status_code=200 if ok else 503, media_type=JSON)


@get("/metrics", summary="Prometheus metrics", include_in_schema=True, media_type=CONTENT_TYPE)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response:
    text = service_of(request).metrics.render()
    return Response(text, media_type=CONTENT_TYPE)  # Litestar appends the charset


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    api_key = service_of(connection).settings.api_key
    if api_key is None:
        raise PermissionDeniedException(
            "GET /predictions is disabled: no API key is configured "
            "(set MEDCAST_API_KEY or MEDCAST_API_KEY_FILE)"
        )
    given = connection.headers.get("x-api-key")
    if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise NotAuthorizedException("missing or wrong X-API-Key header")


@get(
    "/predictions",
    guards=[require_api_key],
    summary="The prediction log, oldest first, paged by id (needs X-API-Key)",
    security=[{"ApiKey": []}],
    responses={k: v for k, v in ERRORS.items() if k not in (413, 422)}
    | {401: error_spec("missing or wrong X-API-Key"),
       403: error_spec("no API key configured: the log is disabled")},
)
async def predictions_page(
    request: Request[Any, Any, Any],
    after: Annotated[int, Parameter(ge=0, le=2**53,  # exact in JSON (a double)
                                    description="return rows with id > after")] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> Response:
    service = service_of(request)
    try:
        rows = await asyncio.to_thread(fetch_page, service.db.engine, after, limit)
    except Exception as exc:  # noqa: BLE001 - database down or not migrated
        return error_response(503, f"prediction log unavailable: {type(exc).__name__}")
    nxt = rows[-1]["id"] if len(rows) == limit else None
    return Response(
        _encode({"items": rows, "next_after": nxt, "buffered_rows": service.log.depth}),
        media_type=JSON,
    )


API = [predict, predict_batch, model_card, live, ready, metrics_endpoint, predictions_page]
