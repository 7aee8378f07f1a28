"""The request shapes, derived from the model card (medcast.card: its one definition and
`parse_card`, with which serve.model loads it); the answers' are serve.answers.

The per-feature request schema is dynamic (it comes with the model), so it is generated from the
card at load time with `msgspec.defstruct`: one strict msgspec decoder validates a request body
(types, ranges, categories, missing and unknown fields) in one pass, and the same card yields the
OpenAPI schema. msgspec never coerces ("42" is not a number, `true` is not a number) and JSON has
no NaN/inf literals (1e999 overflows and is refused), so a decoded value is always usable.

A category value is read as training reads a raw table's cell (medcast.cells): surrounding
whitespace is no part of it (" Yes" is the level "Yes"), and for a feature whose levels are all
integer codes ("1", "2") a JSON number is its text (1 and 1.0 are "1"; 1.5, "01", "1.0" and
`true` are no level). The strict decoder takes the card's own form only, so a request in that
form costs one decode as before; only one that fails it is decoded again by a second decoder
that takes any string (or number, for codes) there, and each such value is replaced by its level
or refused (422 naming the field). Either way the patient holds the levels as the card writes
them, so the model and the prediction log see one form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import msgspec

from medcast.card import Feature, ModelCard
from medcast.cells import cell_text, text_of

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


# ---- category values ------------------------------------------------------------------------

_CODE = re.compile(r"0|-?[1-9][0-9]*")  # an integer as a CSV holds it (medcast.cells.text_of)


def integer_coded(levels: Sequence[str]) -> bool:
    """Every level is an integer code ("1", "2"; not "01", "1.0" or "yes"): then a JSON number
    is taken for it too, as training takes a typed (Parquet) cell."""
    return bool(levels) and all(_CODE.fullmatch(c) for c in levels)


@dataclass(frozen=True)
class Category:
    """A category feature of the card: its Struct attribute, its name and its levels."""

    attr: str
    name: str
    levels: tuple[str, ...]
    coded: bool  # integer codes: JSON numbers are taken too

    def level_of(self, value: str | int | float) -> str | None:
        """The level a sent value is, as training reads a cell (medcast.cells), or None."""
        text = cell_text(value) if isinstance(value, str) else text_of(value)
        return text if text in self.levels else None

    def refusal(self, value: Any, what: str, at: str) -> InputError:
        """422 for a value that is no level, in msgspec's words (field named, its path last)."""
        field = f"{at}{self.name}"
        expected = ", ".join(repr(c) for c in self.levels)
        if self.coded:
            expected += f" (or the numbers {', '.join(self.levels)})"
        return InputError(422, f"invalid {what}: Invalid enum value {value!r}: expected one of "
                               f"{expected}, surrounding whitespace ignored - at `$.{field}`", field)


# ---- the decoders ---------------------------------------------------------------------------


def _structs(card: ModelCard, max_batch: int, lenient: bool) -> tuple[type, type]:
    """The Patient and Batch Structs of a card; `lenient`: a category field takes any string
    (and number, for codes), to be read as a level afterwards."""
    fields: list[tuple[str, Any]] = []
    rename: dict[str, str] = {}
    for i, f in enumerate(card.features):
        # Python-safe attribute names; JSON keys are the feature names (any string).
        attr = f"f{i}"
        rename[attr] = f.name
        kind = _field_type(f, lenient)
        if f.nullable:  # null, or the field left out, is a missing value
            fields.append((attr, kind | None, None))
        else:
            fields.append((attr, kind))
    patient = msgspec.defstruct(
        "Patient", fields, rename=rename, forbid_unknown_fields=True, kw_only=True
    )
    instances = Annotated[list[patient], msgspec.Meta(min_length=1, max_length=max_batch)]
    batch = msgspec.defstruct("Batch", [("instances", instances)], forbid_unknown_fields=True)
    return patient, batch


def _too_many(exc: msgspec.ValidationError, max_batch: int) -> InputError | None:
    if str(exc).startswith("Expected `array` of length <="):
        return InputError(422, f"too many instances: at most {max_batch} per request", "instances")
    return None


@dataclass(frozen=True)
class RequestSchema:
    """Decoders for one patient and for a batch, generated from a card."""

    features: tuple[Feature, ...]
    max_batch: int
    patient_type: type  # the card's exact form: what the hot path decodes
    batch_type: type
    categories: tuple[Category, ...] = ()

    @classmethod
    def from_card(cls, card: ModelCard, max_batch: int) -> RequestSchema:
        patient, batch = _structs(card, max_batch, lenient=False)
        categories = tuple(Category(f"f{i}", f.name, tuple(f.categories or ()),
                                    integer_coded(f.categories or ()))
                           for i, f in enumerate(card.features) if f.type == "category")
        schema = cls(tuple(card.features), max_batch, patient, batch, categories)
        if categories:  # the second decoder, for category values in another form
            one, many = _structs(card, max_batch, lenient=True)
            object.__setattr__(schema, "_lenient_one", msgspec.json.Decoder(one))
            object.__setattr__(schema, "_lenient_many", msgspec.json.Decoder(many))
        return schema

    def __post_init__(self) -> None:
        object.__setattr__(self, "_one", msgspec.json.Decoder(self.patient_type))
        object.__setattr__(self, "_many", msgspec.json.Decoder(self.batch_type))

    def decode_one(self, body: bytes) -> Any:
        what = "patient features"
        if not body:
            raise InputError(400, "request body is empty: expected a JSON object of features")
        try:
            return self._one.decode(body)  # type: ignore[attr-defined]
        except msgspec.ValidationError as exc:
            if not self.categories:
                raise _input_error(exc, what) from None
        except msgspec.DecodeError as exc:
            raise _input_error(exc, what) from None
        try:  # not the card's form: maybe a category value as training would read it
            patient = self._lenient_one.decode(body)  # type: ignore[attr-defined]
        except msgspec.DecodeError as exc:
            raise _input_error(exc, what) from None
        self._as_levels(patient, what, "")
        return patient

    def decode_batch(self, body: bytes) -> list[Any]:
        if not body:
            raise InputError(400, 'request body is empty: expected {"instances": [...]}')
        try:
            return self._many.decode(body).instances  # type: ignore[attr-defined]
        except msgspec.ValidationError as exc:
            if (too_many := _too_many(exc, self.max_batch)) is not None:
                raise too_many from None
            if not self.categories:
                raise _input_error(exc, "batch") from None
        except msgspec.DecodeError as exc:
            raise _input_error(exc, "batch") from None
        try:
            patients = self._lenient_many.decode(body).instances  # type: ignore[attr-defined]
        except msgspec.ValidationError as exc:
            raise _too_many(exc, self.max_batch) or _input_error(exc, "batch") from None
        for i, patient in enumerate(patients):
            self._as_levels(patient, "batch", f"instances[{i}].")
        return patients

    def _as_levels(self, patient: Any, what: str, at: str) -> None:
        """Each category value of a leniently decoded patient replaced by its level, or
        InputError naming the first that is none."""
        for c in self.categories:
            value = getattr(patient, c.attr)
            if value is not None:
                level = c.level_of(value)
                if level is None:
                    raise c.refusal(value, what, at)
                setattr(patient, c.attr, level)

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


def _field_type(f: Feature, lenient: bool = False) -> Any:
    if f.type == "category":
        if lenient:
            return str | int | float if integer_coded(f.categories or ()) else str
        return Literal[tuple(f.categories or ())]  # type: ignore[misc]
    if f.type == "int":
        # JSON Schema's "integer" includes 50.0: accept any whole number, refuse fractions.
        lo = None if f.min is None else math.ceil(f.min)
        hi = None if f.max is None else math.floor(f.max)
        return Annotated[float, msgspec.Meta(ge=lo, le=hi, multiple_of=1)]
    if (f.min, f.max) != (None, None):
        return Annotated[float, msgspec.Meta(ge=f.min, le=f.max)]
    return float


@cache
def _whitespace() -> str:
    """A regex class of the characters `str.strip()` removes (none is above U+3000), written as
    \\uXXXX escapes, which ECMA-262 (JSON Schema's regex dialect) and Python read alike."""
    points = [i for i in range(0x3001) if chr(i).isspace()]
    runs: list[list[int]] = []
    for i in points:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return "[" + "".join(f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in runs) + "]"


def _regex_literal(text: str) -> str:
    """`text` matched literally, escaping only regex syntax characters (an escaped letter or
    space is an error in ECMA-262's unicode mode)."""
    return re.sub(r"([\^$\\.*+?()\[\]{}|/])", r"\\\1", text)


def _category_schema(f: Feature) -> tuple[dict[str, Any], str]:
    """A category property: its exact values (the levels; for integer codes also as numbers;
    null when it may be missing) or a level padded with whitespace; and what to say of it."""
    levels = list(f.categories or ())
    exact: list[Any] = list(levels)
    note = "surrounding whitespace is ignored"
    if integer_coded(levels):
        exact += [int(c) for c in levels]
        note = f"integer codes: {levels[0]!r} or {levels[0]} alike; {note}"
    if f.nullable:
        exact.append(None)
    ws = _whitespace()
    padded = f"^{ws}*(?:{'|'.join(_regex_literal(c) for c in levels)}){ws}*$"
    return {"anyOf": [{"enum": exact}, {"type": "string", "pattern": padded}]}, note


def _property_schema(f: Feature) -> dict[str, Any]:
    out: dict[str, Any] = {}
    notes = [f.unit] if f.unit else []
    if f.type == "category":
        out, note = _category_schema(f)
        notes.append(note)
    else:
        num = (lambda v: math.ceil(v)) if f.type == "int" else (lambda v: v)
        out = {"type": "integer" if f.type == "int" else "number"}
        if f.min is not None:
            out["minimum"] = num(f.min)
        if f.max is not None:
            out["maximum"] = math.floor(f.max) if f.type == "int" else f.max
        if f.observed_min is not None:
            out["examples"] = [num(f.observed_min)]
        if f.nullable:
            out["type"] = [out["type"], "null"]
    if f.observed_min is not None and f.observed_max is not None:
        notes.append(f"seen in training: {f.observed_min:g}–{f.observed_max:g}")
    if f.nullable:
        notes.append("may be null or left out (missing)")
    if notes:
        out["description"] = "; ".join(notes)
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
