"""What the API documents and how it fails: the error body and the responses every route may
give, the hook that logs server faults, and the OpenAPI document, whose prediction request
bodies come from the card of the served model.

The prediction routes read their body as bytes (one msgspec decode, see serve.schemas), so
Litestar cannot infer their request schema; `add_card_bodies` adds it to the app's document
before the document is first built and cached (the first request under /schema).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, Router
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from serve.answers import ErrorOut
from serve.predict import Reply, error_reply
from serve.schemas import RequestSchema
from serve.service import service_of

logger = logging.getLogger("medcast.serve")

JSON = "application/json"
_encode = msgspec.json.encode

# path → the JSON Schema of its request body, from the served card.
CARD_BODIES: dict[str, Callable[[RequestSchema], dict[str, Any]]] = {
    "/predict": RequestSchema.patient_json_schema,
    "/predict/batch": RequestSchema.batch_json_schema,
}


def error_spec(description: str) -> ResponseSpec:
    return ResponseSpec(ErrorOut, description=description)


# The errors any prediction request may get; each names the field when there is one.
ERRORS = {
    400: error_spec("not JSON, or an empty body"),
    413: error_spec("body larger than MEDCAST_MAX_BODY_BYTES"),
    422: error_spec("a feature is missing, extra, of the wrong type, out of range or unknown"),
    429: error_spec("rate limit exceeded (see the RateLimit-* and Retry-After headers)"),
    503: error_spec("model not ready, the prediction log buffer is full, or its row was not "
                    "committed in time (MEDCAST_LOG_DURABILITY=ack); retry after Retry-After"),
}


def error_response(status: int, detail: str, field: str | None = None,
                   **headers: str) -> Response:
    """An ErrorOut body: the status, what is wrong, and the offending field when there is one."""
    return to_response(error_reply(status, detail, field, **headers))


def to_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=JSON, headers=reply.headers)


def log_exception(exc: Exception, scope: Any) -> None:
    """after_exception hook: server faults only, never the request body."""
    if not isinstance(exc, HTTPException):
        logger.error("%s %s failed: %s: %s", scope.get("method"), scope.get("path"),
                     type(exc).__name__, exc)


def _type(value: str | list[str]) -> OpenAPIType | list[OpenAPIType]:
    """A JSON Schema type, or a list of them (["number", "null"]: a nullable feature)."""
    return [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)


def json_schema_to_openapi(d: dict[str, Any]) -> Schema:
    return Schema(
        title=d.get("title"),
        type=_type(d["type"]) if "type" in d else None,
        description=d.get("description"),
        properties={k: json_schema_to_openapi(v) for k, v in d["properties"].items()}
        if "properties" in d
        else None,
        required=d.get("required") or None,
        additional_properties=d.get("additionalProperties"),
        items=json_schema_to_openapi(d["items"]) if "items" in d else None,
        any_of=[json_schema_to_openapi(v) for v in d["anyOf"]] if "anyOf" in d else None,
        pattern=d.get("pattern"),
        min_items=d.get("minItems"),
        max_items=d.get("maxItems"),
        minimum=d.get("minimum"),
        maximum=d.get("maximum"),
        enum=d.get("enum"),
        examples=d.get("examples"),
    )


# ?explain=true, read by serve.predict.explain_asked (not a handler parameter: see there).
EXPLAIN = Parameter(
    name="explain", param_in="query", required=False,
    schema=Schema(type=OpenAPIType.BOOLEAN, default=False),
    description="true: also each prediction's explanation, the Shapley contribution of every "
                "feature (`explanation`; in a batch, `explanations`, at most MEDCAST_MAX_EXPLAIN "
                "rows). A model whose card has no explainer answers 422.")


async def add_card_bodies(request: Request[Any, Any, Any]) -> None:
    """before_request of every /schema route: the prediction routes' request bodies, from the
    card of the model being served, into the app's OpenAPI document (once); without client keys
    (MEDCAST_CLIENTS_FILE) they need no key, and the document says so."""
    document = request.app.openapi_schema
    service = service_of(request)
    model = service.model
    for path, body_of in CARD_BODIES.items():
        operation = document.paths[path].post if document.paths else None
        if operation is None or operation.request_body is not None:
            continue
        if service.clients is None:
            operation.security = None
            if operation.responses:
                operation.responses.pop("401", None)
        schema = (json_schema_to_openapi(body_of(model.schema)) if model is not None
                  else Schema(type=OpenAPIType.OBJECT, description="model not loaded yet"))
        operation.request_body = RequestBody(
            content={JSON: OpenAPIMediaType(schema=schema)}, required=True
        )
        operation.parameters = [*(operation.parameters or []), EXPLAIN]


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="medcast",
        version="1",
        description="Predictions from the DVC-locked ONNX model; see GET /model for its card.",
        components=Components(
            security_schemes={
                "ApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header")
            }
        ),
        openapi_router=Router("/schema", route_handlers=[], before_request=add_card_bodies,
                              include_in_schema=False),
    )
