"""Who reads which rows of the prediction log (GET /predictions, serve/routes.py): a client's
key only the rows logged under its own name — asking for another client's is a 403 —, an
auditor's key (MEDCAST_API_KEY, or `role=auditor` in the clients file) every row; an auditor
predicts nothing. Over the API (Litestar's TestClient) and on the dashboard's "Latest
predictions" (the real service in headless Chromium).

A flow test, at tests/ top level rather than under tests/serve/: the rule is made by
serve/clients.py (the roles), serve/routes.py (GET /predictions) and the dashboard's script
(serve/static/), and is checked as a user meets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from serve.clients import AUDITOR, add_key
from serve.settings import Settings
from tests.support.browser import chromium_page, require_browser
from tests.support.serving import serving, wait_until, written

pytestmark = pytest.mark.timeout(120)

READER = "reader-key"  # MEDCAST_API_KEY


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A clients file: clients ward-a and ward-b, auditor audit."""
    path = tmp_path / "clients"
    issued = {name: add_key(path, name) for name in ("ward-a", "ward-b")}
    issued["audit"] = add_key(path, "audit", AUDITOR)
    return path, issued


def settings(repo: Path, clients_file: Path) -> Settings:
    return Settings(repo=repo, database_url=f"sqlite:///{repo / 'serve.db'}",
                    clients_file=clients_file, api_key=READER, log_flush_ms=5, log_drain_s=5,
                    rate_limit=None)


def predict_as(client: Any, tiny: TinyModel, issued: dict[str, str],
               names: list[str]) -> dict[str, list[str]]:
    """One prediction per name, in order; the request ids each name got."""
    ids: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        r = client.post("/predict", json=tiny.examples[i % len(tiny.examples)],
                        headers={"X-API-Key": issued[name]})
        assert r.status_code == 200, r.text
        ids.setdefault(name, []).append(r.json()["request_id"])
    return ids


def test_a_clients_key_reads_only_its_own_rows_and_another_clients_is_403(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, issued = keys
    with serving(settings(repo, path)) as client:
        ids = predict_as(client, tiny, issued, ["ward-a", "ward-b", "ward-a", "ward-b", "ward-b"])
        written(client, 5)

        def page(name: str, **params: Any) -> Any:
            return client.get("/predictions", params=params, headers={"X-API-Key": issued[name]})

        for name in ("ward-a", "ward-b"):
            own = page(name).json()
            assert [r["request_id"] for r in own["items"]] == ids[name]
            assert {r["client"] for r in own["items"]} == {name} and own["client"] == name
            assert page(name, client=name).json()["items"] == own["items"]
            newest = page(name, order="desc", limit=1).json()["items"]
            assert [r["request_id"] for r in newest] == ids[name][-1:]
        for asked in ("ward-b", "audit", "nobody"):
            r = page("ward-a", client=asked)
            assert r.status_code == 403 and r.json()["field"] == "client"
            assert "client=ward-a" in r.json()["detail"] and "ward-b" not in r.json()["detail"]
        # paging forward from a row of another client's still shows only its own
        after = page("ward-a", after=page("ward-a").json()["items"][0]["id"]).json()["items"]
        assert [r["request_id"] for r in after] == ids["ward-a"][1:]


@pytest.mark.parametrize("auditor", ["role=auditor in the clients file", "MEDCAST_API_KEY"])
def test_an_auditor_reads_every_row_and_predicts_nothing(
    auditor: str, tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, issued = keys
    key = issued["audit"] if auditor.startswith("role") else READER
    with serving(settings(repo, path)) as client:
        ids = predict_as(client, tiny, issued, ["ward-a", "ward-b", "ward-a"])
        written(client, 3)
        h = {"X-API-Key": key}
        every = client.get("/predictions", headers=h).json()
        assert [r["client"] for r in every["items"]] == ["ward-a", "ward-b", "ward-a"]
        assert every["client"] is None
        only_b = client.get("/predictions", params={"client": "ward-b"}, headers=h).json()
        assert [r["request_id"] for r in only_b["items"]] == ids["ward-b"]
        assert only_b["client"] == "ward-b"
        r = client.post("/predict", json=tiny.examples[0], headers=h)
        assert r.status_code == 401  # an auditor's key is no client's: nothing logged under it
        assert client.post("/predict/batch", json={"instances": tiny.examples[:1]},
                           headers=h).status_code == 401


def test_openapi_says_a_client_reads_its_own_rows(
    repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, _ = keys
    with serving(settings(repo, path)) as client:
        operation = client.get("/schema/openapi.json").json()["paths"]["/predictions"]["get"]
    assert "reads only its own rows" in operation["description"]
    assert "another client's rows" in operation["responses"]["403"]["description"]


# ---- the dashboard --------------------------------------------------------------------------


@contextmanager
def dashboard(repo: Path, clients_file: Path, tmp_path: Path, pycache: Path) -> Iterator[Any]:
    """The real service with client keys on, and a Chromium page on its dashboard."""
    sync_api = require_browser()
    env = service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_CLIENTS_FILE=str(clients_file),
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
                      MEDCAST_LOG_FLUSH_MS="5", MEDCAST_LOG_LEVEL="WARNING")
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service, \
            chromium_page(sync_api) as page:
        page.goto(f"{service.url}/dashboard", timeout=15_000)
        yield service, page, sync_api.expect
        assert service.stop() == 0, service.output(3000)


def test_dashboard_latest_predictions_with_a_client_key_shows_its_own_rows(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]], tmp_path: Path,
    pycache: Path,
) -> None:
    import httpx

    path, issued = keys
    with dashboard(repo, path, tmp_path, pycache) as (service, page, expect):
        ids: dict[str, list[str]] = {}
        for i, name in enumerate(["ward-a", "ward-b", "ward-b", "ward-a", "ward-b"]):
            r = httpx.post(f"{service.url}/predict", json=tiny.examples[i], timeout=5,
                           headers={"X-API-Key": issued[name]})
            ids.setdefault(name, []).append(r.json()["request_id"])
        audit = {"X-API-Key": issued["audit"]}
        wait_until(lambda: len(httpx.get(f"{service.url}/predictions", headers=audit,
                                         timeout=5).json()["items"]) == 5, what="5 rows logged")
        expect(page.locator("#status")).to_have_text("ready")
        rows = page.locator("#log-table tbody tr")

        def show(name: str, n: int) -> list[str | None]:
            page.locator("#api-key").fill(issued[name])
            page.get_by_role("button", name="Show").click()
            expect(rows).to_have_count(n)
            return [rows.nth(i).get_attribute("data-request-id") for i in range(n)]

        assert sorted(show("audit", 5)) == sorted(ids["ward-a"] + ids["ward-b"])
        expect(page.locator("#log-caption")).not_to_contain_text("of client")
        assert show("ward-a", 2) == ids["ward-a"][::-1]  # newest first
        expect(page.locator("#log-caption")).to_contain_text("2 logged rows of client ward-a")
        assert show("ward-b", 3) == ids["ward-b"][::-1]
        expect(page.locator("#log-caption")).to_contain_text("3 logged rows of client ward-b")
