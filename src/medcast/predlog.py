"""The prediction log's table and where it lives: the one definition that the service (serve.db
writes the rows) and the lab (medcast.monitoring reads them) both import.

One table, `predictions`: one row per prediction (a batch request of n rows logs n rows sharing
its request id, `item` 0..n-1; a single prediction has item 0). `(request_id, item)` is unique,
so a retried batch cannot be logged twice. The migrations in serve/migrations build exactly this
table (tests/serve/test_migrate.py compares them); a change here needs a migration there.

`log_url()` reads the environment (MEDCAST_DATABASE_URL, or the file MEDCAST_DATABASE_URL_FILE
names) and nothing else; nothing here connects, writes or imports more than SQLAlchemy, so a
pipeline-only install reads the log without the service's dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa

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
    # JSON as written (PostgreSQL's json, not jsonb: no parse into a binary form per row).
    sa.Column("features", sa.JSON(), nullable=False),
    sa.Column("prediction", sa.Float(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    # who asked: the client name of the request's X-API-Key (NULL: keys off, or rows before 0002)
    sa.Column("client", sa.String(100), nullable=True),
    # The prediction interval's bounds (level in the model card); null for a model without.
    sa.Column("lower", sa.Float(), nullable=True),
    sa.Column("upper", sa.Float(), nullable=True),
    # The prediction's explanation (base_value, contributions, method, margin) when it was asked
    # for (?explain=true) and MEDCAST_LOG_EXPLANATIONS is on; else SQL NULL (none_as_null: never
    # the JSON text 'null').
    sa.Column("explanation", sa.JSON(none_as_null=True), nullable=True),
    sa.UniqueConstraint("request_id", "item", name="uq_predictions_request_item"),
    sa.Index("ix_predictions_created_at", "created_at"),
    sa.Index("ix_predictions_client_id", "client", "id"),
)

# What a writer supplies: every column but the generated `id`, in table order.
LOG_COLUMNS = tuple(c for c in predictions.columns if c.name != "id")
COLUMNS = tuple(c.name for c in LOG_COLUMNS)

URL_VARIABLE = "MEDCAST_DATABASE_URL"
DEFAULT_FILE = "serve.db"  # the default log: sqlite:///<repo>/serve.db


class LogURLError(ValueError):
    """MEDCAST_DATABASE_URL and MEDCAST_DATABASE_URL_FILE are both set, or the file is unreadable."""


def log_url(repo: Path, environ: Mapping[str, str] | None = None) -> str:
    """The prediction log's SQLAlchemy URL, as the service and the notebooks find it:

    MEDCAST_DATABASE_URL; else the content of the file MEDCAST_DATABASE_URL_FILE names (a
    Docker/Kubernetes secret); either stripped of surrounding whitespace. Both set raises
    LogURLError, as does an unreadable file. Neither set (or empty): `sqlite:///<repo>/serve.db`.
    `environ` defaults to os.environ; `{}` gives the default."""
    env = os.environ if environ is None else environ
    file_variable = f"{URL_VARIABLE}_FILE"
    value, path = env.get(URL_VARIABLE), env.get(file_variable)
    if value is not None and path is not None:
        raise LogURLError(f"set {URL_VARIABLE} or {file_variable}, not both")
    if path is not None:
        try:
            value = Path(path).read_text()
        except OSError as exc:
            raise LogURLError(f"{file_variable}={path!r}: cannot read ({exc.strerror})") from exc
    return (value or "").strip() or f"sqlite:///{(Path(repo) / DEFAULT_FILE).resolve()}"
