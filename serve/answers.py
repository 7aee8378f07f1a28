"""The answers' shapes: what the prediction routes return (one prediction, a batch, with their
intervals and explanations), what the prediction log keeps of an explanation, a page of the
log (GET /predictions) and every error's body. msgspec structs, encoded once per answer; the
OpenAPI document is generated from them (serve.openapi). The requests' shapes come from the
model card: serve.schemas."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec


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


class ExplanationOut(msgspec.Struct):
    """Why this prediction: each feature's Shapley contribution, in the target's units, against
    the mean prediction over background patients from the training data (interventional
    Shapley values, medcast.shapley). base_value + the sum of the contributions = the
    prediction."""

    base_value: Annotated[float, msgspec.Meta(
        description="the mean prediction over the background patients", examples=[152.1])]
    contributions: Annotated[dict[str, float], msgspec.Meta(
        description="per feature, how much its value moved this prediction away from "
                    "base_value (target units; positive: up)", examples=[{"bmi": 21.4}])]
    method: Annotated[Literal["exact", "sampling"], msgspec.Meta(
        description="exact: every coalition of features; sampling: antithetic permutation "
                    "sampling, each contribution within `margin` with 95 % confidence")]
    missing: Annotated[list[str], msgspec.Meta(
        description="the features this request left missing: the model imputed them, and "
                    "their contribution is that of the imputed value")]
    background_rows: Annotated[int, msgspec.Meta(
        description="training patients the contributions are measured against")]
    margin: Annotated[dict[str, float] | None, msgspec.Meta(
        description="sampling only: the 95 % confidence half-width of each contribution")]


class LoggedExplanation(msgspec.Struct):
    """What the prediction log keeps of an explanation (column `explanation`, with
    MEDCAST_LOG_EXPLANATIONS on): ExplanationOut without `missing` (the logged features say
    which were null) and `background_rows` (the card of the logged model says it)."""

    base_value: Annotated[float, msgspec.Meta(
        description="the mean prediction over the background patients")]
    contributions: Annotated[dict[str, float], msgspec.Meta(
        description="per feature, how much its value moved the prediction away from "
                    "base_value (target units)")]
    method: Literal["exact", "sampling"]
    margin: Annotated[dict[str, float] | None, msgspec.Meta(
        description="sampling only: the 95 % confidence half-width of each contribution")]

    @classmethod
    def of(cls, e: ExplanationOut) -> LoggedExplanation:
        return cls(e.base_value, e.contributions, e.method, e.margin)


class PredictionOut(msgspec.Struct, omit_defaults=True):
    prediction: float
    # null only for a model exported without intervals
    interval: IntervalOut | None
    model_version: str
    request_id: str
    # only with ?explain=true
    explanation: ExplanationOut | None = None


class BatchOut(msgspec.Struct, omit_defaults=True):
    predictions: list[float]
    # one per prediction, in input order; null only for a model exported without intervals
    intervals: list[IntervalOut] | None
    model_version: str
    request_id: str
    count: int
    # only with ?explain=true: one per prediction, in input order
    explanations: list[ExplanationOut] | None = None


class LoggedPrediction(msgspec.Struct):
    """One row of the prediction log as GET /predictions answers it: the columns of
    medcast.predlog's table, in order (tests/serve/test_routes.py checks them)."""

    id: int
    request_id: str
    item: int
    created_at: Annotated[str, msgspec.Meta(description="ISO-8601, UTC")]
    model_md5: str
    model_revision: str
    dataset: str
    features: dict[str, Any]
    prediction: float
    latency_ms: float
    client: str | None
    lower: float | None
    upper: float | None
    explanation: Annotated[LoggedExplanation | None, msgspec.Meta(
        description="kept only with MEDCAST_LOG_EXPLANATIONS on, for a prediction asked "
                    "with ?explain=true; else null")]


class PredictionsPage(msgspec.Struct):
    """GET /predictions: a page of the log and the cursor of the next (null: no more rows);
    `next_after` in ascending order, `next_before` with order=desc."""

    items: list[LoggedPrediction]
    client: Annotated[str | None, msgspec.Meta(
        description="whose rows these are (a client's key), null for every client's")]
    buffered_rows: Annotated[int, msgspec.Meta(
        description="rows of this process not yet written to the database")]
    next_after: int | None = None
    next_before: int | None = None
