"""The prediction log's schema migrations (serve/migrate.py): upgrade and downgrade on SQLite
and PostgreSQL build exactly medcast.predlog's table; the service migrates a fresh database
with one line of its own, not Alembic's INFO lines.

And least privilege on the prediction log (PostgreSQL): `python -m serve migrate` as the owner,
the service as a role with only INSERT and SELECT on the log (plus USAGE on its id sequence and
SELECT on alembic_version) — it serves, logs and reads, and that role cannot UPDATE or DELETE a
row. Each test creates its own role (unique name) and drops it afterwards: parallel-safe.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from medcast import predlog
from serve import db as servedb
from serve import migrate as servemigrate
from serve.__main__ import main
from tests.support.clients import issue_key
from tests.support.serving import PG_URL, serving, written
from tests.support.settings import client_settings

pytestmark = pytest.mark.timeout(120)


# ---- migrations -----------------------------------------------------------------------------


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
        assert {"ix_predictions_created_at", "ix_predictions_client_id"} <= indexes
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


def empty_log(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> sa.Engine:
    """An engine on an empty database of `backend`: a SQLite file, or the test's PostgreSQL
    schema."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else (
        f"sqlite:///{tmp_path / 'log.db'}")
    return servedb.make_engine(url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0004_gives_the_rows_logged_before_a_null_explanation_and_downgrades(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    engine = empty_log(backend, tmp_path, request)
    insert = sa.text("INSERT INTO predictions (request_id, item, created_at, model_md5, "
                     "model_revision, dataset, features, prediction, latency_ms, lower, upper) "
                     "VALUES ('r', 0, '2026-12-01 08:00:00', 'm', 'workspace', 'insurance', "
                     "'{\"age\": 40}', 1.5, 0.1, 1.0, 2.0)")
    try:
        servemigrate.upgrade(engine, "0003")
        with engine.begin() as conn:
            conn.execute(insert)
        servemigrate.upgrade(engine, "head")
        assert servemigrate.current_revision(engine) == servemigrate.HEAD
        (row,) = servedb.fetch_page(engine, 0, 10)
        assert row["explanation"] is None and row["features"] == {"age": 40}
        servemigrate.downgrade(engine, "0003")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("predictions")}
        assert "explanation" not in columns and {"lower", "upper", "client"} <= columns
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT prediction FROM predictions")).scalar_one() == 1.5
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0005_keeps_the_logged_json_drops_the_unused_index_and_downgrades(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """On PostgreSQL the JSON columns become json and back to jsonb, the rows logged before
    read the same both ways; on both backends the index on model_md5 goes and comes back."""
    engine = empty_log(backend, tmp_path, request)
    insert = sa.text("INSERT INTO predictions (request_id, item, created_at, model_md5, "
                     "model_revision, dataset, features, prediction, latency_ms, explanation) "
                     "VALUES ('r', 0, '2026-12-01 08:00:00', 'm', 'workspace', 'insurance', "
                     "'{\"age\": 40, \"smoker\": \"yes\"}', 1.5, 0.1, '{\"base_value\": 1.0}')")

    def state() -> tuple[dict[str, Any], bool, dict[str, str]]:
        (row,) = servedb.fetch_page(engine, 0, 10)
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("predictions")}
        types = {}
        if backend == "postgresql":
            with engine.connect() as conn:
                types = dict(conn.execute(sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE "
                    "table_schema = current_schema() AND table_name = 'predictions' AND "
                    "column_name IN ('features', 'explanation')")).tuples().all())
        logged = {"features": row["features"], "explanation": row["explanation"]}
        return logged, "ix_predictions_model_md5" in indexes, types

    before = {"features": {"age": 40, "smoker": "yes"}, "explanation": {"base_value": 1.0}}
    try:
        servemigrate.upgrade(engine, "0004")
        with engine.begin() as conn:
            conn.execute(insert)
        assert state()[:2] == (before, True)
        servemigrate.upgrade(engine, "0005")
        logged, indexed, types = state()
        assert logged == before and not indexed
        assert types == ({"features": "json", "explanation": "json"} if backend == "postgresql"
                         else {})
        servemigrate.downgrade(engine, "0004")
        logged, indexed, types = state()
        assert logged == before and indexed
        assert types == ({"features": "jsonb", "explanation": "jsonb"} if backend == "postgresql"
                         else {})
    finally:
        engine.dispose()


# ---- least privilege (PostgreSQL) -----------------------------------------------------------


def grants(schema: str, role: str) -> list[str]:
    """The README's grants for the service role, in this test's schema."""
    return [
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        f'GRANT SELECT, INSERT ON "{schema}".predictions TO "{role}"',
        f'GRANT USAGE ON SEQUENCE "{schema}".predictions_id_seq TO "{role}"',
        f'GRANT SELECT ON "{schema}".alembic_version TO "{role}"',
    ]


@pytest.fixture
def service_role(pg_url: str) -> Iterator[tuple[str, str, str]]:
    """(role, its URL into the test's schema, the schema): a LOGIN role with no privileges."""
    schema = parse_qs(urlsplit(pg_url).query)["options"][0].split("=", 1)[1]
    role = f"secure16_svc_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        yield role, pg_url.replace("//postgres@", f"//{role}@", 1), schema
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE usename = :r"), {"r": role})
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_service_logs_with_insert_and_select_only_and_that_role_cannot_update_or_delete(
    tiny: TinyModel, repo: Path, tmp_path: Path, pg_url: str,
    service_role: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    role, url, schema = service_role
    monkeypatch.setenv("MEDCAST_DATABASE_URL", url)
    monkeypatch.setenv("MEDCAST_MIGRATE_DATABASE_URL", pg_url)  # the owner
    assert main(["migrate"]) == 0
    assert f"schema migrated base → {servemigrate.HEAD}" in capsys.readouterr().out
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        for grant in grants(schema, role):
            conn.execute(sa.text(grant))
    admin.dispose()

    key = issue_key(tmp_path / "clients", "ward-a", capsys)
    with serving(client_settings(repo, tmp_path / "clients", database_url=url)) as client:
        assert client.get("/health/ready").status_code == 200
        for body in tiny.examples[:3]:
            r = client.post("/predict", json=body, headers={"X-API-Key": key})
            assert r.status_code == 200
        written(client, 3)
        rows = client.get("/predictions", headers={"X-API-Key": key}).json()["items"]
        assert [r["client"] for r in rows] == ["ward-a"] * 3
        # the audit filters on PostgreSQL (timestamptz): time window, client, newest first
        since = client.get("/predictions", params={"since": rows[1]["created_at"],
                                                   "client": "ward-a", "order": "desc"},
                           headers={"X-API-Key": key}).json()["items"]
        assert [r["id"] for r in since] == [rows[2]["id"], rows[1]["id"]]

    engine = sa.create_engine(url)
    try:
        for statement in ("UPDATE predictions SET prediction = 0",
                          "DELETE FROM predictions",
                          "TRUNCATE predictions",
                          "ALTER TABLE predictions DROP COLUMN client"):
            with pytest.raises(sa.exc.ProgrammingError) as refused, engine.begin() as conn:
                conn.execute(sa.text(statement))
            assert refused.value.orig.sqlstate == "42501", statement  # type: ignore[union-attr]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM predictions "
                                        "WHERE prediction <> 0")).scalar_one() == 3
    finally:
        engine.dispose()


def test_role_that_may_not_migrate_stays_unready_and_says_to_run_migrate(
    repo: Path, tmp_path: Path, service_role: tuple[str, str, str],
) -> None:
    role, url, schema = service_role
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
    admin.dispose()
    with serving(client_settings(repo, None, database_url=url, log_retry_max_s=0.05)) as client:
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert "run `python -m serve migrate` as the owner role" in r.json()["reason"], r.json()


def test_migrate_command_fails_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEDCAST_DATABASE_URL",
                       "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    monkeypatch.delenv("MEDCAST_MIGRATE_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("medcast serve migrate: OperationalError") and "\n" not in err
