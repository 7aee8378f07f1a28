"""Read the service's prediction log (any SQLAlchemy URL) as a DataFrame with one column per
input feature, for monitoring notebooks: volume, latency and drift against the training data.
The log's columns come from its table definition (serve.db: SQLAlchemy and msgspec, no web
framework)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

DEFAULT_URL_FILE = "serve.db"  # the service's default: sqlite:///<repo>/serve.db


def log_url(repo: Path | None = None) -> str:
    """MEDCAST_DATABASE_URL, else the service's default SQLite file in the repository."""
    from medcast.tracking import repo_root

    return os.environ.get("MEDCAST_DATABASE_URL") or \
        f"sqlite:///{(repo or repo_root()) / DEFAULT_URL_FILE}"


def read_log(url: str, dataset: str | None = None, limit: int = 200_000) -> pd.DataFrame:
    """The latest `limit` logged predictions (oldest first), features expanded into columns."""
    import sqlalchemy as sa

    from serve.db import predictions as table

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name):
                return pd.DataFrame()
            query = sa.select(table)
            if dataset is not None:
                query = query.where(table.c.dataset == dataset)
            query = query.order_by(table.c.id.desc()).limit(limit)
            frame = pd.DataFrame(conn.execute(query).mappings().all())
    finally:
        engine.dispose()
    if frame.empty:
        return frame
    frame = frame.iloc[::-1].reset_index(drop=True)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    features = pd.DataFrame([_as_dict(f) for f in frame.pop("features")])
    return pd.concat([frame, features], axis=1)


def _as_dict(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else dict(value)


def hourly(log: pd.DataFrame) -> pd.DataFrame:
    """Predictions per hour with median and 99th-percentile latency."""
    grouped = log.set_index("created_at").resample("1h")
    return pd.DataFrame({
        "predictions": grouped["prediction"].count(),
        "latency_p50_ms": grouped["latency_ms"].median(),
        "latency_p99_ms": grouped["latency_ms"].quantile(0.99),
    })
