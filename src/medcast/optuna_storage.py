"""The Optuna storage of the tune stage and its workers: any SQLAlchemy URL (SQLite by default,
PostgreSQL for workers on other machines), opened with heartbeats and retry of stale trials."""

from __future__ import annotations

import time
import warnings
from typing import Any

from medcast.errors import ConfigError
from medcast.params import TuneConfig

POLL_S = 0.5  # how often waiting processes look at the storage again


def open_storage(cfg: TuneConfig, attempts: int = 20) -> Any:
    """RDBStorage with heartbeats and retry of stale trials. Concurrent first opens of a new
    database race on creating Optuna's tables: database errors are retried for a few seconds."""
    import optuna
    import sqlalchemy.exc

    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=cfg.max_retry)
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    cfg.storage, heartbeat_interval=cfg.heartbeat_interval,
                    grace_period=cfg.grace_period, heartbeat_stale_trial_callback=retry,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.OperationalError) as err:
            # Concurrent DDL: duplicate type/table (PostgreSQL), "database is locked" (SQLite).
            racing = not isinstance(err, sqlalchemy.exc.OperationalError) or "locked" in str(err)
            if not racing or attempt == attempts - 1:
                raise ConfigError(f"tune.storage: cannot open '{shown_url(cfg.storage)}': {err}") from None
            time.sleep(POLL_S)
        except Exception as err:  # SQLAlchemy raises many kinds for a bad URL
            raise ConfigError(f"tune.storage: cannot open '{shown_url(cfg.storage)}': {err}") from None
    raise AssertionError("unreachable")


def shown_url(url: str) -> str:
    """The storage URL for messages, with any password masked."""
    import sqlalchemy.engine

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: nothing to hide in what we can parse
        return url.split("@")[-1] if "@" in url else url
