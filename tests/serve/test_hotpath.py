"""`POST /predict`'s hot path (serve/hotpath.py): the same request answered by it and by the
Litestar stack behind it (a chunked body, which the hot path passes on) gives the same status,
body and headers, for a prediction and for each error; what it passes on; a server fault is
logged and answered 500; the metrics count what it answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.tiny_model import TinyModel
from tests.support.serving import scraped, serving
from tests.support.settings import client_settings, make_settings

pytestmark = pytest.mark.timeout(120)

# headers that differ between any two answers
VARYING = {"x-request-id", "ratelimit-remaining", "ratelimit-reset", "date"}


def hot_path(client: Any) -> Any:
    return client.app.asgi_handler


def both(client: Any, body: bytes, path: str = "/predict",
         headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    """The same request through the hot path (Content-Length) and through Litestar (chunked:
    no Content-Length, which the hot path passes on)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    before = hot_path(client).answered
    hot = client.post(path, content=body, headers=headers)
    assert hot_path(client).answered == before + 1, "not answered by the hot path"
    chunks: Iterator[bytes] = iter([body[:5], body[5:]])
    framework = client.post(path, content=chunks, headers=headers)
    assert hot_path(client).answered == before + 1, "the chunked request took the hot path"
    return hot, framework


def steady_headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in VARYING}


def same(hot: Any, framework: Any) -> None:
    assert hot.status_code == framework.status_code
    a, b = hot.json(), framework.json()
    for answer in (a, b):
        answer.pop("request_id", None)
    assert a == b
    assert steady_headers(hot) == steady_headers(framework)
    assert ("x-request-id" in hot.headers) == ("x-request-id" in framework.headers)


def test_a_prediction_is_the_frameworks_to_the_byte(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo, rate_limit=("minute", 100))) as client:
        for patient in tiny.examples[:3]:
            hot, framework = both(client, json.dumps(patient).encode())
            assert hot.status_code == 200
            same(hot, framework)
            assert hot.headers["x-content-type-options"] == "nosniff"  # serve.tls, via send
            assert hot.headers["ratelimit-limit"] == "100"


@pytest.mark.parametrize("case", ["not json", "missing feature", "wrong type", "explain=maybe",
                                  "empty"])
def test_each_error_is_the_frameworks(case: str, tiny: TinyModel, repo: Path) -> None:
    patient = dict(tiny.examples[0])
    path = "/predict"
    if case == "not json":
        body = b"{not json"
    elif case == "missing feature":
        patient.pop(next(iter(patient)))
        body = json.dumps(patient).encode()
    elif case == "wrong type":
        patient[next(iter(patient))] = [1, 2]
        body = json.dumps(patient).encode()
    elif case == "empty":
        body = b""
    else:
        path, body = "/predict?explain=maybe", json.dumps(patient).encode()
    with serving(make_settings(repo)) as client:
        if case == "empty":  # no chunks to send: both with Content-Length 0
            hot = client.post(path, content=body)
            assert hot.status_code == 400 and hot_path(client).answered == 1
            return
        hot, framework = both(client, body, path)
        assert 400 <= hot.status_code < 500
        same(hot, framework)


def test_client_keys_are_checked_the_same(tiny: TinyModel, repo: Path,
                                          keys: tuple[Path, dict[str, str]]) -> None:
    path, issued = keys
    body = json.dumps(tiny.examples[0]).encode()
    with serving(client_settings(repo, path)) as client:
        hot, framework = both(client, body)
        assert hot.status_code == 401
        same(hot, framework)
        hot, framework = both(client, body, headers={"X-API-Key": issued["ward-a"]})
        assert hot.status_code == 200
        same(hot, framework)


def test_what_it_passes_on_to_the_framework(tiny: TinyModel, repo: Path) -> None:
    body = json.dumps(tiny.examples[0]).encode()
    with serving(make_settings(repo, rate_limit=("minute", 3), max_body_bytes=len(body) + 10)
                 ) as client:  # the 413 spends the budget too (routed; the 405 is not): 2 left
        assert client.get("/predict").status_code == 405  # another method
        assert client.post("/predict", content=b"{" + b" " * 40 + body[1:],
                           headers={"Content-Type": "application/json"}).status_code == 413
        assert client.post("/predict", content=body).status_code == 200
        assert client.post("/predict", content=body).status_code == 200
        r = client.post("/predict", content=body)  # over the limit: the framework's 429
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert hot_path(client).answered == 2
        assert scraped(client, "medcast_http_requests_total", route="/predict", method="POST",
                       status="200") == 2
        assert scraped(client, "medcast_http_requests_total", route="/predict", method="POST",
                       status="429") == 1


def test_a_server_fault_is_logged_and_answered_500(tiny: TinyModel, repo: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with serving(make_settings(repo, rate_limit=("minute", 100))) as client:
        service = client.app.state.service

        def broken(rows: Any) -> Any:
            raise RuntimeError("the model broke")

        service.coalescer = None
        service.model.predict_with_bounds = broken
        with caplog.at_level(logging.ERROR, logger="medcast.serve"):
            hot, framework = both(client, json.dumps(tiny.examples[0]).encode())
        assert hot.status_code == 500
        same(hot, framework)
        assert hot.json() == {"status_code": 500, "detail": "Internal Server Error"}
        assert hot.headers["ratelimit-limit"] == "100"  # Litestar's 500 has them too
        assert [r.getMessage() for r in caplog.records].count(
            "POST /predict failed: RuntimeError: the model broke") == 2
        assert scraped(client, "medcast_http_requests_total", route="/predict", method="POST",
                       status="500") == 2
