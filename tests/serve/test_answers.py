"""serve.answers: what the prediction routes send (an explanation only when asked), what the
log keeps of an explanation, and every error's body."""

from __future__ import annotations

import msgspec

from serve.answers import (
    BatchOut,
    ErrorOut,
    ExplanationOut,
    IntervalOut,
    LoggedExplanation,
    PredictionOut,
)

EXPLANATION = ExplanationOut(150.0, {"bmi": 21.4, "age": -3.0}, "sampling", ["bp"], 25,
                             {"bmi": 0.5, "age": 0.2})


def test_a_prediction_carries_an_explanation_only_when_one_was_asked_for():
    plain = msgspec.json.decode(msgspec.json.encode(
        PredictionOut(168.4, IntervalOut(0.9, 60.5, 245.2), "abc", "r1")))
    assert plain == {"prediction": 168.4, "interval": {"level": 0.9, "lower": 60.5,
                                                       "upper": 245.2},
                     "model_version": "abc", "request_id": "r1"}
    asked = msgspec.json.decode(msgspec.json.encode(
        PredictionOut(168.4, None, "abc", "r1", EXPLANATION)))
    assert asked["interval"] is None  # a model without intervals says so: null, not absent
    assert asked["explanation"]["contributions"] == {"bmi": 21.4, "age": -3.0}


def test_a_batch_answers_in_input_order_with_its_count():
    out = msgspec.json.decode(msgspec.json.encode(
        BatchOut([1.0, 2.0], [IntervalOut(0.9, 0.0, 2.0), IntervalOut(0.9, 1.0, 3.0)], "abc",
                 "r2", 2)))
    assert out["predictions"] == [1.0, 2.0] and out["count"] == 2
    assert [i["lower"] for i in out["intervals"]] == [0.0, 1.0] and "explanations" not in out


def test_the_log_keeps_an_explanation_without_what_the_row_and_card_already_say():
    kept = msgspec.structs.asdict(LoggedExplanation.of(EXPLANATION))
    assert kept == {"base_value": 150.0, "contributions": {"bmi": 21.4, "age": -3.0},
                    "method": "sampling", "margin": {"bmi": 0.5, "age": 0.2}}


def test_an_error_names_its_field_or_null():
    assert msgspec.json.decode(msgspec.json.encode(ErrorOut(422, "bad", "bmi"))) == {
        "status_code": 422, "detail": "bad", "field": "bmi"}
    assert msgspec.json.decode(msgspec.json.encode(ErrorOut(503, "later")))["field"] is None
