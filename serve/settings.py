"""Service settings from the environment (`MEDCAST_*`; every variable also as `MEDCAST_*_FILE`).

A `*_FILE` variable names a file holding the value (Docker/Kubernetes secrets); its content is
stripped of surrounding whitespace. Setting both forms of one variable is an error, as is any
value that does not parse: the service refuses to start and says which variable is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

RateUnit = Literal["second", "minute", "hour", "day"]
_UNITS = ("second", "minute", "hour", "day")
Durability = Literal["ack", "buffered"]
DURABILITIES = ("ack", "buffered")
SQLITE_SYNCHRONOUS = ("normal", "full", "extra")
# The flush window's default per durability: `ack` waits for the commit, so its window is short
# (and a lone request does not wait for it: serve/log.py); `buffered` answers first (a longer
# window only batches more).
DEFAULT_FLUSH_MS: dict[str, float] = {"ack": 2.0, "buffered": 20.0}
_FLAGS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's limit,
    not the machine's count): medcast.parallel's, as the pipeline counts them."""
    from medcast.parallel import n_workers

    return n_workers(None)


# The folder of prometheus_client's multiprocess mode: the supervisor (serve/__main__.py) makes
# it, every worker's metrics (serve.prometheus) write there.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SettingsError(ValueError):
    """A `MEDCAST_*` variable is missing, unreadable or malformed."""


# models:/<name>@<alias> or models:/<name>/<version> (MLflow's forms, without a path after them)
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@\s]+)(?:@(?P<alias>[\w-]+)|/(?P<version>[1-9]\d*))")
# The prediction log keeps a registry load's version as models:/<name>/<version> (100 chars).
MODEL_NAME_MAX = 80


@dataclass(frozen=True)
class ModelURI:
    """MEDCAST_MODEL_URI, parsed: a registered model's name and either an alias or a version."""

    uri: str
    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> ModelURI:
        m = _MODEL_URI.fullmatch(uri)
        if m is None:
            raise SettingsError(f"MEDCAST_MODEL_URI={uri!r}: expected 'models:/<name>@<alias>' "
                                "(e.g. models:/medcast-diabetes@champion) or "
                                "'models:/<name>/<version>' (a version number)")
        if len(m["name"]) > MODEL_NAME_MAX:
            raise SettingsError(f"MEDCAST_MODEL_URI={uri!r}: a model name of at most "
                                f"{MODEL_NAME_MAX} characters")
        return cls(uri, m["name"], m["alias"], m["version"])


@dataclass(frozen=True)
class Settings:
    repo: Path = field(default_factory=Path.cwd)
    # None: the workspace model (models/model.onnx + card, md5 checked against ./dvc.lock).
    model_rev: str | None = None
    # models:/<name>@<alias> or models:/<name>/<version>: the served files of that registered
    # version (MLflow registry, serve.registry); exclusive with model_rev.
    model_uri: str | None = None
    model_dir: str = "models"  # relative to the repo, as in dvc.lock
    dvc_remote: str | None = None  # DVC remote name for by-revision loading (default remote)
    figures_dir: str = "reports/figures"  # the dashboard's figures: relative to the repo
    database_url: str = ""  # "" → sqlite:///<repo>/serve.db (medcast.predlog.log_url)
    api_key: str | None = None  # None: GET /predictions is disabled (unless clients_file)
    # Per-client keys (serve.clients): set, every prediction route needs a client's X-API-Key.
    clients_file: Path | None = None
    tls_cert_file: Path | None = None  # both set: HTTPS only (serve.tls)
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set: client certificates required (mutual TLS)
    migrate_database_url: str = ""  # `python -m serve migrate` as the owner role; "" → db_url
    max_batch: int = 1000
    max_explain: int = 100  # rows of one ?explain=true batch (each is one call of ~7,000 rows)
    # ?explain=true: also keep each explanation in the prediction log (column `explanation`)
    log_explanations: bool = False
    max_body_bytes: int = 2 * 1024 * 1024
    # Per client IP and process; None disables the limiter.
    rate_limit: tuple[RateUnit, int] | None = ("second", 1000)
    log_buffer_max: int = 10_000  # rows waiting for the database; beyond: 503
    # ack: a 2xx only once its rows are committed; buffered: answer first, write ≤ a window later
    log_durability: Durability = "ack"
    log_flush_ms: float | None = None  # the flush window; None: DEFAULT_FLUSH_MS[durability]
    log_chunk_rows: int = 5_000  # rows per INSERT transaction (a full batch flushes at once)
    log_ack_timeout_ms: float = 2_000.0  # ack: longest wait for the commit, then 503
    sqlite_synchronous: str = "full"  # PRAGMA synchronous of a SQLite log (WAL mode)
    log_retry_max_s: float = 2.0  # cap of the exponential backoff while the database is down
    log_drain_s: float = 10.0  # bounded wait for the buffer at shutdown
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    # Worker processes of `python -m serve` (one per usable core); 1: a single process.
    workers: int = 1

    @property
    def db_url(self) -> str:
        from medcast.predlog import log_url

        # {}: no MEDCAST_DATABASE_URL[_FILE] set, so predlog's default for this repo
        return self.database_url or log_url(self.repo, {})

    @property
    def flush_window_ms(self) -> float:
        if self.log_flush_ms is not None:
            return self.log_flush_ms
        return DEFAULT_FLUSH_MS[self.log_durability]

    @property
    def figures_path(self) -> Path:
        return self.repo / self.figures_dir  # an absolute figures_dir stays as it is

    @property
    def model_path(self) -> str:
        return f"{self.model_dir.strip('/')}/model.onnx"

    @property
    def card_path(self) -> str:
        return f"{self.model_dir.strip('/')}/model.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        env.metrics_folder()
        d = cls()
        repo = Path(env.get("REPO") or Path.cwd()).resolve()
        return cls(
            repo=repo,
            model_rev=env.get("MODEL_REV") or None,
            model_uri=env.get("MODEL_URI") or None,
            model_dir=env.get("MODEL_DIR") or d.model_dir,
            dvc_remote=env.get("DVC_REMOTE") or None,
            figures_dir=env.get("FIGURES_DIR") or d.figures_dir,
            database_url=env.log_url(repo),
            api_key=env.get("API_KEY") or None,
            clients_file=env.path("CLIENTS_FILE"),
            tls_cert_file=env.path("TLS_CERT_FILE"),
            tls_key_file=env.path("TLS_KEY_FILE"),
            tls_client_ca_file=env.path("TLS_CLIENT_CA_FILE"),
            migrate_database_url=env.get("MIGRATE_DATABASE_URL") or "",
            max_batch=env.integer("MAX_BATCH", d.max_batch, minimum=1),
            max_explain=env.integer("MAX_EXPLAIN", d.max_explain, minimum=1),
            log_explanations=env.flag("LOG_EXPLANATIONS", d.log_explanations),
            max_body_bytes=env.integer("MAX_BODY_BYTES", d.max_body_bytes, minimum=1024),
            rate_limit=env.rate("RATE_LIMIT", d.rate_limit),
            log_buffer_max=env.integer("LOG_BUFFER_MAX", d.log_buffer_max, minimum=1),
            log_durability=env.choice("LOG_DURABILITY", d.log_durability,  # type: ignore[arg-type]
                                      DURABILITIES),
            log_flush_ms=env.number("LOG_FLUSH_MS", None, minimum=0, maximum=60_000),
            log_chunk_rows=env.integer("LOG_CHUNK_ROWS", d.log_chunk_rows, minimum=1),
            log_ack_timeout_ms=env.number("LOG_ACK_TIMEOUT_MS", d.log_ack_timeout_ms,
                                          minimum=1, maximum=600_000),
            sqlite_synchronous=env.choice("SQLITE_SYNCHRONOUS", d.sqlite_synchronous,
                                          SQLITE_SYNCHRONOUS),
            log_retry_max_s=env.number("LOG_RETRY_MAX_S", d.log_retry_max_s, minimum=0.01),
            log_drain_s=env.number("LOG_DRAIN_S", d.log_drain_s, minimum=0),
            host=env.get("HOST") or d.host,
            port=env.integer("PORT", d.port, minimum=0),
            log_level=(env.get("LOG_LEVEL") or d.log_level).upper(),
            workers=env.integer("WORKERS", usable_cores(), minimum=1),
        )._checked()

    @cached_property
    def registered(self) -> ModelURI | None:
        """MEDCAST_MODEL_URI parsed, once (None: the model comes from the workspace or a
        revision); a malformed one raises SettingsError (from_env's check asks first)."""
        return ModelURI.parse(self.model_uri) if self.model_uri is not None else None

    def _checked(self) -> Settings:
        if self.model_uri is not None and self.model_rev is not None:
            raise SettingsError("set MEDCAST_MODEL_URI (a registered version) or MEDCAST_MODEL_REV "
                                "(a git revision), not both: they name two different models")
        _ = self.registered  # a malformed URI stops the start here
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError("set both MEDCAST_TLS_CERT_FILE and MEDCAST_TLS_KEY_FILE, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise SettingsError("MEDCAST_TLS_CLIENT_CA_FILE needs MEDCAST_TLS_CERT_FILE and "
                                "MEDCAST_TLS_KEY_FILE (mutual TLS is TLS)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def migrate_url(self) -> str:
        return self.migrate_database_url or self.db_url


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def metrics_folder(self) -> None:
        """PROMETHEUS_MULTIPROC_DIR, read by prometheus_client itself, must be a folder."""
        folder = self.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder and not Path(folder).is_dir():
            raise SettingsError(f"PROMETHEUS_MULTIPROC_DIR={folder!r}: not a directory (create "
                                "it, empty, before the service's workers start)")

    def get(self, name: str) -> str | None:
        key, file_key = f"MEDCAST_{name}", f"MEDCAST_{name}_FILE"
        value, path = self.environ.get(key), self.environ.get(file_key)
        if value is not None and path is not None:
            raise SettingsError(f"set {key} or {file_key}, not both")
        if path is not None:
            try:
                return Path(path).read_text().strip()
            except OSError as exc:
                raise SettingsError(f"{file_key}={path!r}: cannot read ({exc.strerror})") from exc
        return value.strip() if value is not None else None

    def log_url(self, repo: Path) -> str:
        """MEDCAST_DATABASE_URL[_FILE] by the rule the lab's notebooks use too (medcast.predlog;
        imported here: it loads SQLAlchemy, which `--help` and a settings error do not need)."""
        from medcast.predlog import LogURLError, log_url

        try:
            return log_url(repo, self.environ)
        except LogURLError as exc:
            raise SettingsError(str(exc)) from None

    def path(self, name: str) -> Path | None:
        """A file path (relative to the working directory); checked where it is used."""
        raw = self.environ.get(f"MEDCAST_{name}", "").strip()
        return Path(raw).resolve() if raw else None

    def integer(self, name: str, default: int, minimum: int) -> int:
        raw = self.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise SettingsError(f"MEDCAST_{name}={raw!r}: expected an integer") from None
        if value < minimum:
            raise SettingsError(f"MEDCAST_{name}={raw!r}: must be ≥ {minimum}")
        return value

    def number(self, name: str, default: Any, minimum: float,
               maximum: float = float("inf")) -> Any:
        raw = self.get(name)
        if raw in (None, ""):
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"MEDCAST_{name}={raw!r}: expected a number") from None
        if not minimum <= value <= maximum or value == float("inf"):
            bound = f"≥ {minimum:g}" if maximum == float("inf") else (
                f"between {minimum:g} and {maximum:g}")
            raise SettingsError(f"MEDCAST_{name}={raw!r}: must be a finite number {bound}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        """On or off: 1/true/yes/on, 0/false/no/off (any case)."""
        raw = self.get(name)
        if raw in (None, ""):
            return default
        value = _FLAGS.get(raw.lower())
        if value is None:
            raise SettingsError(f"MEDCAST_{name}={raw!r}: expected on or off (also 1/0, "
                                "true/false, yes/no)")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.get(name)
        if raw in (None, ""):
            return default
        if raw.lower() not in choices:
            raise SettingsError(f"MEDCAST_{name}={raw!r}: expected one of {', '.join(choices)}")
        return raw.lower()

    def rate(
        self, name: str, default: tuple[RateUnit, int] | None
    ) -> tuple[RateUnit, int] | None:
        """`"<n>/<second|minute|hour|day>"`, or `off`."""
        raw = self.get(name)
        if raw in (None, ""):
            return default
        if raw.lower() in ("off", "none", "0", "false"):
            return None
        count, _, unit = raw.partition("/")
        unit = unit.strip().lower().removesuffix("s")
        try:
            n = int(count.strip())
        except ValueError:
            n = 0
        if unit not in _UNITS or n < 1:
            raise SettingsError(
                f"MEDCAST_{name}={raw!r}: expected '<n>/<second|minute|hour|day>' or 'off'"
            )
        return unit, n  # type: ignore[return-value]
