"""The REST API's handlers (serve/routes.py) through Litestar's TestClient, on the tiny ONNX
model built once per worker (devtools/tiny_model.py): /predict and /predict/batch (the
pipeline's predictions and intervals, one model call per batch, a bounded batch, bad input a 4xx
naming the field and nothing logged), /model, /health/live and /health/ready, /metrics, and
GET /predictions behind the API key. Every wait is bounded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from devtools.tiny_model import TinyModel, build_tiny_model
from serve import db as servedb
from serve.app import create_app
from tests.support.serving import log_count, metric, scraped, serving, wait_until
from tests.support.settings import KEY, make_settings

pytestmark = pytest.mark.timeout(120)


# ---- predictions ----------------------------------------------------------------------------


def test_predict_matches_the_trained_pipeline(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        for body, expected in zip(tiny.examples, tiny.expected, strict=True):
            r = client.post("/predict", json=body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert set(out) == {"prediction", "interval", "model_version", "request_id"}
            assert math.isclose(out["prediction"], expected, rel_tol=1e-4)
            assert out["model_version"] == tiny.md5
            assert r.headers["x-request-id"] == out["request_id"]
            assert len(out["request_id"]) == 32


def test_served_interval_equals_the_pipelines(tiny: TinyModel, repo: Path) -> None:
    """Parity: the graph's lower/upper equal medcast.intervals' bounds to 1e-4 relative (to the
    bound, or to the prediction for a bound near zero, as the export's parity check measures),
    and the interval is wider for smokers (adaptive width)."""
    assert tiny.expected_lower is not None and tiny.expected_upper is not None
    with serving(make_settings(repo)) as client:
        for i, body in enumerate(tiny.examples):
            out = client.post("/predict", json=body).json()
            interval = out["interval"]
            assert set(interval) == {"level", "lower", "upper"} and interval["level"] == 0.9
            near_zero = 1e-4 * abs(tiny.expected[i])
            assert math.isclose(interval["lower"], tiny.expected_lower[i], rel_tol=1e-4,
                                abs_tol=near_zero)
            assert math.isclose(interval["upper"], tiny.expected_upper[i], rel_tol=1e-4,
                                abs_tol=near_zero)
            assert interval["lower"] < out["prediction"] < interval["upper"]
        patient = {**tiny.examples[0], "smoker": "no"}
        widths = {}
        for smoker in ("no", "yes"):
            got = client.post("/predict", json={**patient, "smoker": smoker}).json()["interval"]
            widths[smoker] = got["upper"] - got["lower"]
    assert widths["yes"] > widths["no"]


def test_model_without_intervals_answers_a_null_interval(tmp_path: Path) -> None:
    build_tiny_model(tmp_path / "plain", n=120, interval=None)
    with serving(make_settings(tmp_path / "plain")) as client:
        body = client.get("/model").json()
        assert "interval" not in body
        example = {"age": 40, "sex": "male", "bmi": 30.0, "children": 1, "smoker": "no",
                   "region": "northeast"}
        out = client.post("/predict", json=example).json()
        assert out["interval"] is None and out["prediction"] > 0
        batch = client.post("/predict/batch", json={"instances": [example]}).json()
        assert batch["intervals"] is None


def test_predict_charges_more_for_smokers(tiny: TinyModel, repo: Path) -> None:
    patient = {**tiny.examples[0], "smoker": "no"}
    with serving(make_settings(repo)) as client:
        no = client.post("/predict", json=patient).json()["prediction"]
        yes = client.post("/predict", json={**patient, "smoker": "yes"}).json()["prediction"]
    assert yes > no + 10_000


def test_batch_predicts_all_rows_in_one_model_call(tiny: TinyModel, repo: Path) -> None:
    app = create_app(make_settings(repo))
    with TestClient(app) as client:
        model = app.state.service.model
        calls = []
        real = model.session

        class Counting:
            def run(self, *args: Any, **kwargs: Any) -> Any:
                calls.append(1)
                return real.run(*args, **kwargs)

        model.session = Counting()
        r = client.post("/predict/batch", json={"instances": tiny.examples})
        assert r.status_code == 200, r.text
        out = r.json()
        assert len(calls) == 1
        assert out["count"] == len(tiny.examples) and out["model_version"] == tiny.md5
        for got, expected in zip(out["predictions"], tiny.expected, strict=True):
            assert math.isclose(got, expected, rel_tol=1e-4)
        assert len(out["intervals"]) == len(tiny.examples)
        for got, lo, hi, pred in zip(out["intervals"], tiny.expected_lower, tiny.expected_upper,
                                     tiny.expected, strict=True):
            assert got["level"] == 0.9
            assert math.isclose(got["lower"], lo, rel_tol=1e-4, abs_tol=1e-4 * abs(pred))
            assert math.isclose(got["upper"], hi, rel_tol=1e-4, abs_tol=1e-4 * abs(pred))
    assert log_count(app.state.service.settings.db_url) == len(tiny.examples)
    engine = servedb.make_engine(app.state.service.settings.db_url)
    try:
        with engine.connect() as conn:
            logged = conn.execute(sa.select(servedb.predictions.c.item, servedb.predictions.c.lower,
                                            servedb.predictions.c.upper)
                                  .order_by(servedb.predictions.c.item)).all()
    finally:
        engine.dispose()
    for (item, lo, hi), got in zip(logged, out["intervals"], strict=True):  # the log's bounds
        assert (lo, hi) == (pytest.approx(got["lower"]), pytest.approx(got["upper"])), item


def test_concurrent_predictions_share_a_model_call_and_answer_as_alone(
    tiny: TinyModel, repo: Path
) -> None:
    """Concurrent POST /predict run in one ORT call (serve.coalesce) when the model's answers
    do not depend on the batch; each answer is the one it gets alone, bit for bit."""
    import asyncio

    import httpx

    bodies = [json.dumps(b).encode() for b in tiny.examples[:12]]
    with serving(make_settings(repo)) as client:
        alone = [client.post("/predict", content=b,
                             headers={"Content-Type": "application/json"}).json()["prediction"]
                 for b in bodies]
        service = client.app.state.service
        assert service.model.batch_invariant and service.coalescer is not None
        calls = service.coalescer.calls

        async def together() -> list[float]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                answers = await asyncio.gather(*[
                    c.post("/predict", content=b, headers={"Content-Type": "application/json"})
                    for b in bodies])
            return [a.json()["prediction"] for a in answers]

        assert client.blocking_portal.call(together) == alone
        assert service.coalescer.calls - calls < len(bodies)  # some shared a call


def test_batch_size_is_bounded(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo, max_batch=5)) as client:
        r = client.post("/predict/batch", json={"instances": tiny.examples[:5]})
        assert r.status_code == 200
        r = client.post("/predict/batch", json={"instances": tiny.examples[:6]})
        assert r.status_code == 422 and r.json()["field"] == "instances"
        assert "at most 5" in r.json()["detail"]
        r = client.post("/predict/batch", json={"instances": []})
        assert r.status_code == 422 and r.json()["field"] == "instances"
        r = client.post("/predict/batch", json={"rows": tiny.examples[:1]})
        assert r.status_code == 422
        bad = [tiny.examples[0], {**tiny.examples[1], "bmi": "high"}]
        r = client.post("/predict/batch", json={"instances": bad})
        assert r.status_code == 422 and r.json()["field"] == "instances[1].bmi"


def _patient(tiny: TinyModel, **changes: Any) -> bytes:
    body = dict(tiny.examples[0])
    for k, v in changes.items():
        if v is ...:
            body.pop(k)
        else:
            body[k] = v
    return json.dumps(body).encode()


BAD_INPUTS = {
    # name: (body builder, status, field)
    "missing field": (lambda t: _patient(t, bmi=...), 422, "bmi"),
    "extra field": (lambda t: _patient(t, weight=80), 422, "weight"),
    "string for a number": (lambda t: _patient(t, bmi="30"), 422, "bmi"),
    "bool for a float": (lambda t: _patient(t, bmi=True), 422, "bmi"),
    "bool for an int": (lambda t: _patient(t, age=False), 422, "age"),
    "fraction for an int": (lambda t: _patient(t, children=1.5), 422, "children"),
    "null": (lambda t: _patient(t, age=None), 422, "age"),
    "above the range": (lambda t: _patient(t, age=121), 422, "age"),
    "below the range": (lambda t: _patient(t, bmi=-3.0), 422, "bmi"),
    "overflow to inf": (lambda t: _patient(t).replace(b'"bmi": 29.35', b'"bmi": 1e999'), 422,
                        "bmi"),
    "NaN literal": (lambda t: _patient(t).replace(b'"bmi": 29.35', b'"bmi": NaN'), 400, None),
    "Infinity literal": (lambda t: _patient(t).replace(b'"bmi": 29.35', b'"bmi": Infinity'), 400,
                         None),
    "unknown category": (lambda t: _patient(t, region="atlantis"), 422, "region"),
    "number for a category": (lambda t: _patient(t, smoker=1), 422, "smoker"),
    "array instead of object": (lambda t: b"[1, 2, 3]", 422, None),
    "string instead of object": (lambda t: b'"age"', 422, None),
    "not JSON": (lambda t: b"age=30&bmi=20", 400, None),
    "truncated JSON": (lambda t: _patient(t)[:-5], 400, None),
    "empty body": (lambda t: b"", 400, None),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_4xx_naming_the_field(tiny: TinyModel, repo: Path, case: str) -> None:
    build, status, field = BAD_INPUTS[case]
    with serving(make_settings(repo)) as client:
        r = client.post("/predict", content=build(tiny),
                        headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        out = r.json()
        assert out["status_code"] == status and out["detail"]
        if field is not None:
            assert out["field"] == field
            assert field in out["detail"]
        # the same body in a batch is refused the same way, never a 500
        wrapped = b'{"instances": [' + build(tiny) + b"]}"
        rb = client.post("/predict/batch", content=wrapped)
        assert 400 <= rb.status_code < 500, rb.text
        # nothing was logged for refused input
        assert scraped(client, "medcast_predictions_total") == 0


# ---- other endpoints ------------------------------------------------------------------------


def test_model_endpoint_serves_the_card(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        r = client.get("/model")
        assert r.status_code == 200
        card = r.json()
        assert card["name"] == tiny.card["name"] and card["features"] == tiny.card["features"]
        assert card["serving"]["md5"] == tiny.md5 and card["serving"]["revision"] == "workspace"


def test_health_live_and_ready(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        assert client.get("/health/live").json() == {"status": "alive"}
        r = client.get("/health/ready")
        assert r.status_code == 200
        body = r.json()
        assert body["ready"] is True and body["model"]["md5"] == tiny.md5
        assert body["database"]["status"] == "ok"


def test_metrics_are_prometheus_text(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        client.post("/predict", json=tiny.examples[0])
        client.post("/predict", json={"age": 1})
        client.post("/predict/batch", json={"instances": tiny.examples[:3]})
        wait_until(lambda: scraped(client, "medcast_prediction_log_rows_written_total") == 4,
                   what="rows written")
        r = client.get("/metrics")
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = r.text
    requests = "medcast_http_requests_total"
    assert metric(text, requests, route="/predict", method="POST", status="200") == 1
    assert metric(text, requests, route="/predict", method="POST", status="422") == 1
    assert metric(text, "medcast_http_request_duration_seconds_bucket",
                  route="/predict", le="+Inf") == 2
    assert metric(text, "medcast_http_request_duration_seconds_count", route="/predict/batch") == 1
    assert metric(text, "medcast_predictions_total") == 4
    assert metric(text, "medcast_prediction_log_buffer_rows") == 0
    assert metric(text, "medcast_prediction_log_write_retries_total") == 0
    assert "# TYPE medcast_http_request_duration_seconds histogram" in text


def test_prediction_log_endpoint_needs_the_api_key(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        for body in tiny.examples[:5]:
            client.post("/predict", json=body)
        wait_until(lambda: scraped(client, "medcast_prediction_log_rows_written_total") == 5,
                   what="rows written")
        assert client.get("/predictions").status_code == 401
        assert client.get("/predictions", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/predictions", headers={"X-API-Key": KEY + "x"}).status_code == 401
        page = client.get("/predictions?limit=3", headers={"X-API-Key": KEY})
        assert page.status_code == 200
        first = page.json()
        assert len(first["items"]) == 3 and first["next_after"] == first["items"][-1]["id"]
        row = first["items"][0]
        assert row["features"] == tiny.examples[0] and row["model_md5"] == tiny.md5
        assert row["dataset"] == "insurance" and row["item"] == 0 and row["latency_ms"] > 0
        assert row["created_at"].endswith("+00:00")
        rest = client.get(f"/predictions?after={first['next_after']}&limit=3",
                          headers={"X-API-Key": KEY}).json()
        assert len(rest["items"]) == 2 and rest["next_after"] is None
        bad = client.get("/predictions?limit=0", headers={"X-API-Key": KEY})
        assert bad.status_code == 400
        # An empty value (`?until=`) is what the schema refuses (minLength 1 or not a number):
        # every query parameter answers it 400, none reads it as "not given".
        spec = client.get("/schema/openapi.json").json()["paths"]["/predictions"]["get"]
        names = [p["name"] for p in spec["parameters"] if p["in"] == "query"]
        assert set(names) == {"after", "before", "limit", "order", "client", "since", "until"}
        for name in names:
            r = client.get(f"/predictions?{name}=", headers={"X-API-Key": KEY})
            assert r.status_code == 400, (name, r.status_code, r.text)
            assert name in r.text


def test_prediction_log_endpoint_is_disabled_without_a_key(repo: Path) -> None:
    with serving(make_settings(repo, api_key=None)) as client:
        r = client.get("/predictions", headers={"X-API-Key": "anything"})
        assert r.status_code == 403
        assert "disabled" in r.json()["detail"] and "MEDCAST_API_KEY" in r.json()["detail"]
