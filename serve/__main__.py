"""`python -m serve`: run the service with uvicorn on MEDCAST_HOST:MEDCAST_PORT (127.0.0.1:8000);
`python -m serve migrate`: migrate the prediction log as the owner role;
`python -m serve keys add|revoke|list`: manage the client keys (MEDCAST_CLIENTS_FILE).

uvicorn picks uvloop and httptools when they are installed (`loop="auto"`, `http="auto"`);
neither is required. Access logs are off: request ids and latencies are logged at DEBUG
(MEDCAST_LOG_LEVEL=DEBUG), request bodies never.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from serve.settings import Settings, SettingsError

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
  PROMETHEUS_MULTIPROC_DIR  an empty folder shared by several worker processes (uvicorn
                          --workers N): /metrics then sums them all          default: unset
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
                                "'-' reads it from stdin (keeps it out of the shell history)")
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
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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


def _serve(settings: Settings) -> int:
    """Run the service under uvicorn until SIGTERM/SIGINT; 0 after a clean stop."""
    import uvicorn

    from serve.app import create_app
    from serve.clients import ClientsError
    from serve.tls import TLSError, uvicorn_tls_options

    try:
        tls = uvicorn_tls_options(settings)  # checked before anything listens
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
