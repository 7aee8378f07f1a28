"""The prediction service (serve/): settings, verified loading, endpoints, input validation,
rate limit, metrics, the prediction log (SQLite and PostgreSQL) and its guarantees.

Endpoint tests use Litestar's TestClient on a tiny ONNX model built once per worker
(devtools/tiny_model.py); a few tests run the real server (`python -m serve`, uvicorn) on a
free loopback port (devtools/service.py); tests/test_prometheus.py runs two workers. Every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel, build_tiny_model, md5_file, write_lock
from medcast import predlog
from serve import db as servedb
from serve import migrate as servemigrate
from serve import service as serveservice
from serve.app import create_app
from serve.model import ModelError, load_model
from serve.settings import Settings, SettingsError
from tests.support.servers import real_server
from tests.support.serving import PG_URL, log_count, metric, scraped, serving, wait_until
from tests.support.settings import KEY, make_settings

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


# ---- settings -------------------------------------------------------------------------------


def test_settings_read_env_and_file_variants(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    url_file = tmp_path / "url"
    url_file.write_text("postgresql+psycopg://u:p%40ss@db/x")
    s = Settings.from_env({
        "MEDCAST_REPO": str(tmp_path), "MEDCAST_MODEL_REV": "v1.0",
        "MEDCAST_API_KEY_FILE": str(key_file), "MEDCAST_DATABASE_URL_FILE": str(url_file),
        "MEDCAST_MAX_BATCH": "50", "MEDCAST_RATE_LIMIT": "20/minute",
        "MEDCAST_LOG_BUFFER_MAX": "10_000",
    })
    assert s.repo == tmp_path.resolve() and s.model_rev == "v1.0"
    assert s.api_key == "from-a-file" and s.db_url == "postgresql+psycopg://u:p%40ss@db/x"
    assert (s.max_batch, s.rate_limit, s.log_buffer_max) == (50, ("minute", 20), 10_000)
    d = Settings.from_env({"MEDCAST_REPO": str(tmp_path)})
    assert d.model_rev is None and d.api_key is None and d.max_batch == 1000
    assert d.db_url == f"sqlite:///{tmp_path.resolve() / 'serve.db'}"
    assert Settings.from_env({"MEDCAST_RATE_LIMIT": "off"}).rate_limit is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MEDCAST_MAX_BATCH": "many"}, "MEDCAST_MAX_BATCH"),
        ({"MEDCAST_MAX_BATCH": "0"}, "≥ 1"),
        ({"MEDCAST_RATE_LIMIT": "5 per minute"}, "MEDCAST_RATE_LIMIT"),
        ({"MEDCAST_API_KEY": "a", "MEDCAST_API_KEY_FILE": "/x"}, "not both"),
        ({"MEDCAST_API_KEY_FILE": "/nonexistent/key"}, "cannot read"),
        ({"MEDCAST_LOG_FLUSH_MS": "nan"}, "MEDCAST_LOG_FLUSH_MS"),
        ({"MEDCAST_LOG_FLUSH_MS": "-1"}, "between 0 and 60000"),
        ({"MEDCAST_LOG_DURABILITY": "eventually"}, "expected one of ack, buffered"),
        ({"MEDCAST_LOG_ACK_TIMEOUT_MS": "0"}, "MEDCAST_LOG_ACK_TIMEOUT_MS='0': must be"),
        ({"MEDCAST_SQLITE_SYNCHRONOUS": "off"}, "expected one of normal, full, extra"),
    ],
)
def test_settings_reject_malformed_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_durability_defaults_and_the_window_per_mode() -> None:
    d = Settings.from_env({})
    assert (d.log_durability, d.flush_window_ms, d.log_ack_timeout_ms) == ("ack", 2.0, 2000.0)
    assert d.sqlite_synchronous == "full"
    b = Settings.from_env({"MEDCAST_LOG_DURABILITY": "Buffered",
                           "MEDCAST_SQLITE_SYNCHRONOUS": "NORMAL"})
    assert (b.log_durability, b.flush_window_ms, b.sqlite_synchronous) == (
        "buffered", 20.0, "normal")
    w = Settings.from_env({"MEDCAST_LOG_FLUSH_MS": "2.5", "MEDCAST_LOG_ACK_TIMEOUT_MS": "500"})
    assert (w.flush_window_ms, w.log_ack_timeout_ms) == (2.5, 500.0)


@pytest.mark.parametrize("level", ["normal", "full"])
def test_sqlite_log_runs_in_wal_mode_with_the_synchronous_level(level: str, tmp_path: Path
                                                                ) -> None:
    engine = servedb.make_engine(f"sqlite:///{tmp_path / 'w.db'}", level)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            # 1 NORMAL, 2 FULL
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == {"normal": 1,
                                                                           "full": 2}[level]
    finally:
        engine.dispose()


def test_main_exits_2_with_a_clear_message_on_bad_settings(pycache: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env=service_env(pycache, MEDCAST_MAX_BATCH="lots"),
    )
    assert out.returncode == 2 and "MEDCAST_MAX_BATCH" in out.stderr
    assert "Traceback" not in out.stderr


def test_main_check_verifies_the_model_without_serving(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "MEDCAST_DATABASE_URL" in capsys.readouterr().out
    monkeypatch.setenv("MEDCAST_REPO", str(repo))
    assert main(["--check"]) == 0
    assert "ok: medcast-insurance (workspace)" in capsys.readouterr().out
    onnx = repo / "models" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1])
    assert main(["--check"]) == 1
    assert "refused:" in capsys.readouterr().err
    assert not (repo / "serve.db").exists()  # --check touches no database


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


def test_card_stating_an_interval_the_graph_lacks_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    build_tiny_model(root, n=120, interval=None)
    card = json.loads((root / "models/model.json").read_text())
    card["interval"] = {"level": 0.9, "method": "constant", "q": 1.0, "floor": 0.0, "coverage": 0.9}
    (root / "models/model.json").write_text(json.dumps(card))
    write_lock(root)
    with pytest.raises(ModelError, match="no outputs"):
        load_model(make_settings(root))


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


def test_oversize_body_is_413(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo, max_body_bytes=2048)) as client:
        body = {"instances": [tiny.examples[0]] * 40}  # ~4 KB
        r = client.post("/predict/batch", json=body)
        assert r.status_code == 413
        assert client.post("/predict", json=tiny.examples[0]).status_code == 200


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


def test_openapi_request_schema_follows_the_card(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo, max_batch=7)) as client:
        spec = client.get("/schema/openapi.json").json()
    one = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert one["type"] == "object" and one["additionalProperties"] is False
    assert set(one["required"]) == {f["name"] for f in tiny.card["features"]}
    props = one["properties"]
    assert props["age"]["type"] == "integer"
    assert (props["age"]["minimum"], props["age"]["maximum"]) == (0, 120)
    assert props["bmi"]["type"] == "number" and props["bmi"]["maximum"] == 80
    exact, padded = props["region"]["anyOf"]  # the levels, or one with whitespace around it
    assert exact["enum"] == ["northeast", "northwest", "southeast", "southwest"]
    assert padded["type"] == "string" and "(?:northeast|northwest|southeast|southwest)" in padded["pattern"]
    batch = spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["properties"]["instances"]["maxItems"] == 7
    assert spec["paths"]["/predictions"]["get"]["security"] == [{"ApiKey": []}]
    for path in ("/predict", "/predict/batch"):  # client keys off: no key needed, none documented
        operation = spec["paths"][path]["post"]
        assert "security" not in operation and "401" not in operation["responses"]


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


def test_prediction_log_endpoint_is_disabled_without_a_key(repo: Path) -> None:
    with serving(make_settings(repo, api_key=None)) as client:
        r = client.get("/predictions", headers={"X-API-Key": "anything"})
        assert r.status_code == 403
        assert "disabled" in r.json()["detail"] and "MEDCAST_API_KEY" in r.json()["detail"]


def test_rate_limit_answers_429_with_headers(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo, rate_limit=("minute", 3))) as client:
        for i in range(3):
            r = client.post("/predict", json=tiny.examples[i])
            assert r.status_code == 200
            assert r.headers["RateLimit-Remaining"] == str(2 - i)
        r = client.post("/predict", json=tiny.examples[0])
        assert r.status_code == 429
        assert r.headers["RateLimit-Limit"] == "3" and r.headers["RateLimit-Remaining"] == "0"
        assert int(r.headers["Retry-After"]) >= 1 and "RateLimit-Policy" in r.headers
        # health, metrics and the schema are not limited
        for _ in range(5):
            assert client.get("/health/ready").status_code == 200
            assert client.get("/metrics").status_code == 200
        assert scraped(client, "medcast_http_requests_total", route="/predict",
                       method="POST", status="429") == 1


# ---- verified loading -----------------------------------------------------------------------


def _assert_refused(repo: Path, reason: str, rev: str | None = None, **kwargs: Any) -> None:
    with serving(make_settings(repo, model_rev=rev), **kwargs) as client:
        assert client.get("/health/live").status_code == 200
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert reason in r.json()["reason"], r.json()
        p = client.post("/predict", json={"age": 30})
        assert p.status_code == 503 and reason in p.json()["detail"]
        assert client.post("/predict/batch", json={"instances": []}).status_code == 503
        assert client.get("/model").status_code == 503
        assert scraped(client, "medcast_model_ready") == 0


def test_tampered_model_is_refused(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx = repo / "models" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with caplog.at_level("ERROR", logger="medcast.serve"):
        _assert_refused(repo, "dvc.lock records")
    assert any("model NOT loaded" in r.getMessage() for r in caplog.records)
    assert "Traceback" not in caplog.text


def test_card_that_does_not_describe_the_model_is_refused(repo: Path) -> None:
    card_path = repo / "models" / "model.json"
    card = json.loads(card_path.read_text())
    card["onnx_md5"] = "0" * 32
    card_path.write_text(json.dumps(card))
    write_lock(repo)  # locked, but inconsistent with the model
    _assert_refused(repo, "describes a model with md5")


def test_tampered_card_is_refused(repo: Path) -> None:
    card_path = repo / "models" / "model.json"
    card = json.loads(card_path.read_text())
    card["features"][0]["max"] = 1000  # widen a range without going through the pipeline
    card_path.write_text(json.dumps(card))
    _assert_refused(repo, "model.json")


def test_model_missing_from_the_lock_is_refused(repo: Path) -> None:
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    _assert_refused(repo, "has no md5")


def test_model_missing_is_refused(repo: Path) -> None:
    (repo / "models" / "model.onnx").unlink()
    _assert_refused(repo, "cannot read")


class FakeArtifacts:
    """`medcast.artifacts` at a revision, from a dict: path → (bytes, locked md5)."""

    def __init__(self, files: dict[str, tuple[bytes, str]], fail: str | None = None) -> None:
        self.files, self.fail, self.calls = files, fail, []

    def locked_md5(self, path: str, rev: str | None = None, repo: str = ".") -> str:
        self.calls.append(("locked_md5", path, rev))
        if self.fail:
            raise RuntimeError(self.fail)
        return self.files[path][1]

    def read_bytes(self, path: str, rev: str | None = None, remote: str | None = None,
                   repo: str = ".") -> bytes:
        self.calls.append(("read_bytes", path, rev))
        return self.files[path][0]


def test_model_by_revision_comes_through_artifacts(tiny: TinyModel, tmp_path: Path) -> None:
    files = {
        "models/model.onnx": (tiny.onnx.read_bytes(), tiny.md5),
        "models/model.json": (tiny.card_path.read_bytes(), md5_file(tiny.card_path)),
    }
    fake = FakeArtifacts(files)
    settings = make_settings(tmp_path, model_rev="v1.2")  # no model files in tmp_path
    with serving(settings, artifacts=fake) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.get("/model").json()["serving"]["revision"] == "v1.2"
        assert client.post("/predict", json=tiny.examples[0]).status_code == 200
    assert ("read_bytes", "models/model.onnx", "v1.2") in fake.calls
    engine = sa.create_engine(settings.db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT model_revision FROM predictions")).scalar() == "v1.2"
    engine.dispose()


def test_model_by_revision_with_a_wrong_md5_is_refused(tiny: TinyModel, tmp_path: Path) -> None:
    files = {
        "models/model.onnx": (tiny.onnx.read_bytes() + b"x", tiny.md5),
        "models/model.json": (tiny.card_path.read_bytes(), md5_file(tiny.card_path)),
    }
    _assert_refused(tmp_path, "dvc.lock records", rev="v1.2", artifacts=FakeArtifacts(files))
    _assert_refused(tmp_path, "the DVC remote is unreachable", rev="v1.2",
                    artifacts=FakeArtifacts(files, fail="the DVC remote is unreachable"))


def test_model_by_revision_without_dvc_installed_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serve-only install (`medcast[serve]`) has no DVC: say which extra brings it."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dvc" else find_spec(name, *a))
    _assert_refused(tmp_path, "install the pipeline extra (pip install 'medcast[pipeline]')",
                    rev="v1.2")


def test_serving_process_imports_no_tensorflow_sklearn_or_unpickling(
    tiny: TinyModel, tmp_path: Path, pycache: Path
) -> None:
    script = textwrap.dedent(f"""
        import pickle, sys
        def refuse(*a, **k):
            raise AssertionError("something tried to unpickle")
        pickle.load = pickle.loads = refuse
        from pathlib import Path
        from litestar.testing import TestClient
        from serve.app import create_app
        from serve.settings import Settings
        settings = Settings(repo=Path({str(tiny.root)!r}),
                            database_url="sqlite:///{tmp_path / 'x.db'}")
        with TestClient(create_app(settings)) as client:
            r = client.post("/predict", json={tiny.examples[0]!r})
            assert r.status_code == 200, r.text
            assert client.post("/predict/batch",
                               json={{"instances": [{tiny.examples[1]!r}]}}).status_code == 200
        loaded = [m for m in ("tensorflow", "keras", "sklearn", "skl2onnx", "dvc", "joblib",
                              "skops", "torch") if m in sys.modules]
        assert "tensorflow" not in sys.modules and "sklearn" not in sys.modules, loaded
        assert not loaded, loaded
        print("clean")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env=service_env(pycache))
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr[-3000:]


# ---- the prediction log ---------------------------------------------------------------------


def test_service_start_prints_no_alembic_info_line(repo: Path, tmp_path: Path, pycache: Path) -> None:
    """The migration on a fresh database is one line of the service's own, not Alembic's
    "Context impl …", "Will assume …" and "Running upgrade …" INFO lines."""
    env = service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_LOG_LEVEL="INFO",
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service:
        assert service.stop() == 0
    lines = service.output().splitlines()
    migrated = f"prediction log on sqlite: schema migrated base → {servemigrate.HEAD}"
    assert any(migrated in line for line in lines)
    assert not [line for line in lines if " alembic" in line], lines


def test_quiet_alembic_keeps_warnings_and_a_configured_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    alembic_logger = logging.getLogger("alembic")
    migration = logging.getLogger("alembic.runtime.migration")
    before = alembic_logger.level  # other libraries in this process may have set it
    try:
        alembic_logger.setLevel(logging.NOTSET)  # as in the service: nobody configured it
        with caplog.at_level(logging.INFO), servemigrate.quiet_alembic():
            migration.info("Running upgrade  -> 0001")
            migration.warning("something real")
        assert [r.getMessage() for r in caplog.records] == ["something real"]
        assert alembic_logger.level == logging.NOTSET  # restored
        caplog.clear()
        alembic_logger.setLevel(logging.INFO)  # as alembic.ini configures the CLI
        with caplog.at_level(logging.INFO), servemigrate.quiet_alembic():
            migration.info("Running upgrade  -> 0001")
        assert [r.getMessage() for r in caplog.records] == ["Running upgrade  -> 0001"]
    finally:
        alembic_logger.setLevel(before)


def test_migrations_upgrade_and_downgrade_on_sqlite(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    cfg = servemigrate.alembic_config()
    assert ScriptDirectory.from_config(cfg).get_current_head() == servemigrate.HEAD
    engine = servedb.make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    _migrations_round_trip(engine)


def test_migrations_upgrade_and_downgrade_on_postgresql(pg_url: str) -> None:
    engine = servedb.make_engine(pg_url)
    _migrations_round_trip(engine)


def _migrations_round_trip(engine: sa.Engine) -> None:
    try:
        assert servemigrate.current_revision(engine) is None
        assert "migrated" in servemigrate.ensure_schema(engine)
        insp = sa.inspect(engine)
        assert insp.has_table("predictions")
        indexes = {i["name"] for i in insp.get_indexes("predictions")}
        assert {"ix_predictions_created_at", "ix_predictions_model_md5"} <= indexes
        assert servemigrate.ensure_schema(engine) == f"schema at {servemigrate.HEAD}"  # idempotent
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with engine.connect() as conn:  # the migrations build exactly medcast.predlog's table
            assert compare_metadata(MigrationContext.configure(conn), predlog.metadata) == []
        servemigrate.downgrade(engine, "base")
        assert not sa.inspect(engine).has_table("predictions")
        assert servemigrate.current_revision(engine) is None
        servemigrate.upgrade(engine, "head")
        assert servemigrate.current_revision(engine) == servemigrate.HEAD
    finally:
        engine.dispose()


def _rows(n: int, rid: str | None = None) -> list[servedb.LogRow]:
    from datetime import UTC, datetime

    rid = rid or uuid.uuid4().hex
    return [
        servedb.LogRow(request_id=rid, item=i, created_at=datetime.now(UTC), model_md5="0" * 32,
                       model_revision="workspace", dataset="insurance",
                       features={"age": 30 + i, "smoker": "no"}, prediction=float(i),
                       latency_ms=0.1)
        for i in range(n)
    ]


def test_log_row_is_the_tables_columns_in_order_with_their_types() -> None:
    import typing

    columns = servedb.LOG_COLUMNS
    assert servedb.LogRow.__struct_fields__ == tuple(c.name for c in columns)
    assert [c.name for c in servedb.predictions.columns] == ["id", *servedb.COLUMNS]
    hints = typing.get_type_hints(servedb.LogRow)
    for column in columns:
        if not isinstance(column.type, sa.JSON):  # features: the request's own object
            python_type = column.type.python_type
            expected = python_type | None if column.nullable else python_type
            assert hints[column.name] == expected, column.name


def test_postgresql_staging_table_has_the_log_tables_columns_and_types(pg_url: str) -> None:
    engine = servedb.make_engine(pg_url)
    query = sa.text("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = to_regclass(:rel) AND attnum > 0 AND NOT attisdropped "
                    "ORDER BY attnum")
    try:
        servemigrate.ensure_schema(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql(servedb.staging_ddl())
            staged = conn.execute(query, {"rel": "predictions_incoming"}).all()
            logged = conn.execute(query, {"rel": "predictions"}).all()
    finally:
        engine.dispose()
    assert staged == [row for row in logged if row[0] != "id"]
    assert [name for name, _ in staged] == list(servedb.COLUMNS)


@pytest.mark.parametrize("n", [5, servedb.PG_COPY_FROM_ROWS + 5])  # PostgreSQL: both paths
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_insert_is_idempotent(backend: str, n: int, tmp_path: Path,
                              request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else (
        f"sqlite:///{tmp_path / 'i.db'}")
    engine = servedb.make_engine(url)
    try:
        servemigrate.ensure_schema(engine)
        rows = _rows(n)
        servedb.insert_rows(engine, rows[:3])
        servedb.insert_rows(engine, rows)  # a retry of a batch partly committed before
        assert servedb.count_rows(engine) == n
        servedb.insert_rows(engine, rows)  # all of it again
        assert servedb.count_rows(engine) == n
        page = servedb.fetch_page(engine, 0, n + 5)
        assert [r["item"] for r in page] == list(range(n))
        assert page[0]["features"] == {"age": 30, "smoker": "no"}
    finally:
        engine.dispose()


class LostAckDatabase(serveservice.Database):
    """Commits the first write, then reports a failure (a lost acknowledgement)."""

    def __init__(self, url: str, failures: int = 1) -> None:
        super().__init__(url)
        self.failures = failures

    def write(self, rows: list[servedb.LogRow]) -> int:
        n = super().write(rows)
        if self.failures:
            self.failures -= 1
            raise sa.exc.OperationalError("COMMIT", {}, Exception("connection lost"))
        return n


def test_retry_after_a_lost_commit_does_not_duplicate(tiny: TinyModel, repo: Path) -> None:
    settings = make_settings(repo, log_flush_ms=50)
    database = LostAckDatabase(settings.db_url)
    with serving(settings, database=database) as client:
        r = client.post("/predict/batch", json={"instances": tiny.examples})
        assert r.status_code == 200
        wait_until(lambda: scraped(client, "medcast_prediction_log_write_retries_total") == 1,
                   what="a retry")
    assert log_count(settings.db_url) == len(tiny.examples)


class SwitchableDatabase(serveservice.Database):
    """A real SQLite log whose writes and probes fail while `down` is set."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))

    def write(self, rows: list[servedb.LogRow]) -> int:
        self._check()
        return super().write(rows)

    def ping(self) -> None:
        self._check()
        super().ping()


def test_ack_database_down_answers_503_after_the_timeout_and_readiness_follows(
    tiny: TinyModel, repo: Path
) -> None:
    settings = make_settings(repo, log_ack_timeout_ms=300)
    database = SwitchableDatabase(settings.db_url)
    with serving(settings, database=database) as client:
        r = client.post("/predict", json=tiny.examples[0])
        assert r.status_code == 200  # answered once committed: the row is there already
        assert log_count(settings.db_url) == 1
        database.down = True
        t0 = time.monotonic()
        r = client.post("/predict", json=tiny.examples[1])
        waited = time.monotonic() - t0
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "no commit within 300 ms" in r.json()["detail"] and 0.25 < waited < 3
        assert len(r.headers["X-Request-ID"]) == 32
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "writes failing" in ready.json()["reason"]
        database.down = False  # back: a probe sees it, with no request needed
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready again")
        assert client.post("/predict", json=tiny.examples[2]).status_code == 200
        metrics = client.get("/metrics").text
        assert metric(metrics, "medcast_predictions_total") == 2
        assert metric(metrics, "medcast_prediction_log_rejected_rows_total") == 1
        assert metric(metrics, "medcast_prediction_log_commits_total") == 2
    assert log_count(settings.db_url) == 2  # the 503's row was withdrawn, never written


def test_buffered_rows_are_kept_while_the_database_is_down(
    tiny: TinyModel, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = repo / "not-yet"  # SQLite cannot open a file in a missing folder: "down"
    settings = make_settings(repo, database_url=f"sqlite:///{missing / 'log.db'}",
                             log_durability="buffered")
    with caplog.at_level("DEBUG"), serving(settings) as client:
        r = client.get("/health/ready")
        assert r.status_code == 503 and "database" in r.json()["reason"]
        for body in tiny.examples[:6]:
            assert client.post("/predict", json=body).status_code == 200
        wait_until(lambda: scraped(client, "medcast_prediction_log_write_retries_total") > 0,
                   what="retries")
        assert scraped(client, "medcast_prediction_log_buffer_rows") == 6
        r = client.get("/predictions", headers={"X-API-Key": KEY})
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]
        missing.mkdir()  # the database comes back
        wait_until(lambda: scraped(client, "medcast_prediction_log_rows_written_total") == 6,
                   what="rows written")
        assert client.get("/health/ready").status_code == 200
    assert log_count(settings.db_url) == 6
    # the application log names the failure but never a patient's data
    assert "unable to open database file" in caplog.text
    for body in tiny.examples[:6]:
        assert f"{body['bmi']}" not in caplog.text


def test_postgresql_connection_loss_is_retried(tiny: TinyModel, repo: Path, pg_url: str) -> None:
    settings = make_settings(repo, database_url=pg_url)
    app_name = pg_url.rsplit("application_name=", 1)[1]
    with serving(settings) as client:
        for body in tiny.examples[:5]:
            assert client.post("/predict", json=body).status_code == 200
        wait_until(lambda: scraped(client, "medcast_prediction_log_rows_written_total") == 5,
                   what="rows written")
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:  # the server drops the service's connections
            cut = conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"), {"name": app_name}).scalar()
        admin.dispose()
        assert cut >= 1
        for body in tiny.examples[5:10]:
            assert client.post("/predict", json=body).status_code == 200
        wait_until(lambda: scraped(client, "medcast_prediction_log_rows_written_total") == 10,
                   what="rows written after reconnecting")
        assert scraped(client, "medcast_prediction_log_write_retries_total") > 0
    assert log_count(pg_url) == 10


def test_full_buffer_answers_503_instead_of_dropping(tiny: TinyModel, repo: Path) -> None:
    missing = repo / "down"
    settings = make_settings(repo, database_url=f"sqlite:///{missing / 'log.db'}",
                             log_buffer_max=4, log_drain_s=0.2, log_durability="buffered")
    with serving(settings) as client:
        for body in tiny.examples[:3]:
            assert client.post("/predict", json=body).status_code == 200
        r = client.post("/predict/batch", json={"instances": tiny.examples[:2]})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert client.post("/predict", json=tiny.examples[3]).status_code == 200
        r = client.post("/predict", json=tiny.examples[4])
        assert r.status_code == 503 and "buffer is full" in r.json()["detail"]
        assert "buffer is full" in client.get("/health/ready").json()["reason"]
        metrics = client.get("/metrics").text
        assert metric(metrics, "medcast_predictions_total") == 4
        assert metric(metrics, "medcast_prediction_log_rejected_rows_total") == 3


def test_shutdown_drains_the_buffer(tiny: TinyModel, repo: Path) -> None:
    settings = make_settings(repo, log_flush_ms=60_000,  # nothing flushes before shutdown
                             log_durability="buffered")
    with serving(settings) as client:
        for body in tiny.examples[:10]:
            assert client.post("/predict", json=body).status_code == 200
        assert scraped(client, "medcast_prediction_log_buffer_rows") == 10
    assert log_count(settings.db_url) == 10


def test_shutdown_wait_is_bounded_when_the_database_stays_down(
    tiny: TinyModel, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(repo, database_url=f"sqlite:///{repo / 'gone' / 'x.db'}",
                             log_drain_s=0.3, log_durability="buffered")
    with caplog.at_level("ERROR"):
        client = TestClient(create_app(settings), timeout=10)
        client.__enter__()
        assert client.post("/predict", json=tiny.examples[0]).status_code == 200
        start = time.monotonic()
        client.__exit__(None, None, None)
    assert time.monotonic() - start < 3
    assert "1 rows could not be written" in caplog.text


# ---- the real server ------------------------------------------------------------------------


async def _burst(port: int, bodies: list[bytes], concurrency: int) -> dict[int, int]:
    import httpx

    statuses: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post("/predict", content=body,
                                  headers={"Content-Type": "application/json"})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                 timeout=10) as client:
        await asyncio.wait_for(asyncio.gather(*[worker(client) for _ in range(concurrency)]), 60)
    return statuses


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_log_rows_equal_2xx_under_a_concurrent_burst(
    backend: str, tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path,
    request: pytest.FixtureRequest,
) -> None:
    db_url = request.getfixturevalue("pg_url") if backend == "postgresql" else (
        f"sqlite:///{tmp_path / 'burst.db'}")
    good = [json.dumps(b).encode() for b in tiny.examples]
    bodies = [good[i % len(good)] for i in range(200)]
    for i in range(0, 200, 17):  # some refused input: must not be logged
        bodies[i] = b'{"age": "old"}'
    with real_server(tmp_path, repo, db_url, pycache) as (port, _):
        statuses = asyncio.run(_burst(port, bodies, concurrency=16))
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    assert ok == 200 - len(range(0, 200, 17)) and statuses.get(422) == len(range(0, 200, 17))
    assert log_count(db_url) == ok


class _Payload:
    """Unpickling this would create a marker file: proof that nothing was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def _unsafe_bytes(kind: str, marker: Path) -> bytes:
    import io
    import pickle  # nosec B403 - builds the hostile file the service must refuse
    import zipfile

    if kind == "pickle":
        return pickle.dumps(_Payload(marker))
    if kind == "h5":  # an HDF5 signature, as Keras 2 wrote models
        return b"\x89HDF\r\n\x1a\n" + b"\0" * 512
    buffer = io.BytesIO()  # a .keras archive with a Lambda layer (stored code)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Lambda", "config": {
            "function": {"class_name": "__lambda__", "config": {"code": "touch marker"}}}}))
        archive.writestr("metadata.json", "{}")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "h5", "keras"])
def test_unsafe_artifact_in_place_of_the_model_is_refused_unexecuted(
        repo: Path, tmp_path: Path, kind: str) -> None:
    """Even a file DVC has locked (someone committed it) is only ever parsed as ONNX."""
    marker = tmp_path / "executed"
    (repo / "models" / "model.onnx").write_bytes(_unsafe_bytes(kind, marker))
    card_path = repo / "models" / "model.json"
    card = json.loads(card_path.read_text())
    card["onnx_md5"] = md5_file(repo / "models" / "model.onnx")
    card_path.write_text(json.dumps(card))
    write_lock(repo)
    with serving(make_settings(repo)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503, ready.json()
        assert "ONNX Runtime cannot load the model" in ready.json()["reason"]
        assert client.post("/predict", json={"age": 30}).status_code == 503
    assert not marker.exists()


# ---- nullable features (a card whose model imputes missing values) -------------------------


def _nullable_schema() -> Any:
    from medcast.card import Feature, ModelCard, Parity
    from serve.schemas import RequestSchema

    card = ModelCard(name="m", dataset="trial", target="y", target_unit=None, model="ridge",
                     params={}, metrics={}, onnx_md5="0" * 32, parity=Parity(0.0, 0.0, 1),
                     features=[
                         Feature("age", "int", None, 0, 120, None, None, None),
                         Feature("BL.Cig.Day", "float", None, 0, 200, None, None, None,
                                 nullable=True),
                         Feature("Hypertension", "category", None, None, None, None, None,
                                 ["No", "Yes"], nullable=True),
                     ])
    return RequestSchema.from_card(card, max_batch=10)


def test_nullable_feature_takes_null_or_an_absent_field_and_others_refuse_null() -> None:
    import msgspec

    from serve.schemas import InputError

    schema = _nullable_schema()
    sent = schema.decode_one(b'{"age": 40, "BL.Cig.Day": null, "Hypertension": "Yes"}')
    absent = schema.decode_one(b'{"age": 40, "Hypertension": null}')
    assert msgspec.structs.astuple(sent) == (40, None, "Yes")
    assert msgspec.structs.astuple(absent) == (40, None, None)
    with pytest.raises(InputError) as err:
        schema.decode_one(b'{"age": null, "BL.Cig.Day": 3}')
    assert err.value.status == 422 and err.value.field == "age"
    with pytest.raises(InputError) as err:
        schema.decode_one(b'{"BL.Cig.Day": 3}')
    assert err.value.status == 422 and err.value.field == "age"
    with pytest.raises(InputError) as err:
        schema.decode_one(b'{"age": 40, "Hypertension": "maybe"}')
    assert err.value.field == "Hypertension"


def test_nullable_features_are_optional_and_nullable_in_openapi() -> None:
    js = _nullable_schema().patient_json_schema()
    assert js["required"] == ["age"]
    assert js["properties"]["BL.Cig.Day"]["type"] == ["number", "null"]
    assert js["properties"]["Hypertension"]["anyOf"][0]["enum"] == ["No", "Yes", None]


def test_feed_marks_missing_values_as_the_contract_says() -> None:
    import numpy as np

    from medcast.onnx.contract import feed

    features = [("age", "int"), ("BL.Cig.Day", "float"), ("Hypertension", "category")]
    one = feed(features, [(40, None, None)])
    assert np.isnan(one["BL.Cig.Day"][0, 0]) and one["Hypertension"][0, 0] == ""
    many = feed(features, [(40, None, "Yes"), (50, 2.5, None)])
    assert many["age"].dtype == np.float32 and many["age"].shape == (2, 1)
    assert many["Hypertension"].ravel().tolist() == ["Yes", ""]
    assert np.isnan(many["BL.Cig.Day"][0, 0]) and many["BL.Cig.Day"][1, 0] == 2.5
