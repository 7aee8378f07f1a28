"""A prediction request answered, whatever carries it: `answer(service, scope, read_body,
batch)` decodes the body, makes one model call, records the rows in the prediction log before
the 2xx (a full buffer, or no commit in time, answers 503 instead) and returns the `Reply`:
status, JSON body, headers. With `?explain=true`, each row's explanation too (serve.explain),
computed off the event loop.

Two callers: the Litestar handlers of `POST /predict` and `POST /predict/batch`
(serve.routes), and the hot path of `POST /predict` (serve.hotpath). Nothing here imports
Litestar.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import msgspec

from serve.answers import BatchOut, IntervalOut, LoggedExplanation, PredictionOut
from serve.db import LogRow
from serve.schemas import InputError
from serve.service import Service, client_of

logger = logging.getLogger("medcast.serve")

_encode = msgspec.json.encode
UNAUTHORIZED = "missing or wrong X-API-Key header"  # one message: no hint which part was wrong


class Reply(NamedTuple):
    """An answer before it is sent: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None


def error_reply(status: int, detail: str, field: str | None = None, **headers: str) -> Reply:
    """An ErrorOut body (serve.answers): the status, what is wrong, and the offending field
    when there is one."""
    body: dict[str, Any] = {"status_code": status, "detail": detail}
    if field is not None:
        body["field"] = field
    return Reply(status, _encode(body), headers or None)


def explain_asked(query: bytes) -> bool:
    """`?explain=true|false` (also 1|0, any case; absent: false). Read here, not declared in
    the handlers' signatures: Litestar would then parse the query of every prediction (6-13 %
    of /predict's rate at 16 connections, bench.serve --against); serve.openapi documents it.
    Anything else is a 400 naming `explain`."""
    if not query:
        return False
    values = parse_qs(query.decode("latin-1"), keep_blank_values=True).get("explain")
    if not values:
        return False
    value = values[-1].lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InputError(400, f"query parameter explain: expected true or false, got {values[-1]!r}",
                     "explain")


async def answer(service: Service, scope: Any, read_body: Callable[[], Awaitable[bytes]],
                 batch: bool) -> Reply:
    """Both prediction routes, from the ASGI scope and the request body's reader."""
    start = time.perf_counter()
    try:
        explain = explain_asked(scope["query_string"])
    except InputError as exc:
        return error_reply(exc.status, exc.detail, exc.field)
    # Client keys on (MEDCAST_CLIENTS_FILE): a client's key first. Checked here rather than by a
    # route guard, which Litestar runs with a copy of the handler: 8% of the route's req/s.
    if service.clients is not None and client_of(scope) is None:
        return error_reply(401, UNAUTHORIZED)
    model = service.model
    if model is None:
        return error_reply(503, f"model not ready: {service.model_error}")
    body = await read_body()
    try:
        patients = model.schema.decode_batch(body) if batch else [model.schema.decode_one(body)]
    except InputError as exc:
        return error_reply(exc.status, exc.detail, exc.field)
    astuple = msgspec.structs.astuple
    rows = [astuple(p) for p in patients]
    explanations = None
    if explain:
        if model.explainer is None:
            return error_reply(422, "this model's card has no explainer (exported before "
                               "explanations, or without them): ask without explain=true",
                               "explain")
        if len(rows) > service.settings.max_explain:
            return error_reply(422, f"explain=true takes at most {service.settings.max_explain}"
                               f" patients per batch (MEDCAST_MAX_EXPLAIN), got {len(rows)}",
                               "explain")
        explanations = await asyncio.to_thread(model.explainer.explain_rows, rows)
    coalescer = service.coalescer if not batch else None
    # A coalesced request waits for the others of its commit from here (serve.coalesce): the
    # log's flush window counts from this moment, not once more after the call.
    since = time.monotonic() if coalescer is not None else None
    values, lower, upper = (await coalescer.predict(rows) if coalescer is not None
                            else model.predict_with_bounds(rows))
    rid = os.urandom(16).hex()  # 128 bits from the OS's CSPRNG; uuid4().hex costs 4× more
    latency = (time.perf_counter() - start) * 1000
    now = datetime.now(UTC)
    md5, revision, dataset = model.md5, model.revision, model.card.dataset
    client = client_of(scope)
    level = model.interval_level
    intervals = None
    if level is not None and lower is not None and upper is not None:
        logged = [LogRow(rid, i, now, md5, revision, dataset, p, v, latency, client, lo, hi)
                  for i, (p, v, lo, hi) in enumerate(zip(patients, values, lower, upper,
                                                         strict=True))]
        intervals = [IntervalOut(level, lo, hi) for lo, hi in zip(lower, upper, strict=True)]
    else:
        logged = [LogRow(rid, i, now, md5, revision, dataset, p, v, latency, client)
                  for i, (p, v) in enumerate(zip(patients, values, strict=True))]
    if explanations is not None and service.settings.log_explanations:  # off: nothing done
        for row, e in zip(logged, explanations, strict=True):
            row.explanation = LoggedExplanation.of(e)
    refused = await service.log.record(logged, since)  # ack: returns once the rows are committed
    if refused is not None:  # X-Request-ID: its row may still appear (see serve.log)
        return error_reply(503, refused, **{"Retry-After": "1", "X-Request-ID": rid})
    service.metrics.predictions.inc(len(logged))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s request_id=%s n=%d latency_ms=%.2f", "batch" if batch else "predict",
                     rid, len(logged), latency)
    out = (BatchOut(values, intervals, md5, rid, len(values), explanations) if batch
           else PredictionOut(values[0], intervals[0] if intervals else None, md5, rid,
                              explanations[0] if explanations else None))
    return Reply(200, _encode(out), {"X-Request-ID": rid})
