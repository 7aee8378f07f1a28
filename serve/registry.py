"""The served files of a registered model version, from the MLflow registry (MEDCAST_MODEL_URI).

`models:/<name>@<alias>` (e.g. `models:/medcast-diabetes@champion`) or `models:/<name>/<version>`:
the alias is resolved once, when the model loads, by MLflow's client on the store the pipeline
registers into (MLFLOW_TRACKING_URI, else `<repo>/mlflow.db`: medcast.tracking.tracking_uri);
the two files the export logged under the version's run (`serving/model.onnx`,
`serving/model.json`) are downloaded and each checked against the md5 the export tagged the
version with (`onnx_md5`, `card_md5`: medcast.registry). serve.model then checks the card
against the graph and opens it as for any other load.

A version registered before those tags, an unknown alias or version, a missing file, a store
that is not there or does not answer, MLflow not installed: a ModelError saying which, and the
service stays unready (`python -m serve --check` exits 1). MLflow (the `registry` extra:
mlflow-skinny) is imported here only, on this path only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from medcast.card import md5_hex
from medcast.registry import SERVED_FILES, SERVING_DIR
from medcast.tracking import tracking_uri
from serve.served import ModelError, ModelSource
from serve.settings import ModelURI, Settings, SettingsError

ONNX, CARD = "model.onnx", "model.json"
FILES = (f"{SERVING_DIR}/{ONNX}", f"{SERVING_DIR}/{CARD}")  # the graph's, the card's
INSTALL = "pip install 'medcast[registry]'"
STALE = "registered before md5 tags; re-run export or load by revision (MEDCAST_MODEL_REV)"


def read_registered(settings: Settings) -> tuple[bytes, bytes, ModelSource]:
    """The registered version's graph and card, each matching its md5 tag, and the source."""
    try:
        ref = settings.registered
    except SettingsError as exc:  # Settings built in code skip from_env's check
        raise ModelError(str(exc)) from None
    assert ref is not None
    client, store = _client(settings, ref)
    version = _version(client, ref, store)
    source = ModelSource("registry", uri=ref.uri, name=ref.name, version=str(version.version),
                         alias=ref.alias, run_id=version.run_id or None)
    what = source.describe()
    tags = dict(version.tags or {})
    missing = [tag for tag in SERVED_FILES.values() if not tags.get(tag)]
    if missing:
        raise ModelError(f"{what} carries no {' or '.join(missing)} tag: {STALE}")
    if source.run_id is None:
        raise ModelError(f"{what} names no run, so it has no {SERVING_DIR}/ files: {STALE}")
    blobs = _download(client, source.run_id, what, store)
    for path, data in zip(FILES, blobs, strict=True):
        tag = SERVED_FILES[path.rpartition("/")[2]]
        if md5_hex(data) != tags[tag]:
            raise ModelError(
                f"{path} of {what} (run {source.run_id}) has md5 {md5_hex(data)} but the "
                f"version's tag {tag} records {tags[tag]}: refusing to serve a model that is not "
                "the registered one"
            )
    return blobs[0], blobs[1], source


def shown(uri: str) -> str:
    """A store URI for messages: without a password (http://user:secret@host → http://user@host)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}"))


def _reason(exc: BaseException, store: str) -> str:
    """MLflow's own message (first line), or the exception's type and text; the store's password
    (MLflow's messages may quote the URL) never in it."""
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else f"{type(exc).__name__}: {exc}"
    password = urlsplit(store).password
    if password:
        text = text.replace(password, "***")
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _refused(ref: ModelURI, store: str, exc: BaseException) -> ModelError:
    return ModelError(f"MEDCAST_MODEL_URI={ref.uri!r}: {_reason(exc, store)} (MLflow store "
                      f"{shown(store)})")


def _local_store(uri: str) -> Path | None:
    """The file or folder of a local store (sqlite:///…, file:…, a path); None for a server."""
    if uri.startswith("sqlite:"):
        import sqlalchemy as sa

        try:
            database = sa.engine.make_url(uri).database
        except sa.exc.ArgumentError:  # MLflow says what is wrong with it
            return None
        return Path(database) if database and database != ":memory:" else None
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(parts.path)
    return Path(uri) if parts.scheme == "" else None


def _client(settings: Settings, ref: ModelURI) -> tuple[Any, str]:
    """MLflow's client on the store (checked to exist when local: MLflow would create an empty
    one), or ModelError when MLflow is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        raise ModelError(
            f"MEDCAST_MODEL_URI={ref.uri!r} reads the MLflow registry, which is not installed: "
            f"install the registry extra ({INSTALL}), or unset MEDCAST_MODEL_URI to serve the "
            "workspace's model"
        )
    store = tracking_uri(settings.repo)
    local = _local_store(store)
    if local is not None and not local.exists():
        raise ModelError(
            f"MEDCAST_MODEL_URI={ref.uri!r}: no MLflow store at {local} (set MLFLOW_TRACKING_URI "
            "to the store the pipeline registers into)"
        )
    # MLflow's progress bars and INFO lines (and Alembic's, from its store's schema check: see
    # _version) say nothing the service's own log line does not; their warnings stay.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # after the import: it sets INFO
        return MlflowClient(store), store
    except Exception as exc:  # noqa: BLE001 - a broken install, a store URI MLflow refuses
        raise _refused(ref, store, exc) from None


def _version(client: Any, ref: ModelURI, store: str) -> Any:
    """The ModelVersion the alias or the number names."""
    from serve.migrate import quiet_alembic

    try:
        with quiet_alembic():
            if ref.alias is not None:
                return client.get_model_version_by_alias(ref.name, ref.alias)
            return client.get_model_version(ref.name, ref.version)
    except Exception as exc:  # noqa: BLE001 - MlflowException, or the store's own (unreachable)
        raise _refused(ref, store, exc) from None


def _download(client: Any, run_id: str, what: str, store: str) -> list[bytes]:
    """The bytes of FILES from the run's artifacts (through a temporary folder: a local artifact
    store is copied, not read in place)."""
    blobs = []
    with tempfile.TemporaryDirectory(prefix="medcast-registry-") as folder:
        for path in FILES:
            try:
                blobs.append(Path(client.download_artifacts(run_id, path, folder)).read_bytes())
            except Exception as exc:  # noqa: BLE001 - any failure is a reason not to serve
                raise ModelError(f"cannot download {path} of {what} (run {run_id}): "
                                 f"{_reason(exc, store)}") from None
    return blobs
