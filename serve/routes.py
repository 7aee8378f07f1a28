"""The REST API's route handlers: predictions, the card, health, metrics and the prediction log.

Each handler reads the app's Service (`service_of`). The prediction routes take the body as
bytes and validate it with the decoders generated from the model card: one decode, no
coercion; a prediction's 2xx is sent only once its rows are committed (MEDCAST_LOG_DURABILITY=ack)
or buffered (`buffered`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from serve.answers import BatchOut, PredictionOut, PredictionsPage
from serve.db import fetch_page
from serve.openapi import ERRORS, JSON, error_response, error_spec, to_response
from serve.predict import UNAUTHORIZED, answer
from serve.prometheus import CONTENT_TYPE
from serve.served import ModelOut, ServingOut
from serve.service import caller_of, client_of, service_of

logger = logging.getLogger("medcast.serve")

_encode = msgspec.json.encode
def _answers(out: type, description: str) -> dict[int, ResponseSpec]:
    """A prediction route's documented responses: its result, or one of the ERRORS."""
    return {200: ResponseSpec(out, description=description),
            401: error_spec("client keys are on and X-API-Key is missing or wrong"), **ERRORS}


@post("/predict", status_code=200, summary="Predict for one patient",
      description="Body: one JSON object, one property per model feature (see GET /model).",
      security=[{"ApiKey": []}],
      responses=_answers(PredictionOut, "the prediction and its interval"))
async def predict(request: Request[Any, Any, Any]) -> Response:
    return to_response(await answer(service_of(request), request.scope, request.body, False))


@post("/predict/batch", status_code=200, summary="Predict for many patients (one model call)",
      description='Body: {"instances": [...]}, at most MEDCAST_MAX_BATCH objects (maxItems).',
      security=[{"ApiKey": []}],
      responses=_answers(BatchOut, "predictions and their intervals in input order"))
async def predict_batch(request: Request[Any, Any, Any]) -> Response:
    return to_response(await answer(service_of(request), request.scope, request.body, True))


@get("/model", summary="The model card of the served model",
      description="The card (as the export wrote it) and `serving`: the md5, the load time, "
                  "and where the model came from (`serving.source`: the workspace, a git "
                  "revision, or a registered version and the alias it was loaded by).",
      responses={200: ResponseSpec(ModelOut, description="the card and how it is served"),
                 503: error_spec("no model loaded yet, or it was refused (the reason)")})
async def model_card(request: Request[Any, Any, Any]) -> Response:
    service = service_of(request)
    model = service.model
    if model is None:
        return error_response(503, f"model not ready: {service.model_error}")
    card = dict(model.card_dict)  # as written: also the keys of older cards (medcast.card)
    if model.card.explainer is not None:  # its background rows are patients: only counted
        card["explainer"] = {"background_rows": len(model.card.explainer.background),
                             **{k: v for k, v in model.card_dict["explainer"].items()
                                if k != "background"}}
    card["serving"] = ServingOut(md5=model.md5, revision=model.revision,
                                 load_ms=round(model.load_seconds * 1000, 1),
                                 max_batch=service.settings.max_batch, source=model.source)
    return Response(_encode(card), media_type=JSON)


@get("/health/live", summary="The process is up")
async def live() -> Response:
    return Response(b'{"status":"alive"}', media_type=JSON)


@get("/health/ready", summary="Model verified and loaded, prediction log writable")
async def ready(request: Request[Any, Any, Any]) -> Response:
    ok, body = await service_of(request).readiness_now()
    return Response(_encode(body), status_code=200 if ok else 503, media_type=JSON)


@get("/metrics", summary="Prometheus metrics", include_in_schema=True, media_type=CONTENT_TYPE)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response:
    text = service_of(request).metrics.render()
    return Response(text, media_type=CONTENT_TYPE)  # Litestar appends the charset


async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """GET /predictions: MEDCAST_API_KEY (an auditor's key) or, with client keys on, a key of
    the clients file (a client's: the handler keeps it to its own rows; an auditor's); neither
    configured: the route is disabled."""
    service = service_of(connection)
    api_key = service.settings.api_key
    if api_key is None and service.clients is None:
        raise PermissionDeniedException(
            "GET /predictions is disabled: no API key is configured (set MEDCAST_API_KEY, "
            "MEDCAST_API_KEY_FILE or MEDCAST_CLIENTS_FILE)"
        )
    if caller_of(connection.scope) is not None:
        return
    given = connection.headers.get("x-api-key")
    if api_key is not None and given is not None and hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(api_key.encode()).digest()
    ):
        return
    raise NotAuthorizedException(UNAUTHORIZED)


def _instant(name: str, raw: str | None) -> datetime | None:
    """An ISO-8601 query value as an aware UTC datetime (no offset: UTC); ValueError names it.
    A bound whose offset carries it past year 1 or 9999 is clamped there (same rows). An
    empty value never gets here: the parameters' minLength answers it 400, as the schema says."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an ISO-8601 date or time, e.g. "
                         "2026-01-31T12:00:00+00:00") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


_TIME = "date-time"  # documented as RFC 3339; any ISO-8601 form Python reads is taken


@get(
    "/predictions",
    guards=[require_api_key],
    summary="The prediction log, paged by id (needs X-API-Key)",
    description="Rows with after < id < before, oldest first (next page: `after=next_after`) "
                "or newest first with `order=desc` (next page: `before=next_before`); "
                "optionally one client's rows and a time window (`since` ≤ created_at < "
                "`until`, ISO-8601; no offset: UTC). A client's key reads only its own rows "
                "(`client` in the page names whose rows they are: null for every client's); "
                "an auditor's key (MEDCAST_API_KEY, or role=auditor in the clients file) "
                "reads every row.",
    security=[{"ApiKey": []}],
    responses={200: ResponseSpec(PredictionsPage, description="a page of the log")}
    | {k: v for k, v in ERRORS.items() if k != 413}
    | {401: error_spec("missing or wrong X-API-Key"),
       403: error_spec("no API key configured (the log is disabled), or a client's key asked "
                       "for another client's rows"),
       422: error_spec("`since` or `until` is not an ISO-8601 time")},
)
async def predictions_page(
    request: Request[Any, Any, Any],
    after: Annotated[int, Parameter(ge=0, le=2**53,  # exact in JSON (a double)
                                    description="rows with id > after")] = 0,
    before: Annotated[int, Parameter(ge=0, le=2**53,
                                     description="rows with id < before (0: no bound)")] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    order: Annotated[Literal["asc", "desc"], Parameter(description="by id")] = "asc",
    client: Annotated[str | None, Parameter(min_length=1, max_length=100, description=(
        "only this client's rows (with a client's key: its own name, or leave it out)"))] = None,
    since: Annotated[str | None, Parameter(min_length=1, max_length=64,
                                           schema_extra={"format": _TIME},
                                           description="created_at ≥ since")] = None,
    until: Annotated[str | None, Parameter(min_length=1, max_length=64,
                                           schema_extra={"format": _TIME},
                                           description="created_at < until")] = None,
) -> Response:
    service = service_of(request)
    own = client_of(request.scope)
    if own is not None:  # a client's key: its own rows, whatever it asks
        if client not in (None, own):
            return error_response(403, f"a client's key reads only its own rows: give "
                                  f"client={own} or leave client out", "client")
        client = own
    try:
        window = _instant("since", since), _instant("until", until)
    except ValueError as exc:
        return error_response(422, str(exc), str(exc).partition("=")[0])
    descending = order == "desc"
    try:
        rows = await asyncio.to_thread(fetch_page, service.db.engine, after or None, limit,
                                       before=before or None, descending=descending,
                                       client=client, since=window[0], until=window[1])
    except Exception as exc:  # noqa: BLE001 - database down or not migrated
        return error_response(503, f"prediction log unavailable: {type(exc).__name__}")
    nxt = rows[-1]["id"] if len(rows) == limit else None
    page: dict[str, Any] = {"items": rows, "client": client}
    page["next_before" if descending else "next_after"] = nxt
    page["buffered_rows"] = service.log.depth
    return Response(_encode(page), media_type=JSON)


API = [predict, predict_batch, model_card, live, ready, metrics_endpoint, predictions_page]
