"""`python -m serve`: run the service with uvicorn on MEDCAST_HOST:MEDCAST_PORT (127.0.0.1:8000),
one worker process per usable core (MEDCAST_WORKERS);
`python -m serve migrate`: migrate the prediction log as the owner role;
`python -m serve keys add|revoke|list`: manage the client keys (MEDCAST_CLIENTS_FILE).

uvicorn picks uvloop and httptools when they are installed (`loop="auto"`, `http="auto"`);
neither is required. Access logs are off: request ids and latencies are logged at DEBUG
(MEDCAST_LOG_LEVEL=DEBUG), request bodies never.

Several workers: uvicorn's supervisor (`uvicorn.supervisors.Multiprocess`, through
serve.workers: on Linux a SO_REUSEPORT socket per worker, so that connections spread) runs the
workers (spawned; each builds the app with `serve.app:app_from_env`), replaces one that dies,
stops them all on SIGTERM/SIGINT (each drains its prediction log) and passes SIGHUP on to them
(each re-reads the client keys). Before the workers start, the supervisor migrates the
prediction log once (workers would race for it) and gives them a fresh
PROMETHEUS_MULTIPROC_DIR, removed at the end. A worker whose supervisor is killed stops itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serve.settings import MULTIPROC_ENV, Settings, SettingsError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
logger = logging.getLogger("medcast.serve")

ENVIRONMENT = """\
settings (environment; each also as NAME_FILE, read from that file):
  MEDCAST_REPO            repository folder (dvc.lock, models/)             default: cwd
  MEDCAST_MODEL_REV       git revision to load through DVC                  default: workspace
  MEDCAST_MODEL_URI       a registered version: models:/<name>@<alias> or models:/<name>/<n>,
                          verified against its md5 tags (store: MLFLOW_TRACKING_URI, else
                          <repo>/mlflow.db; needs the registry extra)       default: workspace
  MEDCAST_MODEL_DIR       folder of model.onnx + model.json in the repo     default: models
  MEDCAST_DVC_REMOTE      DVC remote for MEDCAST_MODEL_REV                  default: the default
  MEDCAST_DATABASE_URL    SQLAlchemy URL of the prediction log  default: sqlite:///<repo>/serve.db
  MEDCAST_API_KEY         auditor's key: GET /predictions, every row (X-API-Key)  default: none
  MEDCAST_CLIENTS_FILE    keys ('name <sha256> [role=auditor]' lines, mode 600): every
                          prediction route then needs a client's X-API-Key; a client reads
                          back its own rows only, an auditor every row        default: no keys
  MEDCAST_TLS_CERT_FILE, MEDCAST_TLS_KEY_FILE  HTTPS only (key file mode 600)  default: HTTP
  MEDCAST_TLS_CLIENT_CA_FILE  require client certificates from this CA (mTLS) default: none
  MEDCAST_MIGRATE_DATABASE_URL  owner role's URL for `migrate`   default: MEDCAST_DATABASE_URL
  MEDCAST_MAX_BATCH       rows per POST /predict/batch                      default: 1000
  MEDCAST_MAX_EXPLAIN     rows of one ?explain=true batch                   default: 100
  MEDCAST_LOG_EXPLANATIONS  on: keep each ?explain=true explanation in the log  default: off
  MEDCAST_FIGURES_DIR     the dashboard's figures (relative to the repo)   default: reports/figures
  MEDCAST_MAX_BODY_BYTES  request body limit (413 above)                    default: 2 MiB
  MEDCAST_RATE_LIMIT      per client IP: '<n>/<second|minute|hour|day>', off  default: 1000/second
  MEDCAST_LOG_BUFFER_MAX  prediction-log rows held while the db is slow/down  default: 10000
  MEDCAST_LOG_DURABILITY  ack: a 2xx only once its row is committed; buffered  default: ack
  MEDCAST_LOG_FLUSH_MS    group-commit window (ms)          default: 2 (ack), 20 (buffered)
  MEDCAST_LOG_ACK_TIMEOUT_MS  ack: longest wait for the commit, then 503     default: 2000
  MEDCAST_SQLITE_SYNCHRONOUS  normal: commits survive a process kill; full: also a power
                          loss; extra                                        default: full
  MEDCAST_LOG_CHUNK_ROWS, MEDCAST_LOG_RETRY_MAX_S, MEDCAST_LOG_DRAIN_S
  MEDCAST_HOST, MEDCAST_PORT, MEDCAST_LOG_LEVEL                     default: 127.0.0.1, 8000, INFO
  MEDCAST_WORKERS         worker processes (1: one process, no supervisor)  default: one per core
  PROMETHEUS_MULTIPROC_DIR  the folder where several workers keep their metrics (emptied at
                          start): /metrics sums them all    default: a temporary folder, removed
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description="medcast prediction service (Litestar + ONNX Runtime).",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check", action="store_true",
        help="load and verify the model, then exit (0: servable, 1: refused, with the reason)",
    )
    commands = parser.add_subparsers(dest="command", metavar="{migrate,keys}")
    commands.add_parser("migrate", help="migrate the prediction log to the newest schema, as "
                        "MEDCAST_MIGRATE_DATABASE_URL (default: MEDCAST_DATABASE_URL)")
    keys = commands.add_parser("keys", help="client keys in MEDCAST_CLIENTS_FILE (or --file)")
    actions = keys.add_subparsers(dest="action", required=True)
    for name, text in (("add", "create a random key for NAME, keep its hash, print the key once"),
                       ("revoke", "remove NAME's keys (only --key KEY's, when given)"),
                       ("list", "the names, how many keys each holds, and the auditors")):
        action = actions.add_parser(name, help=text)
        if name != "list":
            action.add_argument("name", metavar="NAME")
        if name == "add":
            action.add_argument("--role", choices=["client", "auditor"],
                                help="client (default): predicts, reads back its own rows; "
                                "auditor: reads every row, predicts nothing. A known NAME "
                                "keeps its role")
        if name == "revoke":
            action.add_argument("--key", help="revoke only this key of NAME (rotation); "
                                "'-' reads it from stdin (keeps it out of the shell history); "
                                "a key that begins with '-' goes as --key=KEY")
        action.add_argument("--file", type=Path, help="the clients file "
                            "(default: MEDCAST_CLIENTS_FILE)")
    return parser


def _keys(args: argparse.Namespace) -> int:
    from serve import clients

    path = args.file or Settings.from_env().clients_file
    if path is None:
        print("medcast serve keys: give --file PATH or set MEDCAST_CLIENTS_FILE", file=sys.stderr)
        return 2
    path = Path(path)
    try:
        if args.action == "add":
            key = clients.add_key(path, args.name, args.role)
            print(key)  # the only time the key is shown
            print(f"added a key for {args.name!r} to {path} (only its sha256 is kept: store the "
                  "key now)", file=sys.stderr)
        elif args.action == "revoke":
            if not path.exists():
                raise clients.ClientsError(f"clients file {str(path)!r}: does not exist")
            old = sys.stdin.readline().strip() if args.key == "-" else args.key
            n = clients.revoke(path, args.name, old)
            if not n:
                print(f"medcast serve keys: no {'such key of' if args.key else 'key for'} "
                      f"{args.name!r} in {path}", file=sys.stderr)
                return 1
            print(f"revoked {n} key(s) of {args.name!r} in {path}", file=sys.stderr)
        else:
            entries, _ = clients.read(path, "clients file")
            roles = {e.name: e.role for e in entries}
            for name, role in roles.items():
                auditor = " role=auditor" if role == clients.AUDITOR else ""
                print(f"{name} {sum(e.name == name for e in entries)}{auditor}")
    except (clients.ClientsError, OSError) as exc:
        print(f"medcast serve keys: {exc}", file=sys.stderr)
        return 2
    return 0


def _migrate(settings: Settings) -> int:
    from serve.migrate import migrate_as_owner

    try:
        print(migrate_as_owner(settings.migrate_url))
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"medcast serve migrate: {type(exc).__name__}: {text[:300]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keys":
            return _keys(args)
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"medcast serve: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return _migrate(settings)
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT, stream=sys.stderr)
    if args.check:
        return _check(settings)
    return _serve(settings)


def _check(settings: Settings) -> int:
    """--check: load and verify the model as the service would, then exit."""
    from serve.model import ModelError, load_model

    try:
        model = load_model(settings)
    except ModelError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {model.card.name} ({model.source.describe()}) md5 {model.md5}, "
          f"{len(model.card.features)} features")
    return 0


def _log_config(level: str) -> dict[str, Any]:
    """The root logger as main() sets it, for uvicorn to set up again in each spawned worker."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
    }


def _migrate_once(settings: Settings, timeout_s: float = 15) -> None:
    """Several workers: migrate the prediction log here, once, before they start (each would
    otherwise run the same migration at the same moment). Best effort: a database that is down
    or slow is left to the workers, which keep retrying it and stay unready until it answers."""
    from sqlalchemy.engine import make_url

    from medcast.errors import first_line
    from serve.db import make_engine
    from serve.migrate import ensure_schema

    outcome: list[str] = []

    def run() -> None:
        try:
            engine = make_engine(settings.db_url, settings.sqlite_synchronous)
            try:
                outcome.append(ensure_schema(engine))
            finally:
                engine.dispose()
        except Exception as exc:  # noqa: BLE001 - reported below; the workers retry
            outcome.append(f"not migrated ({type(exc).__name__}: {first_line(exc)}); the "
                           "workers retry it")

    thread = threading.Thread(target=run, name="migrate", daemon=True)
    thread.start()
    thread.join(timeout_s)
    dialect = make_url(settings.db_url).get_backend_name()
    logger.info("prediction log on %s: %s", dialect,
                outcome[0] if outcome else f"no answer in {timeout_s:g} s; the workers retry it")


@contextlib.contextmanager
def _metrics_folder() -> Iterator[str]:
    """PROMETHEUS_MULTIPROC_DIR for the workers: the one given, emptied of an earlier run's
    files, or a fresh temporary folder, removed at the end."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
        yield given
        return
    folder = tempfile.mkdtemp(prefix="medcast-metrics-")
    os.environ[MULTIPROC_ENV] = folder  # the spawned workers inherit it
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def _serve_workers(settings: Settings, tls: dict[str, Any]) -> int:
    """settings.workers processes under uvicorn's supervisor until SIGTERM/SIGINT; 0 after
    a clean stop."""
    import uvicorn

    from serve.clients import Clients
    from serve.workers import BindError, Supervisor, bind_sockets, close_all, spreads_connections

    if settings.clients_file is not None:
        Clients(settings.clients_file)  # a bad keys file stops here, not in every worker
    _migrate_once(settings)
    with _metrics_folder() as folder:
        config = uvicorn.Config(
            "serve.app:app_from_env",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            access_log=False,
            log_level=settings.log_level.lower(),
            log_config=_log_config(settings.log_level),
            lifespan="on",
            timeout_graceful_shutdown=int(settings.log_drain_s) + 5,
            **tls,
        )
        if spreads_connections():
            try:
                sockets = bind_sockets(settings.host, settings.port, settings.workers)
            except BindError as exc:
                print(f"medcast serve: {exc}", file=sys.stderr)
                return 1
        else:
            sockets = [config.bind_socket()]
        port = sockets[0].getsockname()[1]
        logger.info("%d worker processes on %s:%d (%s), metrics in %s", settings.workers,
                    settings.host, port, "a socket each" if len(sockets) > 1 else "one socket",
                    folder)
        supervisor = Supervisor(config, sockets=sockets)
        supervisor.handle_hup = lambda: _hangup(supervisor, settings)  # type: ignore[method-assign]
        try:
            supervisor.run()
        finally:
            close_all(sockets)
    return 0


def _hangup(supervisor: Any, settings: Settings) -> None:
    """SIGHUP to the supervisor: as for one process, the workers re-read the client keys
    (each handles SIGHUP itself, serve.service), instead of uvicorn's rolling restart."""
    if settings.clients_file is None:
        logger.info("SIGHUP: no client keys to re-read (MEDCAST_CLIENTS_FILE is not set)")
        return
    for process in supervisor.processes:
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(process.pid, signal.SIGHUP)


def _serve(settings: Settings) -> int:
    """Run the service under uvicorn until SIGTERM/SIGINT; 0 after a clean stop."""
    import uvicorn

    from serve.app import create_app
    from serve.clients import ClientsError
    from serve.tls import TLSError, uvicorn_tls_options

    try:
        tls = uvicorn_tls_options(settings)  # checked before anything listens
        if settings.workers > 1:
            return _serve_workers(settings, tls)
        app = create_app(settings)
    except (ClientsError, TLSError) as exc:
        print(f"medcast serve: {exc}", file=sys.stderr)
        return 2

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after a clean shutdown, so the process would die
        by the signal (exit -15) although everything drained: a clean stop should exit 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()  # before uvicorn's exit re-raises them

    server = Server(uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the root config above
        lifespan="on",
        timeout_graceful_shutdown=int(settings.log_drain_s) + 5,
        **tls,
    ))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run() does
        server.run()
    return 0

if __name__ == "__main__":
    sys.exit(main())
