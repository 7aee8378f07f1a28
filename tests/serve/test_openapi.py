"""The OpenAPI document (serve/openapi.py): the prediction request bodies come from the
served model's card (types, ranges, levels, the batch's maxItems), and a key is documented only
where one is needed. (Fuzzing the real server against this document: tests/test_reliability.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.tiny_model import TinyModel
from tests.support.serving import serving
from tests.support.settings import make_settings

pytestmark = pytest.mark.timeout(120)


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
