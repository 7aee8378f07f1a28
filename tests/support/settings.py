"""Settings of an app the tests start in-process (tests/support/serving.py's `serving`): the
model folder's own SQLite log, fast flushes and a short drain, no rate limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serve.settings import Settings

KEY = "s3cret-key"  # the log reader's key (MEDCAST_API_KEY) of make_settings


def _base(repo: Path) -> dict[str, Any]:
    return dict(repo=repo, database_url=f"sqlite:///{repo / 'serve.db'}", log_flush_ms=5,
                log_drain_s=5, rate_limit=None)


def make_settings(repo: Path, **overrides: Any) -> Settings:
    """Client keys off, GET /predictions behind KEY, write retries capped at 50 ms."""
    return Settings(**{**_base(repo), "api_key": KEY, "log_retry_max_s": 0.05, **overrides})


def client_settings(repo: Path, clients_file: Path | None, **overrides: Any) -> Settings:
    """Client keys from `clients_file` (None: off), no reader key."""
    return Settings(**{**_base(repo), "clients_file": clients_file, **overrides})
