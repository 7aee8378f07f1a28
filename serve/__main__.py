"""`python -m serve`: run the service with uvicorn on MEDCAST_HOST:MEDCAST_PORT (127.0.0.1:8000).

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

ENVIRONMENT = """\
settings (environment; each also as NAME_FILE, read from that file):
  MEDCAST_REPO            repository folder (dvc.lock, models/)             default: cwd
  MEDCAST_MODEL_REV       git revision to load through DVC                  default: workspace
  MEDCAST_MODEL_DIR       folder of model.onnx + model.json in the repo     default: models
  MEDCAST_DVC_REMOTE      DVC remote for MEDCAST_MODEL_REV                  default: the default
  MEDCAST_DATABASE_URL    SQLAlchemy URL of the prediction log  default: sqlite:///<repo>/serve.db
  MEDCAST_API_KEY         key for GET /predictions (header X-API-Key)       default: disabled
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


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

    from serve.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"medcast serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.check:
        from serve.model import ModelError, load_model

        try:
            model = load_model(settings)
        except ModelError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(f"ok: {model.card.name} ({model.revision}) md5 {model.md5}, "
              f"{len(model.card.features)} features")
        return 0

    import uvicorn

    from serve.app import create_app

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after a clean shutdown, so the process would die
        by the signal (exit -15) although everything drained: a clean stop should exit 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()  # before uvicorn's exit re-raises them

    server = Server(uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the root config above
        lifespan="on",
        timeout_graceful_shutdown=int(settings.log_drain_s) + 5,
    ))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run() does
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
