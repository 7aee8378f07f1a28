"""The service's state and lifespan (serve/service.py) with the prediction log's database
failing: a write retried after a lost commit does not duplicate; with the database down, `ack`
answers 503 after MEDCAST_LOG_ACK_TIMEOUT_MS and readiness follows the database, `buffered`
keeps the rows and retries (on PostgreSQL too, after its connections are cut), a full buffer
answers 503 instead of dropping rows; shutdown drains the buffer, within a bound when the
database stays down. The writer on its own: test_log.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from devtools.tiny_model import TinyModel
from serve import db as servedb
from serve import service as serveservice
from serve.app import create_app
from tests.support.serving import PG_URL, log_count, metric, scraped, serving, wait_until
from tests.support.settings import KEY, make_settings

pytestmark = pytest.mark.timeout(120)


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


def test_an_idle_process_pings_the_database_before_saying_ready(
    tiny: TinyModel, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that wrote nothing for a second (one idle worker of several) asks the
    database once before answering /health/ready: down, it says so with a 503 instead of
    vouching for a database it has not tried; a recent write needs no round trip."""
    with serving(make_settings(repo)) as client:
        service = client.app.state.service
        pings: list[float] = []
        real = service.db.ping

        def ping() -> None:
            pings.append(time.monotonic())
            real()

        monkeypatch.setattr(service.db, "ping", ping)
        service.log.last_ok = time.monotonic() - 5
        assert client.get("/health/ready").status_code == 200 and len(pings) == 1
        assert client.get("/health/ready").status_code == 200 and len(pings) == 1  # recent

        def down() -> None:
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

        monkeypatch.setattr(service.db, "ping", down)
        service.log.last_ok = time.monotonic() - 5
        r = client.get("/health/ready")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["database"]["status"] == "failing"
        assert "database: unreachable (OperationalError" in body["reason"]
