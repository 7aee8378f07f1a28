"""Rate limiting (serve/ratelimit.py): 429 with the RateLimit-* headers and Retry-After once
the budget is spent (one budget for every limited route), health and metrics never limited;
with client keys on, one budget per client name and another for requests without a valid key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.tiny_model import TinyModel
from tests.support.serving import scraped, serving
from tests.support.settings import client_settings, make_settings

pytestmark = pytest.mark.timeout(120)


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


def test_rate_limit_counts_per_client_name_with_keys_on(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, issued = keys
    with serving(client_settings(repo, path, rate_limit=("minute", 2))) as client:
        def status(name: str | None) -> int:
            headers = {"X-API-Key": issued[name]} if name else {}
            return client.post("/predict", json=tiny.examples[0], headers=headers).status_code

        # one IP (the test client's): each client has its own budget, keyless requests another
        assert [status("ward-a") for _ in range(3)] == [200, 200, 429]
        assert [status("ward-b") for _ in range(3)] == [200, 200, 429]
        assert [status(None) for _ in range(3)] == [401, 401, 429]


def test_one_budget_for_every_limited_route(tiny: TinyModel, repo: Path) -> None:
    """Litestar builds a middleware per route; the count is the app's (it was per route)."""
    with serving(make_settings(repo, rate_limit=("minute", 3))) as client:
        assert client.post("/predict", json=tiny.examples[0]).status_code == 200
        r = client.post("/predict/batch", json={"instances": [tiny.examples[1]]})
        assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "1"
        assert client.get("/model").status_code == 200
        assert client.post("/predict", json=tiny.examples[0]).status_code == 429
        assert client.get("/model").status_code == 429
