"""Save and load a fitted pipeline in safe formats only: skops for scikit-learn objects,
`.keras` for the MLP's network. No pickle, no joblib: loading never runs stored code."""

from __future__ import annotations

import json
from pathlib import Path
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
        network.save(directory / KERAS_FILE)
        mlp.model_ = None  # the network lives in mlp.keras; skops holds the rest
    try:
        sio.dump(estimator, directory / PIPELINE_FILE)
    finally:
        if mlp is not None:
            mlp.model_ = network
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_meta(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / META_FILE).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{directory / META_FILE}: not found; run `dvc repro tune`") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{directory / META_FILE}: not valid JSON ({err})") from None


def load_model(directory: Path) -> Any:
    """Load a pipeline saved by save_model, refusing any type outside the allow-list."""
    import skops.io as sio

    path = directory / PIPELINE_FILE
    if not path.exists():
        raise ArtifactError(f"{path}: not found; run `dvc repro tune`")
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
