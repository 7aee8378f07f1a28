"""The application as `create_app` wires it (serve/app.py): the request body limit (413); and
the real server (`python -m serve`, uvicorn, on a free loopback port; tests/support/servers.py)
under a concurrent burst: log rows == 2xx answers, refused input unlogged, on SQLite and
PostgreSQL, then a clean stop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from devtools.tiny_model import TinyModel
from tests.support.servers import real_server
from tests.support.serving import log_count, serving
from tests.support.settings import make_settings

pytestmark = pytest.mark.timeout(120)


def test_oversize_body_is_413(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo, max_body_bytes=2048)) as client:
        body = {"instances": [tiny.examples[0]] * 40}  # ~4 KB
        r = client.post("/predict/batch", json=body)
        assert r.status_code == 413
        assert client.post("/predict", json=tiny.examples[0]).status_code == 200


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
