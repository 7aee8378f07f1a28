"""The prediction log's row, its engine, idempotent bulk inserts and paged reads.

The table, `predictions`, is defined once in `medcast.predlog` (the lab reads the log through it
without importing the service): one row per prediction, `(request_id, item)` unique, so
re-inserting a batch whose commit was already applied (a retry after a lost acknowledgement)
skips the rows that exist instead of duplicating them. `LogRow` (what the service writes) is
checked against its columns, and the inserts, the PostgreSQL staging table and the paged reads
derive from them.

Its migrations are in `serve.migrate`. The service itself may run as a role with only INSERT
and SELECT on the table (and USAGE on its id sequence): nothing here updates or deletes a row.
Nothing here imports Litestar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from medcast.predlog import COLUMNS, LOG_COLUMNS, predictions


class LogRow(msgspec.Struct, gc=False):
    """One prediction as the service logs it: the table's columns but `id`, in table order
    (checked below), so `msgspec.structs.astuple(row)` is also an insert's positional tuple.
    Not tracked by the garbage collector: thousands are made per second and none is part of a
    reference cycle."""

    request_id: str
    item: int
    created_at: datetime  # timezone-aware, UTC
    model_md5: str
    model_revision: str
    dataset: str
    features: Any  # the request's msgspec Struct (or a mapping): a JSON object of features
    prediction: float
    latency_ms: float
    client: str | None = None  # None: client keys are off
    lower: float | None = None
    upper: float | None = None
    # the explanation (serve.answers.LoggedExplanation) with MEDCAST_LOG_EXPLANATIONS on and
    # ?explain=true; None: SQL NULL
    explanation: Any = None


if LogRow.__struct_fields__ != COLUMNS:  # one definition: a change to one must change the other
    raise RuntimeError(f"serve.db.LogRow fields {LogRow.__struct_fields__} differ from the "
                       f"columns of table 'predictions' {COLUMNS}")


def _json_dumps(obj: Any) -> str:
    # msgspec encodes the request's Struct directly (feature names as keys), and fast.
    return msgspec.json.encode(obj).decode()


SQLITE_SYNCHRONOUS = ("normal", "full", "extra")


def make_engine(url: str, sqlite_synchronous: str = "full") -> sa.Engine:
    """An engine that never prints bound parameters (patient data) in its error messages.

    SQLite runs in WAL mode (readers do not block the writer) with `PRAGMA synchronous` =
    `sqlite_synchronous`: with `normal` a committed transaction survives the process being
    killed (it is in the WAL file, which the OS writes out) but not a power loss or OS crash;
    `full` (the default) also syncs the WAL to disk at every commit, so it survives those too
    (`extra` adds nothing to `full` in WAL mode).
    PostgreSQL's own defaults (fsync, synchronous_commit on) survive both.
    """
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous {sqlite_synchronous!r}: expected one of "
                         f"{', '.join(SQLITE_SYNCHRONOUS)}")
    kwargs: dict[str, Any] = {"hide_parameters": True, "json_serializer": _json_dumps}
    if url.startswith("postgresql"):
        kwargs.update(pool_size=4, max_overflow=4, pool_pre_ping=False)
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        synchronous = sqlite_synchronous.upper()  # one of three constants: safe in the PRAGMA

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the flusher
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


# ---- rows -----------------------------------------------------------------------------------


_INSERT_COLS = ", ".join(COLUMNS)
_STAGING = "predictions_incoming"
# Column names are module constants; values are bound parameters or COPY'd, never formatted in.
_PG_MERGE = (
    f"INSERT INTO predictions ({_INSERT_COLS}) SELECT {_INSERT_COLS} FROM {_STAGING} "  # nosec B608
    "ON CONFLICT (request_id, item) DO NOTHING"
)
_SQLITE_INSERT = (
    f"INSERT INTO predictions ({_INSERT_COLS}) VALUES ({', '.join('?' * len(COLUMNS))}) "  # nosec B608
    "ON CONFLICT (request_id, item) DO NOTHING"
)
_PG_INSERT = (
    f"INSERT INTO predictions ({_INSERT_COLS}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "  # nosec B608
    "ON CONFLICT (request_id, item) DO NOTHING"
)
# PostgreSQL: below this many rows, one pipelined executemany (one round trip before the commit)
# answers sooner than COPY + INSERT … SELECT (two): the group commits of `ack` (~15 rows at 16
# connections) are latency. From it on, COPY: the writer thread's CPU, which it takes from the
# request path through the GIL, is 0.34 ms for 60 rows against 0.77 ms pipelined (0.60 against
# 1.64 ms for 160; wall time within ±0.6 ms), measured on this kind of machine.
PG_COPY_FROM_ROWS = 32
# Positions of the values a driver-level insert cannot take as they are.
_JSON_AT = tuple(i for i, c in enumerate(LOG_COLUMNS) if isinstance(c.type, sa.JSON))
_TIME_AT = tuple(i for i, c in enumerate(LOG_COLUMNS) if isinstance(c.type, sa.DateTime))


@cache
def staging_ddl() -> str:
    """CREATE TEMP TABLE for PostgreSQL's COPY: the log's columns and types, from the table."""
    staging = sa.Table(_STAGING, sa.MetaData(), *(sa.Column(c.name, c.type) for c in LOG_COLUMNS),
                       prefixes=["TEMPORARY"], postgresql_on_commit="DELETE ROWS")
    return str(CreateTable(staging, if_not_exists=True).compile(dialect=postgresql.dialect()))


def _tuples(rows: Sequence[LogRow], sqlite: bool) -> list[tuple[Any, ...]]:
    """Rows as driver-level tuples in COLUMNS order: JSON columns as JSON text (None as SQL
    NULL, not the JSON text 'null') and, for SQLite, times in SQLAlchemy's SQLite storage
    format (UTC, naive), so SQLAlchemy reads them."""
    enc = msgspec.json.encode
    astuple = msgspec.structs.astuple
    out = []
    for r in rows:
        values = list(astuple(r))
        for i in _JSON_AT:
            if values[i] is not None:
                values[i] = enc(values[i]).decode()
        if sqlite:
            for i in _TIME_AT:
                values[i] = values[i].strftime("%Y-%m-%d %H:%M:%S.%f")
        out.append(tuple(values))
    return out


def _copy(cur: Any, table: str, data: list[tuple[Any, ...]]) -> None:
    """COPY `data` (driver-level tuples in COLUMNS order) into `table` on psycopg cursor `cur`."""
    with cur.copy(f"COPY {table} ({_INSERT_COLS}) FROM STDIN") as cp:
        for t in data:
            cp.write_row(t)


def insert_rows(engine: sa.Engine, rows: Sequence[LogRow]) -> int:
    """Insert rows in one transaction, skipping (request_id, item) pairs already present.

    The hot path bypasses SQLAlchemy's per-row processing (it costs the request path CPU through
    the GIL): PostgreSQL gets, for a small batch, one pipelined executemany of INSERT … ON
    CONFLICT DO NOTHING; for a large one a COPY into the table, and only if that meets a row
    already there (the whole transaction rolls back) a COPY into a temp table and one
    INSERT … SELECT … ON CONFLICT DO NOTHING (1,000 rows: 12 against 16 ms); SQLite one
    executemany of INSERT … ON CONFLICT DO NOTHING.
    """
    if not rows:
        return 0
    name, driver = engine.dialect.name, engine.dialect.driver
    if name == "postgresql" and driver == "psycopg":
        _insert_psycopg(engine, _tuples(rows, sqlite=False))
        return len(rows)
    if name == "sqlite":
        data = _tuples(rows, sqlite=True)
        with engine.begin() as conn:
            conn.exec_driver_sql(_SQLITE_INSERT, data)  # type: ignore[arg-type]
        return len(rows)
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        stmt = insert(predictions).on_conflict_do_nothing(index_elements=["request_id", "item"])
        with engine.begin() as conn:
            conn.execute(stmt, [msgspec.structs.asdict(r) for r in rows])
        return len(rows)
    # Other dialects: look the keys up first (same transaction), insert the rest.
    with engine.begin() as conn:
        ids = {r.request_id for r in rows}
        existing = set(
            conn.execute(
                sa.select(predictions.c.request_id, predictions.c.item).where(
                    predictions.c.request_id.in_(ids)
                )
            ).tuples()
        )
        fresh = [msgspec.structs.asdict(r) for r in rows if (r.request_id, r.item) not in existing]
        if fresh:
            conn.execute(predictions.insert(), fresh)
    return len(rows)


@cache
def _pg_insert_values(n: int) -> str:
    """One INSERT of `n` rows … ON CONFLICT DO NOTHING, in PostgreSQL's own `$1` placeholders
    (a psycopg RawCursor sends it as it is: its `%s` form is parsed again on every execute
    beyond 50 parameters, ~4 rows)."""
    width = len(COLUMNS)
    rows = ", ".join("(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                     for r in range(n))
    return (f"INSERT INTO predictions ({_INSERT_COLS}) VALUES {rows} "  # nosec B608 - constants
            "ON CONFLICT (request_id, item) DO NOTHING")


class RowWriter:
    """`insert_rows` for the service's writer: on PostgreSQL through psycopg, a batch of fewer
    than PG_COPY_FROM_ROWS rows (the group commits of `ack`) goes as one multi-row
    INSERT … ON CONFLICT DO NOTHING on one connection held between writes, in autocommit: one
    statement is one atomic transaction, so one round trip instead of three (the inserts, the
    COMMIT and the pool's checkout), and no pool checkout per commit. Measured for 4-row
    batches here: 0.53 against 0.68 ms a commit, the writer's CPU 52 against 81 µs a row, the
    server's 60 against 67. Larger batches and other databases go through `insert_rows`.

    Writes come from one thread at a time (the log has one commit in flight). A failed write
    closes the held connection: the next write opens a fresh one.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.direct = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self._conn: Any = None  # a DBAPI (psycopg) connection, detached from the pool

    def write(self, rows: Sequence[LogRow]) -> int:
        if not self.direct or not rows or len(rows) >= PG_COPY_FROM_ROWS:
            return insert_rows(self.engine, rows)
        conn = self._conn
        from psycopg import RawCursor  # this path is psycopg's

        if conn is None:
            pooled = self.engine.raw_connection()
            conn = pooled.driver_connection
            pooled.detach()  # ours until closed: its autocommit never reaches the pool
            conn.autocommit = True
            self._conn = conn
        try:
            with RawCursor(conn) as cur:
                cur.execute(_pg_insert_values(len(rows)),
                            [v for t in _tuples(rows, sqlite=False) for v in t])
        except BaseException:
            self.close()
            raise
        return len(rows)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _insert_psycopg(engine: sa.Engine, data: list[tuple[Any, ...]]) -> None:
    """insert_rows for PostgreSQL through psycopg (driver-level tuples in COLUMNS order)."""
    if len(data) < PG_COPY_FROM_ROWS:
        with engine.begin() as conn, \
                conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
            cur.executemany(_PG_INSERT, data)  # pipelined by psycopg
        return
    from psycopg.errors import UniqueViolation

    try:  # new rows (nearly always): one COPY straight into the table
        with engine.begin() as conn, \
                conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
            _copy(cur, "predictions", data)
        return
    except UniqueViolation:  # a retry after a lost acknowledgement: rolled back, merge them
        pass
    with engine.begin() as conn:
        info = conn.connection.info  # lives as long as the pooled DBAPI connection
        try:
            with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
                if not info.get("medcast_staging"):
                    cur.execute(staging_ddl())
                    info["medcast_staging"] = True
                _copy(cur, _STAGING, data)
                cur.execute(_PG_MERGE)
        except BaseException:
            info.pop("medcast_staging", None)  # the CREATE may have been rolled back
            raise


def count_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())


def fetch_page(
    engine: sa.Engine,
    after: int | None,
    limit: int,
    *,
    before: int | None = None,
    descending: bool = False,
    client: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Up to `limit` rows with after < id < before, oldest first or newest first
    (`descending`), optionally one client's and `since` ≤ created_at < `until` (aware
    datetimes). Keyset paging: stable while rows are appended."""
    c = predictions.c
    query = sa.select(predictions)
    if after is not None:
        query = query.where(c.id > after)
    if before is not None:
        query = query.where(c.id < before)
    if client is not None:
        query = query.where(c.client == client)
    if since is not None:
        query = query.where(c.created_at >= _stored_time(engine, since))
    if until is not None:
        query = query.where(c.created_at < _stored_time(engine, until))
    query = query.order_by(c.id.desc() if descending else c.id).limit(limit)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for r in rows:
        ts = r["created_at"]
        if isinstance(ts, datetime):
            r["created_at"] = ts.isoformat() if ts.tzinfo else ts.isoformat() + "+00:00"
    return rows


def _stored_time(engine: sa.Engine, ts: datetime) -> datetime:
    # SQLite keeps created_at as naive UTC text (see _tuples): compare like with like.
    ts = ts.astimezone(UTC)
    return ts.replace(tzinfo=None) if engine.dialect.name == "sqlite" else ts
