"""Load the ONNX model and its card, verified against `dvc.lock`, into one ONNX Runtime session.

Reads `<model_dir>/model.onnx` and `<model_dir>/model.json` either from the workspace (md5s from
`<repo>/dvc.lock`, read here with PyYAML: no DVC in the serving process) or, when a git revision
is asked for, through `medcast.artifacts` (DVC cache or remote; imported only then), or, when a
registered version is asked for (MEDCAST_MODEL_URI), from the MLflow registry, verified against
the version's md5 tags (serve.registry; MLflow imported only then). Any mismatch — bytes vs.
lock or tags, card vs. bytes, graph inputs vs. card features — is a `ModelError` whose message
says what is wrong; the service then stays unready and says so.

Only ONNX Runtime runs the model: no TensorFlow, scikit-learn or pickle in this process.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from medcast.card import CardError, Feature, ModelCard, md5_hex, parse_card
from medcast.onnx.contract import INTERVAL_OUTPUTS, ORT_TYPES, OUTPUT_NAME, feed
from serve.explain import Explainer, load_explainer
from serve.schemas import RequestSchema, example_patient
from serve.served import ModelError, ModelSource
from serve.settings import Settings


class Artifacts(Protocol):
    """What by-revision loading needs (`medcast.artifacts` or a test double)."""

    def read_bytes(
        self, path: str, rev: str | None = None, remote: str | None = None, repo: str = "."
    ) -> bytes: ...

    def locked_md5(self, path: str, rev: str | None = None, repo: str = ".") -> str: ...


@dataclass
class LoadedModel:
    session: Any  # onnxruntime.InferenceSession
    card: ModelCard
    card_dict: dict[str, Any]
    md5: str
    schema: RequestSchema
    load_seconds: float = 0.0
    source: ModelSource = field(default_factory=lambda: ModelSource("workspace"))
    # Its answers do not depend on the other rows of a call (batch_invariant): concurrent
    # requests may share one ORT call (serve.coalesce).
    batch_invariant: bool = False
    # The per-patient explainer (serve.explain): None for a card without `explainer`.
    explainer: Explainer | None = None
    _features: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    _outputs: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._features = tuple((f.name, f.type) for f in self.card.features)
        self._outputs = [OUTPUT_NAME, *(INTERVAL_OUTPUTS if self.interval_level else ())]

    @cached_property
    def revision(self) -> str:
        """The prediction log's model_revision: "workspace", the git revision asked for, or, for
        a registry load, models:/<name>/<version> (the version an alias resolved to)."""
        source = self.source
        if source.kind == "registry":
            return f"models:/{source.name}/{source.version}"
        return source.revision or "workspace"

    @property
    def interval_level(self) -> float | None:
        """The level of the graph's `lower`/`upper` outputs (None: a model without them)."""
        return self.card.interval.level if self.card.interval is not None else None

    def predict_rows(self, rows: list[tuple[Any, ...]]) -> np.ndarray:
        """One ORT call for all rows (tuples in card feature order; None where a nullable
        feature is missing) → float32 array (n,). The feed is the export's own contract."""
        (out,) = self._run([OUTPUT_NAME], rows)
        return out

    def predict_with_bounds(self, rows: list[tuple[Any, ...]]
                            ) -> tuple[list[float], list[float] | None, list[float] | None]:
        """Predictions and the interval's lower and upper bounds (None without intervals),
        from one ORT call, as Python floats."""
        values = [o.tolist() for o in self._run(self._outputs, rows)]
        if len(values) == 1:
            return values[0], None, None
        return values[0], values[1], values[2]

    def _run(self, outputs: list[str], rows: list[tuple[Any, ...]]) -> list[np.ndarray]:
        """session.run on `rows`; a lone row goes twice. ONNX Runtime's kernels may take
        another path for one row than for several (a matrix-vector product instead of a
        matrix product: the last float32 bit of a ridge differs), so a patient's answer would
        depend on whether it came alone, in a batch or coalesced with others; from two rows
        on, the tiny and the diabetes models answer every row the same in a call of any size
        (batch_invariant checks the served one)."""
        n = len(rows)
        outs = self.session.run(outputs, feed(self._features, rows * 2 if n == 1 else rows))
        return [np.asarray(o, dtype=np.float32).reshape(-1)[:n] for o in outs]


def _lock_md5s(lock_path: Path, paths: list[str]) -> dict[str, str]:
    """md5 of each path among the outs of any stage in a dvc.lock (paths relative to its folder)."""
    import yaml

    try:
        text = lock_path.read_text()
    except OSError as exc:
        raise ModelError(f"cannot read {lock_path}: {exc.strerror}") from None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = yaml.load(text, Loader=loader)  # nosec B506 - CSafeLoader/SafeLoader only
    except yaml.YAMLError as exc:
        raise ModelError(f"{lock_path} is not valid YAML: {exc}") from None
    found: dict[str, str] = {}
    stages = (doc or {}).get("stages") or {} if isinstance(doc, dict) else {}
    for stage in stages.values():
        for out in (stage or {}).get("outs") or []:
            p = str(out.get("path", "")).removeprefix("./")
            if p in paths and out.get("md5"):
                found[p] = str(out["md5"])
    return found


def _read_workspace(settings: Settings) -> tuple[bytes, bytes, dict[str, str]]:
    repo = settings.repo
    wanted = [settings.model_path, settings.card_path]
    locked = _lock_md5s(repo / "dvc.lock", wanted)
    blobs = []
    for rel in wanted:
        if rel not in locked:
            raise ModelError(f"{rel} has no md5 in {repo / 'dvc.lock'} (not a DVC output?)")
        try:
            blobs.append((repo / rel).read_bytes())
        except OSError as exc:
            raise ModelError(f"cannot read {repo / rel}: {exc.strerror}") from None
    return blobs[0], blobs[1], locked


def _read_revision(
    settings: Settings, rev: str, artifacts: Artifacts | None
) -> tuple[bytes, bytes, dict[str, str]]:
    if artifacts is None:
        # `medcast.artifacts` reads through DVC, which the `serve` extra leaves out on purpose.
        if importlib.util.find_spec("dvc") is None:
            raise ModelError(
                f"MEDCAST_MODEL_REV={rev!r} loads the model through DVC, which is not installed: "
                "install the pipeline extra (pip install 'medcast[pipeline]'), or unset "
                "MEDCAST_MODEL_REV to serve the workspace's model"
            )
        artifacts = importlib.import_module("medcast.artifacts")  # type: ignore[assignment]
    assert artifacts is not None
    repo = str(settings.repo)
    locked, blobs = {}, []
    for rel in (settings.model_path, settings.card_path):
        try:
            locked[rel] = artifacts.locked_md5(rel, rev=rev, repo=repo)
            blobs.append(artifacts.read_bytes(rel, rev=rev, remote=settings.dvc_remote, repo=repo))
        except Exception as exc:  # noqa: BLE001 - any failure is a reason not to serve
            raise ModelError(f"cannot fetch {rel} at revision {rev!r}: {exc}") from None
    return blobs[0], blobs[1], locked


def _check_locked(model_bytes: bytes, card_bytes: bytes, locked: dict[str, str],
                  settings: Settings, where: str) -> None:
    """Both files against the md5s of the lock (`locked`)."""
    md5 = md5_hex(model_bytes)
    if md5 != locked[settings.model_path]:
        raise ModelError(
            f"{settings.model_path} ({where}) has md5 {md5} but dvc.lock records "
            f"{locked[settings.model_path]}: refusing to serve a model that is not the locked one"
        )
    card_md5 = md5_hex(card_bytes)
    if card_md5 != locked[settings.card_path]:
        raise ModelError(
            f"{settings.card_path} ({where}) has md5 {card_md5} but dvc.lock records "
            f"{locked[settings.card_path]}: refusing to serve with a card that is not the "
            "locked one"
        )


def check_card(model_bytes: bytes, card_bytes: bytes,
               names: tuple[str, str]) -> tuple[str, ModelCard, dict[str, Any]]:
    """Parse the card and check that it describes these model bytes (`names`: the model's and
    the card's, for the message); return md5 + card."""
    md5 = md5_hex(model_bytes)
    try:
        card, card_dict = parse_card(card_bytes)
    except CardError as exc:
        raise ModelError(str(exc)) from None
    if card.onnx_md5 != md5:
        raise ModelError(
            f"{names[1]} describes a model with md5 {card.onnx_md5}, "
            f"but {names[0]} has md5 {md5}"
        )
    return md5, card, card_dict


def _options() -> Any:
    """One thread per session: the service runs one worker process per core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def _session(model_bytes: bytes, card: ModelCard) -> Any:
    import onnxruntime as ort

    options = _options()
    try:
        session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise ModelError(f"ONNX Runtime cannot load the model: {exc}") from None
    inputs = {i.name: i for i in session.get_inputs()}
    expected = {f.name: f for f in card.features}
    if set(inputs) != set(expected):
        raise ModelError(
            f"the model's inputs {sorted(inputs)} differ from the card's features "
            f"{sorted(expected)}"
        )
    for name, f in expected.items():
        i = inputs[name]
        if i.type != ORT_TYPES[f.type]:
            raise ModelError(f"input {name!r} is {i.type}, but the card says {f.type!r}")
        if len(i.shape) != 2 or i.shape[1] not in (1, "1"):
            raise ModelError(f"input {name!r} has shape {i.shape}, expected [None, 1]")
    outputs = [o.name for o in session.get_outputs()]
    if OUTPUT_NAME not in outputs:
        raise ModelError(f"the model has no output named {OUTPUT_NAME!r} (outputs: {outputs})")
    bounds = [name for name in INTERVAL_OUTPUTS if name in outputs]
    if card.interval is not None and len(bounds) != len(INTERVAL_OUTPUTS):
        raise ModelError(f"the card states a {card.interval.level:.0%} interval but the model has "
                         f"no outputs {list(INTERVAL_OUTPUTS)} (outputs: {outputs})")
    if card.interval is None and bounds:
        raise ModelError(f"the model has interval outputs {bounds} but the card states no "
                         "interval level")
    return session


def _read(settings: Settings, artifacts: Artifacts | None
          ) -> tuple[bytes, bytes, ModelSource, tuple[str, str]]:
    """The model and card bytes, checked against their record (dvc.lock, or the registered
    version's md5 tags), where they came from, and their names (the model's, the card's)."""
    if settings.model_uri is not None:
        from serve.registry import FILES, read_registered  # MLflow only on this path

        return (*read_registered(settings), FILES)
    rev = settings.model_rev
    if rev is None:
        model_bytes, card_bytes, locked = _read_workspace(settings)
        where, source = "workspace", ModelSource("workspace")
    else:
        model_bytes, card_bytes, locked = _read_revision(settings, rev, artifacts)
        where, source = f"revision {rev}", ModelSource("revision", revision=rev)
    _check_locked(model_bytes, card_bytes, locked, settings, where)
    return model_bytes, card_bytes, source, (settings.model_path, settings.card_path)


def load_model(settings: Settings, artifacts: Artifacts | None = None) -> LoadedModel:
    """Read, verify, open and warm up the model; raise ModelError with the reason otherwise."""
    start = time.perf_counter()
    model_bytes, card_bytes, source, names = _read(settings, artifacts)
    md5, card, card_dict = check_card(model_bytes, card_bytes, names)
    session = _session(model_bytes, card)
    schema = RequestSchema.from_card(card, settings.max_batch)
    model = LoadedModel(session, card, card_dict, md5, schema, source=source)
    # Warm-up: the first run allocates; also proves the graph runs on a valid row, and on one
    # with every nullable feature missing (the graph's imputation).
    example = example_patient(card.features)
    rows = [example, {**example, **{f.name: None for f in card.features if f.nullable}}]
    warmed: list[tuple[tuple[Any, ...], float]] = []
    for row, what in zip(rows, ("a valid example row", "an example row with its nullable "
                                "features missing"), strict=True):
        patient = msgspec.structs.astuple(msgspec.convert(row, schema.patient_type))
        try:
            value = model.predict_rows([patient])[0]
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"the model fails on {what}: {exc}") from None
        if not np.isfinite(value):
            raise ModelError(f"the model predicts a non-finite value for {what}")
        warmed.append((patient, float(value)))
    model.batch_invariant = batch_invariant(model)
    model.explainer = load_explainer(model_bytes, card, _options(), *warmed[0])
    model.load_seconds = time.perf_counter() - start
    return model


# Batch sizes batch_invariant compares (up to serve.coalesce.MAX_ROWS rows per call).
INVARIANCE_SIZES = (2, 3, 4, 5, 8, 9, 16, 17, 32)


def synthetic_rows(features: tuple[Feature, ...], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` valid patients drawn across the card's observed ranges and levels (a nullable
    feature missing in one row of five): rows that exercise every branch of the graph."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {}
        for f in features:
            if f.nullable and rng.random() < 0.2:
                row[f.name] = None
            elif f.type == "category":
                row[f.name] = str(rng.choice(f.categories or [""]))
            else:
                lo = next(v for v in (f.observed_min, f.min, 0.0) if v is not None)
                hi = next(v for v in (f.observed_max, f.max, lo + 1.0) if v is not None)
                value = float(rng.uniform(lo, hi))
                row[f.name] = round(value) if f.type == "int" else value
        rows.append(row)
    return rows


def batch_invariant(model: LoadedModel) -> bool:
    """Whether each row's answer (value and bounds) is the same, bit for bit, alone and at any
    position of a call of any of INVARIANCE_SIZES rows, on synthetic rows. A kernel that
    reduces in another order by batch size fails it; the service then predicts every request
    in its own call. Evidence on these rows and sizes, not a proof for all inputs."""
    patients = [msgspec.convert(r, model.schema.patient_type, strict=False)
                for r in synthetic_rows(model.card.features, max(INVARIANCE_SIZES))]
    rows = [msgspec.structs.astuple(p) for p in patients]
    try:
        alone = [model.predict_with_bounds([r]) for r in rows]
        for size in INVARIANCE_SIZES:
            together = model.predict_with_bounds(rows[:size])
            for i in range(size):
                if any((out[0] if out is not None else None) !=
                       (both[i] if both is not None else None)
                       for out, both in zip(alone[i], together, strict=True)):
                    return False
    except Exception:  # noqa: BLE001 - a graph that fails on a batch: no coalescing
        return False
    return True
