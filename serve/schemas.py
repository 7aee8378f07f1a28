"""The request/response shapes, derived from the model card (medcast.card: its one definition
and `parse_card`, with which serve.model loads it).

The per-feature request schema is dynamic (it comes with the model), so it is generated from the
card at load time with `msgspec.defstruct`: one strict msgspec decoder validates a request body
(types, ranges, categories, missing and unknown fields) in one pass, and the same card yields the
OpenAPI schema. msgspec never coerces ("42" is not a number, `true` is not a number) and JSON has
no NaN/inf literals (1e999 overflows and is refused), so a decoded value is always usable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from medcast.card import Feature, ModelCard

# ---- requests -------------------------------------------------------------------------------


class InputError(Exception):
    """A request body the model cannot take; `status` is 400 (not JSON) or 422 (not valid)."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"field `(?P<name>[^`]+)`")


def _input_error(exc: msgspec.DecodeError, what: str) -> InputError:
    message = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return InputError(400, f"request body is not valid JSON: {message}")
    path = ""
    if m := _AT.search(message):
        path = m["path"].lstrip(".")
    field = None
    if m := _NAMED.search(message):  # missing/unknown field: the name is in the message
        field = f"{path}.{m['name']}" if path else m["name"]
    elif path:
        field = path
    return InputError(422, f"invalid {what}: {message}", field)


class ErrorOut(msgspec.Struct):
    """Every 4xx/5xx body: the status, what is wrong, and the offending field when there is one."""

    status_code: int
    detail: str
    field: str | None = None


class IntervalOut(msgspec.Struct):
    """A prediction interval: the true value lies in [lower, upper] for a share `level` of
    patients (conformal, calibrated on the training data; coverage measured on the test set)."""

    level: Annotated[float, msgspec.Meta(
        gt=0, lt=1, examples=[0.9],
        description="the share of patients whose true value falls inside (0.9: 9 in 10)")]
    lower: Annotated[float, msgspec.Meta(description="lower bound, in the target's units",
                                         examples=[60.5])]
    upper: Annotated[float, msgspec.Meta(description="upper bound, in the target's units",
                                         examples=[245.2])]


class PredictionOut(msgspec.Struct):
    prediction: float
    # null only for a model exported without intervals
    interval: IntervalOut | None
    model_version: str
    request_id: str


class BatchOut(msgspec.Struct):
    predictions: list[float]
    # one per prediction, in input order; null only for a model exported without intervals
    intervals: list[IntervalOut] | None
    model_version: str
    request_id: str
    count: int


@dataclass(frozen=True)
class RequestSchema:
    """Decoders for one patient and for a batch, generated from a card."""

    features: tuple[Feature, ...]
    max_batch: int
    patient_type: type
    batch_type: type

    @classmethod
    def from_card(cls, card: ModelCard, max_batch: int) -> RequestSchema:
        fields: list[tuple[str, Any]] = []
        rename: dict[str, str] = {}
        for i, f in enumerate(card.features):
            # Python-safe attribute names; JSON keys are the feature names (any string).
            attr = f"f{i}"
            rename[attr] = f.name
            if f.nullable:  # null, or the field left out, is a missing value
                fields.append((attr, _field_type(f) | None, None))
            else:
                fields.append((attr, _field_type(f)))
        patient = msgspec.defstruct(
            "Patient", fields, rename=rename, forbid_unknown_fields=True, kw_only=True
        )
        instances = Annotated[list[patient], msgspec.Meta(min_length=1, max_length=max_batch)]
        batch = msgspec.defstruct("Batch", [("instances", instances)], forbid_unknown_fields=True)
        return cls(tuple(card.features), max_batch, patient, batch)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_one", msgspec.json.Decoder(self.patient_type))
        object.__setattr__(self, "_many", msgspec.json.Decoder(self.batch_type))

    def decode_one(self, body: bytes) -> Any:
        if not body:
            raise InputError(400, "request body is empty: expected a JSON object of features")
        try:
            return self._one.decode(body)  # type: ignore[attr-defined]
        except msgspec.DecodeError as exc:
            raise _input_error(exc, "patient features") from None

    def decode_batch(self, body: bytes) -> list[Any]:
        if not body:
            raise InputError(400, 'request body is empty: expected {"instances": [...]}')
        try:
            return self._many.decode(body).instances  # type: ignore[attr-defined]
        except msgspec.ValidationError as exc:
            if str(exc).startswith("Expected `array` of length <="):
                raise InputError(
                    422, f"too many instances: at most {self.max_batch} per request", "instances"
                ) from None
            raise _input_error(exc, "batch") from None
        except msgspec.DecodeError as exc:
            raise _input_error(exc, "batch") from None

    # ---- OpenAPI (plain JSON Schema dicts; app.py wraps them) ---------------------------------

    def patient_json_schema(self) -> dict[str, Any]:
        properties = {f.name: _property_schema(f) for f in self.features}
        return {
            "title": "Patient",
            "type": "object",
            "properties": properties,
            "required": [f.name for f in self.features if not f.nullable],
            "additionalProperties": False,
        }

    def batch_json_schema(self) -> dict[str, Any]:
        return {
            "title": "Batch",
            "type": "object",
            "properties": {
                "instances": {
                    "type": "array",
                    "items": self.patient_json_schema(),
                    "minItems": 1,
                    "maxItems": self.max_batch,
                }
            },
            "required": ["instances"],
            "additionalProperties": False,
        }


def _field_type(f: Feature) -> Any:
    if f.type == "category":
        return Literal[tuple(f.categories or ())]  # type: ignore[misc]
    if f.type == "int":
        # JSON Schema's "integer" includes 50.0: accept any whole number, refuse fractions.
        lo = None if f.min is None else math.ceil(f.min)
        hi = None if f.max is None else math.floor(f.max)
        return Annotated[float, msgspec.Meta(ge=lo, le=hi, multiple_of=1)]
    if (f.min, f.max) != (None, None):
        return Annotated[float, msgspec.Meta(ge=f.min, le=f.max)]
    return float


def _property_schema(f: Feature) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if f.type == "category":
        out = {"type": "string", "enum": list(f.categories or ())}
    else:
        num = (lambda v: math.ceil(v)) if f.type == "int" else (lambda v: v)
        out = {"type": "integer" if f.type == "int" else "number"}
        if f.min is not None:
            out["minimum"] = num(f.min)
        if f.max is not None:
            out["maximum"] = math.floor(f.max) if f.type == "int" else f.max
        if f.observed_min is not None:
            out["examples"] = [num(f.observed_min)]
    description = f.unit or ""
    if f.observed_min is not None and f.observed_max is not None:
        description += f"{'; ' if description else ''}seen in training: "
        description += f"{f.observed_min:g}–{f.observed_max:g}"
    if f.nullable:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        description += f"{'; ' if description else ''}may be null or left out (missing)"
    if description:
        out["description"] = description
    return out


def example_patient(features: tuple[Feature, ...] | list[Feature]) -> dict[str, Any]:
    """A valid patient (mid-range values, first category): the warm-up row and docs example."""
    out: dict[str, Any] = {}
    for f in features:
        if f.type == "category":
            out[f.name] = (f.categories or [""])[0]
            continue
        lo = f.observed_min if f.observed_min is not None else f.min
        hi = f.observed_max if f.observed_max is not None else f.max
        value = (lo + hi) / 2 if lo is not None and hi is not None else (lo or hi or 0.0)
        if f.min is not None:
            value = max(value, f.min)
        if f.max is not None:
            value = min(value, f.max)
        out[f.name] = round(value) if f.type == "int" else value
    return out
