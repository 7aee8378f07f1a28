"""The prediction log table, its row, its engine, idempotent bulk inserts and the Alembic
entry points.

One table, `predictions`: one row per prediction (a batch request of n rows logs n rows sharing
its request id, `item` 0..n-1; a single prediction has item 0). `(request_id, item)` is unique,
so re-inserting a batch whose commit was already applied (a retry after a lost acknowledgement)
skips the rows that exist instead of duplicating them. The table is the one definition of the
log's columns: `LogRow` (what the service writes) is checked against it, and the inserts, the
PostgreSQL staging table, the paged reads and the monitoring notebook's read derive from it.

Migrations live in `serve/migrations/` (Alembic). `ensure_schema()` runs `alembic upgrade head`
unless the database already records `HEAD` (so a warm start does not import Alembic). Nothing
here imports Litestar: `medcast.monitoring` reads the log through this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.schema import CreateTable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HEAD = "0003"  # the newest revision in serve/migrations/versions (a test checks it)

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("request_id", sa.String(36), nullable=False),
    sa.Column("item", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_md5", sa.String(32), nullable=False),
    sa.Column("model_revision", sa.String(100), nullable=False),
    sa.Column("dataset", sa.String(100), nullable=False),
    sa.Column("features", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    sa.Column("prediction", sa.Float(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    # The prediction interval's bounds (level in the model card); null for a model without.
    sa.Column("lower", sa.Float(), nullable=True),
    sa.Column("upper", sa.Float(), nullable=True),
    sa.UniqueConstraint("request_id", "item", name="uq_predictions_request_item"),
    sa.Index("ix_predictions_created_at", "created_at"),
    sa.Index("ix_predictions_model_md5", "model_md5"),
)

# What a writer supplies: every column but the generated `id`, in table order.
LOG_COLUMNS = tuple(c for c in predictions.columns if c.name != "id")
COLUMNS = tuple(c.name for c in LOG_COLUMNS)


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
    lower: float | None = None
    upper: float | None = None


if LogRow.__struct_fields__ != COLUMNS:  # one definition: a change to one must change the other
    raise RuntimeError(f"serve.db.LogRow fields {LogRow.__struct_fields__} differ from the "
                       f"columns of table 'predictions' {COLUMNS}")


def _json_dumps(obj: Any) -> str:
    # msgspec encodes the request's Struct directly (feature names as keys), and fast.
    return msgspec.json.encode(obj).decode()


def make_engine(url: str) -> sa.Engine:
    """An engine that never prints bound parameters (patient data) in its error messages."""
    kwargs: dict[str, Any] = {"hide_parameters": True, "json_serializer": _json_dumps}
    if url.startswith("postgresql"):
        kwargs.update(pool_size=4, max_overflow=4, pool_pre_ping=False)
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the flusher
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


# ---- migrations -----------------------------------------------------------------------------


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if url is not None:
        cfg.attributes["url"] = url  # not via set_main_option: '%' in passwords
    return cfg


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: sa.Engine, target: str = "head") -> None:
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), target)


def downgrade(engine: sa.Engine, target: str = "base") -> None:
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), target)


_ALEMBIC_LEVEL = threading.Lock()


@contextlib.contextmanager
def quiet_alembic() -> Iterator[None]:
    """Alembic's INFO lines ("Context impl …", "Will assume …", "Running upgrade …") while the
    service migrates say no more than the one line the service logs; its warnings stay. A
    level configured for the `alembic` logger (alembic.ini, the user's logging) is kept."""
    alembic_logger = logging.getLogger("alembic")
    with _ALEMBIC_LEVEL:
        if alembic_logger.level != logging.NOTSET:
            yield
            return
        alembic_logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            alembic_logger.setLevel(logging.NOTSET)


def ensure_schema(engine: sa.Engine) -> str:
    """`alembic upgrade head` unless already there, without Alembic's INFO lines; returns what
    was done (the service logs it)."""
    current = current_revision(engine)
    if current == HEAD:
        return f"schema at {HEAD}"
    with quiet_alembic():
        upgrade(engine, "head")
    return f"schema migrated {current or 'base'} → {HEAD}"


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
    """Rows as driver-level tuples in COLUMNS order: JSON columns as JSON text and, for
    SQLite, times in SQLAlchemy's SQLite storage format (UTC, naive), so SQLAlchemy reads them."""
    enc = msgspec.json.encode
    astuple = msgspec.structs.astuple
    out = []
    for r in rows:
        values = list(astuple(r))
        for i in _JSON_AT:
            values[i] = enc(values[i]).decode()
        if sqlite:
            for i in _TIME_AT:
                values[i] = values[i].strftime("%Y-%m-%d %H:%M:%S.%f")
        out.append(tuple(values))
    return out


def insert_rows(engine: sa.Engine, rows: Sequence[LogRow]) -> int:
    """Insert rows in one transaction, skipping (request_id, item) pairs already present.

    The hot path bypasses SQLAlchemy's per-row processing (it costs the request path CPU through
    the GIL): PostgreSQL gets a COPY into a temp table and one INSERT … SELECT … ON CONFLICT DO
    NOTHING; SQLite one executemany of INSERT … ON CONFLICT DO NOTHING.
    """
    if not rows:
        return 0
    name, driver = engine.dialect.name, engine.dialect.driver
    if name == "postgresql" and driver == "psycopg":
        data = _tuples(rows, sqlite=False)
        with engine.begin() as conn:
            info = conn.connection.info  # lives as long as the pooled DBAPI connection
            try:
                with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
                    if not info.get("medcast_staging"):
                        cur.execute(staging_ddl())
                        info["medcast_staging"] = True
                    with cur.copy(f"COPY {_STAGING} ({_INSERT_COLS}) FROM STDIN") as cp:
                        for t in data:
                            cp.write_row(t)
                    cur.execute(_PG_MERGE)
            except BaseException:
                info.pop("medcast_staging", None)  # the CREATE may have been rolled back
                raise
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


def count_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())


def fetch_page(engine: sa.Engine, after: int, limit: int) -> list[dict[str, Any]]:
    """Rows with id > after, oldest first (keyset paging: stable while rows are appended)."""
    query = (
        sa.select(predictions)
        .where(predictions.c.id > after)
        .order_by(predictions.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for r in rows:
        ts = r["created_at"]
        if isinstance(ts, datetime):
            r["created_at"] = ts.isoformat() if ts.tzinfo else ts.isoformat() + "+00:00"
    return rows


class Database:
    """The engine (created lazily: a bad URL is a readiness reason, not a crash) and its schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: sa.Engine | None = None
        self.schema_status: str | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    @property
    def dialect(self) -> str:
        return sa.engine.make_url(self.url).get_backend_name()

    def prepare(self) -> None:
        """Migrate to head (raises while the database is unreachable)."""
        self.schema_status = ensure_schema(self.engine)

    def write(self, rows: list[LogRow]) -> int:
        return insert_rows(self.engine, rows)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
