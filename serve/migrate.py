"""The prediction log's schema migrations (Alembic, scripts in `serve/migrations/`).

`ensure_schema()` runs `alembic upgrade head` unless the database already records `HEAD` (so a
warm start does not import Alembic), without Alembic's INFO lines. A role that may not migrate
(the service's least-privilege role: INSERT and SELECT only) is told to run
`python -m serve migrate`, which migrates as the owner role (`migrate_as_owner`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from serve.db import make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HEAD = "0005"  # the newest revision in serve/migrations/versions (a test checks it)


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


class SchemaError(RuntimeError):
    """The log's schema is not at HEAD and this database role may not migrate it."""


def _denied(exc: BaseException) -> bool:
    """A permission error of the database (SQLSTATE 42501: insufficient privilege)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "42501"


def ensure_schema(engine: sa.Engine) -> str:
    """`alembic upgrade head` unless already there, without Alembic's INFO lines; returns what
    was done (the service logs it). A role that may not migrate (the service's least-privilege
    role: INSERT and SELECT only) gets SchemaError saying to run `python -m serve migrate`; on
    PostgreSQL the failed attempt is rolled back whole (DDL is transactional)."""
    try:
        current = current_revision(engine)
    except sa.exc.DBAPIError as exc:
        if _denied(exc):
            raise SchemaError("this role may not read table alembic_version: GRANT SELECT ON "
                              "alembic_version to it (see the README, least privilege)") from None
        raise
    if current == HEAD:
        return f"schema at {HEAD}"
    try:
        with quiet_alembic():
            upgrade(engine, "head")
    except sa.exc.DBAPIError as exc:
        if _denied(exc):
            raise SchemaError(
                f"schema at {current or 'base'}, the service needs {HEAD}, and this role may not "
                "migrate: run `python -m serve migrate` as the owner role "
                "(MEDCAST_MIGRATE_DATABASE_URL)"
            ) from None
        raise
    return f"schema migrated {current or 'base'} → {HEAD}"


def migrate_as_owner(url: str) -> str:
    """`python -m serve migrate`: ensure_schema through its own engine (the owner role's URL)."""
    engine = make_engine(url)
    try:
        return ensure_schema(engine)
    finally:
        engine.dispose()
