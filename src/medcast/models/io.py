"""Save and load a fitted pipeline in safe formats only: skops for scikit-learn objects,
`.keras` for the MLP's network. No pickle, no joblib: loading never runs stored code.

Both formats are zip archives that embed the saving process's object ids (skops' `__id__` and
member names, Keras' `shared_object_id`), a save date and zip timestamps. `save_model` rewrites
them so that the same fitted model always gives the same bytes (DVC hashes them)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from medcast.errors import ArtifactError
from medcast.models import REGISTRY

PIPELINE_FILE = "pipeline.skops"
KERAS_FILE = "mlp.keras"
META_FILE = "meta.json"

# Types a medcast pipeline may contain; anything else in a .skops file is refused. Beyond
# scikit-learn, NumPy and SciPy sparse types, each candidate names its own (REGISTRY).
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")
_TRUSTED_BASE = {"builtins.slice"}


def _trusted_exact() -> set[str]:
    return _TRUSTED_BASE.union(*(c.safe_types for c in REGISTRY.values()))


# A fixed date for every zip member (the earliest a zip can store): no wall clock in the bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def stable_zip(members: dict[str, bytes]) -> bytes:
    """A zip of `members`, sorted by name, uncompressed (zlib versions differ between machines;
    skops stores uncompressed too), with fixed dates and permissions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.create_system = 3  # Unix, whichever system saves it
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()


def renumber(doc: Any, key: str, numbers: dict[int, int] | None = None) -> dict[int, int]:
    """Replace every integer value of `key` in a JSON document, in place, by its rank of first
    appearance (from 1: skops ignores a falsy `__id__`). Equal ids stay equal, so the objects
    shared at save time are shared again at load. Returns the old → new map."""
    numbers = {} if numbers is None else numbers
    if isinstance(doc, dict):
        value = doc.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            doc[key] = numbers.setdefault(value, len(numbers) + 1)
        for child in doc.values():
            renumber(child, key, numbers)
    elif isinstance(doc, list):
        for child in doc:
            renumber(child, key, numbers)
    return numbers


def _without_ids(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_ids(v) for k, v in doc.items() if k != "__id__"}
    if isinstance(doc, list):
        return [_without_ids(v) for v in doc]
    return doc


def _sort_sets(doc: Any) -> None:
    """A set's elements are saved in iteration order, which for strings changes with the
    process' hash seed: order them by their content instead."""
    if isinstance(doc, dict):
        if doc.get("__loader__") == "SetNode" and isinstance(doc.get("content"), list):
            doc["content"].sort(key=lambda e: json.dumps(_without_ids(e), sort_keys=True))
        for child in doc.values():
            _sort_sets(child)
    elif isinstance(doc, list):
        for child in doc:
            _sort_sets(child)


def _rename_files(doc: Any, members: dict[str, bytes], names: dict[str, str]) -> None:
    """Members named after object ids or uuids (`<id>.npy`, `<uuid>.bin`) → `<rank>.<ext>`."""
    if isinstance(doc, dict):
        value = doc.get("file")
        if isinstance(value, str) and value in members:
            doc["file"] = names.setdefault(value, f"{len(names) + 1}{PurePosixPath(value).suffix}")
        for child in doc.values():
            _rename_files(child, members, names)
    elif isinstance(doc, list):
        for child in doc:
            _rename_files(child, members, names)


def stable_skops(data: bytes) -> bytes:
    """A skops archive rewritten to depend on the saved object only: ids renumbered in order of
    appearance, id-named members renamed to match, sets ordered, a stable zip. It loads to the
    same object (same sharing of sub-objects) as the original."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members.pop("schema.json"))
    _sort_sets(schema)
    renumber(schema, "__id__")
    names: dict[str, str] = {}
    _rename_files(schema, members, names)
    # A member no schema entry names (none in skops 0.16) keeps its name rather than vanish.
    renamed = {names.get(name, name): content for name, content in members.items()}
    renamed["schema.json"] = json.dumps(schema, indent=2).encode()  # as skops writes it
    return stable_zip(renamed)


def stable_keras(data: bytes) -> bytes:
    """A `.keras` archive without its save date and with Keras' shared-object ids (Python ids)
    renumbered in order of appearance; the weights (HDF5) are already deterministic."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    metadata.pop("date_saved", None)
    members["metadata.json"] = json.dumps(metadata).encode()
    config = json.loads(members["config.json"])
    renumber(config, "shared_object_id")
    members["config.json"] = json.dumps(config).encode()
    return stable_zip(members)


def find_mlp(estimator: Any) -> Any | None:
    from medcast.models.mlp import KerasMLPRegressor

    node = estimator
    for attr in ("steps",):
        if hasattr(node, attr):
            node = node.steps[-1][1]
    for attr in ("regressor_",):
        node = getattr(node, attr, node)
    return node if isinstance(node, KerasMLPRegressor) else None


def save_model(estimator: Any, directory: Path, meta: dict[str, Any]) -> None:
    """Write pipeline.skops (+ mlp.keras for the MLP) and meta.json into `directory`."""
    import skops.io as sio

    directory.mkdir(parents=True, exist_ok=True)
    for stale in (PIPELINE_FILE, KERAS_FILE, META_FILE):
        (directory / stale).unlink(missing_ok=True)
    mlp = find_mlp(estimator)
    network = None
    if mlp is not None:
        network = mlp.model_
        keras_path = directory / KERAS_FILE
        network.save(keras_path)
        keras_path.write_bytes(stable_keras(keras_path.read_bytes()))
        mlp.model_ = None  # the network lives in mlp.keras; skops holds the rest
    try:
        data = sio.dumps(estimator)
    finally:
        if mlp is not None:
            mlp.model_ = network
    (directory / PIPELINE_FILE).write_bytes(stable_skops(data))
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_meta(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / META_FILE).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{directory / META_FILE}: not found; run `dvc repro` (or `dvc pull`) "
                            "first") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{directory / META_FILE}: not valid JSON ({err})") from None


def load_model(directory: Path) -> Any:
    """Load a pipeline saved by save_model, refusing any type outside the allow-list."""
    import skops.io as sio

    path = directory / PIPELINE_FILE
    if not path.exists():
        raise ArtifactError(f"{path}: not found; run `dvc repro` (or `dvc pull`) first")
    try:
        types = sio.get_untrusted_types(file=path)
    except Exception as err:  # skops raises several types for a corrupt archive
        raise ArtifactError(f"{path}: not a valid skops file ({err})") from None
    trusted = _trusted_exact()
    refused = [
        t for t in types if not (t.startswith(_TRUSTED_PREFIXES) or t in trusted)
    ]
    if refused:
        raise ArtifactError(f"{path}: refusing to load untrusted types {refused}")
    estimator = sio.load(path, trusted=types)
    mlp = find_mlp(estimator)
    if mlp is not None:
        import keras

        keras_path = directory / KERAS_FILE
        if not keras_path.exists():
            raise ArtifactError(f"{keras_path}: the MLP's network is missing")
        # safe_mode (the default) refuses Lambda layers and other stored code.
        mlp.model_ = keras.models.load_model(keras_path, safe_mode=True)
    return estimator
