"""A prediction answered without a transport (serve/predict.py): `answer()` on a started
service's state returns the Reply the routes send, and its rows are in the log; `?explain=`
read as documented; every error a Reply with ErrorOut's body.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from devtools.tiny_model import TinyModel
from serve.answers import ErrorOut, PredictionOut
from serve.predict import Reply, answer, error_reply, explain_asked
from serve.schemas import InputError
from tests.support.serving import serving, written
from tests.support.settings import make_settings

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(("query", "expected"), [
    (b"", False), (b"explain=true", True), (b"explain=1", True), (b"explain=TRUE", True),
    (b"explain=false", False), (b"explain=0", False), (b"other=1", False),
    (b"explain=false&explain=true", True),  # the last one counts
])
def test_explain_is_read_from_the_query(query: bytes, expected: bool) -> None:
    assert explain_asked(query) is expected


@pytest.mark.parametrize("query", [b"explain=", b"explain=yes", b"explain=maybe"])
def test_any_other_explain_is_a_400_naming_it(query: bytes) -> None:
    with pytest.raises(InputError) as caught:
        explain_asked(query)
    assert caught.value.status == 400 and caught.value.field == "explain"


def test_an_error_reply_is_an_error_out() -> None:
    reply = error_reply(422, "age: expected a number", "age", **{"Retry-After": "1"})
    out = msgspec.json.decode(reply.body, type=ErrorOut)
    assert (reply.status, out.status_code, out.detail, out.field) == (422, 422,
                                                                     "age: expected a number",
                                                                     "age")
    assert reply.headers == {"Retry-After": "1"}
    assert error_reply(503, "down").headers is None
    assert json.loads(error_reply(503, "down").body) == {"status_code": 503, "detail": "down"}


def test_answer_is_what_the_route_sends_and_logs_its_row(tiny: TinyModel, repo: Path) -> None:
    body = json.dumps(tiny.examples[0]).encode()
    with serving(make_settings(repo)) as client:
        service = client.app.state.service
        scope = {"type": "http", "query_string": b"", "headers": [], "app": client.app}

        async def read() -> bytes:
            return body

        reply: Reply = client.blocking_portal.call(answer, service, scope, read, False)  # its loop
        assert reply.status == 200 and "X-Request-ID" in reply.headers
        out = msgspec.json.decode(reply.body, type=PredictionOut)
        assert out.request_id == reply.headers["X-Request-ID"]
        routed = client.post("/predict", content=body).json()
        assert out.prediction == routed["prediction"] and out.model_version == routed["model_version"]
        written(client, 2)
        bad = client.blocking_portal.call(answer, service, {**scope, "query_string": b"explain=x"}, read,
                                 False)
        assert bad.status == 400 and json.loads(bad.body)["field"] == "explain"
