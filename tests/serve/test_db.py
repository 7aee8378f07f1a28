"""The prediction log's database layer (serve/db.py): SQLite in WAL mode at the configured
synchronous level, `LogRow` as the table's columns in order with their types, the PostgreSQL
staging table, idempotent inserts (on PostgreSQL both paths, executemany and COPY) and paged
reads. PostgreSQL tests use a throwaway schema at 127.0.0.1:5432 (skipped when unreachable).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from serve import db as servedb
from serve import migrate as servemigrate

pytestmark = pytest.mark.timeout(120)


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


@contextmanager
def migrated(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """An engine on a migrated log: a throwaway PostgreSQL schema or a SQLite file."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else (
        f"sqlite:///{tmp_path / 'log.db'}")
    engine = servedb.make_engine(url)
    try:
        servemigrate.ensure_schema(engine)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def inserting(how: str, engine: sa.Engine) -> Iterator[Callable[[list[servedb.LogRow]], int]]:
    """`insert_rows`, or the service's `RowWriter` (PostgreSQL: its held autocommit connection
    and one multi-row INSERT below PG_COPY_FROM_ROWS rows)."""
    if how == "insert_rows":
        yield lambda rows: servedb.insert_rows(engine, rows)
        return
    writer = servedb.RowWriter(engine)
    try:
        yield writer.write
    finally:
        writer.close()


HOW = ["insert_rows", "RowWriter"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("n", [5, servedb.PG_COPY_FROM_ROWS + 5])  # PostgreSQL: every path
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_insert_is_idempotent(backend: str, n: int, how: str, tmp_path: Path,
                              request: pytest.FixtureRequest) -> None:
    with migrated(backend, tmp_path, request) as engine, inserting(how, engine) as insert:
        rows = _rows(n)
        insert(rows[:3])
        assert insert(rows) == n  # a retry of a batch partly committed before
        assert servedb.count_rows(engine) == n
        insert(rows)  # all of it again
        assert servedb.count_rows(engine) == n
        page = servedb.fetch_page(engine, 0, n + 5)
        assert [r["item"] for r in page] == list(range(n))
        assert page[0]["features"] == {"age": 30, "smoker": "no"}


def test_row_writer_replaces_a_connection_the_server_closed(pg_url: str) -> None:
    """The held connection dies (a server restart, an idle timeout): that write fails, as any
    failed write does (the log keeps its rows and retries), and the next opens a fresh one."""
    engine = servedb.make_engine(pg_url)
    writer = servedb.RowWriter(engine)
    try:
        servemigrate.ensure_schema(engine)
        writer.write(_rows(2))
        pid = writer._conn.info.backend_pid
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        again = _rows(3)
        with pytest.raises(Exception, match="terminat|closed|connection"):
            writer.write(again)
        assert writer._conn is None
        assert writer.write(again) == 3  # a fresh connection
        assert writer._conn.info.backend_pid != pid
        assert servedb.count_rows(engine) == 5
    finally:
        writer.close()
        engine.dispose()


def test_get_predictions_rows_are_the_tables_columns_in_order() -> None:
    """GET /predictions' documented row (serve.answers.LoggedPrediction) is the table's row."""
    from serve.answers import LoggedPrediction

    assert LoggedPrediction.__struct_fields__ == ("id", *servedb.COLUMNS)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("n", [5, servedb.PG_COPY_FROM_ROWS + 5])  # PostgreSQL: every path
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_explanation_is_stored_as_json_and_absent_is_sql_null(
        backend: str, n: int, how: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Rows with an explanation keep it as JSON; rows without keep SQL NULL (never the JSON
    text 'null'), on every insert path."""
    from serve.answers import LoggedExplanation

    with migrated(backend, tmp_path, request) as engine, inserting(how, engine) as insert:
        rows = _rows(n)
        for i, row in enumerate(rows[::2]):
            margin = {"age": 0.5, "smoker": 0.25} if i % 2 else None
            row.explanation = LoggedExplanation(
                base_value=100.0 + i, contributions={"age": 1.5 * i, "smoker": -2.0},
                method="sampling" if margin else "exact", margin=margin)
        insert(rows)
        page = servedb.fetch_page(engine, 0, n)
        for row, got in zip(rows, page, strict=True):
            expected = (None if row.explanation is None
                        else msgspec.structs.asdict(row.explanation))
            assert got["explanation"] == expected, got["item"]
        predictions = servedb.predictions
        with engine.connect() as conn:
            nulls = conn.execute(sa.select(sa.func.count()).select_from(predictions)
                                 .where(predictions.c.explanation.is_(None))).scalar_one()
        assert nulls == n // 2
