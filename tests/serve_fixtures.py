"""A tiny served model for the service's tests and benchmark, built to the serving contract.

`build_tiny_model(root)` trains ColumnTransformer(StandardScaler, OneHotEncoder) + Ridge on the
generated insurance-like table, converts it with skl2onnx (one [None, 1] input per feature:
float32 for numbers, string for categories; one output `prediction`), and writes what the
`evaluate` stage would: `models/model.onnx`, `models/model.json` and a `dvc.lock` recording
both md5s. Imports scikit-learn — never import this from the service.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.factories import insurance_frame

NUMERIC = {"age": ("int", "years", 0, 120), "bmi": ("float", "kg/m2", 10, 80),
           "children": ("int", None, 0, 20)}
CATEGORICAL = ("sex", "smoker", "region")
FEATURES = ("age", "sex", "bmi", "children", "smoker", "region")


@dataclass(frozen=True)
class TinyModel:
    root: Path  # a repo-like folder: dvc.lock + models/
    card: dict[str, Any]
    md5: str
    examples: list[dict[str, Any]]  # valid request bodies
    expected: list[float]  # scikit-learn's predictions for `examples`

    @property
    def onnx(self) -> Path:
        return self.root / "models" / "model.onnx"

    @property
    def card_path(self) -> Path:
        return self.root / "models" / "model.json"


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def write_lock(root: Path, model_dir: str = "models") -> None:
    """A minimal dvc.lock whose evaluate stage records the model and the card."""
    outs = [
        {"path": f"{model_dir}/{name}", "hash": "md5", "md5": md5_file(root / model_dir / name),
         "size": (root / model_dir / name).stat().st_size}
        for name in ("model.json", "model.onnx")
    ]
    lock = {"schema": "2.0", "stages": {"evaluate": {"cmd": "python -m medcast.evaluate",
                                                     "outs": outs}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def build_tiny_model(root: Path, n: int = 300, seed: int = 0) -> TinyModel:
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = insurance_frame(n, seed)
    x = frame[list(FEATURES)].copy()
    for name in NUMERIC:
        x[name] = x[name].astype(np.float32)
    y = frame["charges"].to_numpy()
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), list(NUMERIC)),
            ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
        ])),
        ("ridge", Ridge(alpha=1.0)),
    ]).fit(x, y)
    types = [(f, FloatTensorType([None, 1]) if f in NUMERIC else StringTensorType([None, 1]))
             for f in FEATURES]
    onx = convert_sklearn(pipe, initial_types=types,
                          final_types=[("prediction", FloatTensorType([None, 1]))],
                          target_opset={"": 17, "ai.onnx.ml": 3})
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "model.onnx").write_bytes(onx.SerializeToString())
    md5 = md5_file(models / "model.onnx")

    features = []
    for f in FEATURES:
        if f in NUMERIC:
            kind, unit, lo, hi = NUMERIC[f]
            features.append({"name": f, "type": kind, "unit": unit, "min": lo, "max": hi,
                             "observed_min": float(frame[f].min()),
                             "observed_max": float(frame[f].max()), "categories": None})
        else:
            features.append({"name": f, "type": "category", "unit": None, "min": None,
                             "max": None, "observed_min": None, "observed_max": None,
                             "categories": sorted(frame[f].unique().tolist())})
    card = {
        "name": "medcast-insurance-tiny", "dataset": "insurance", "target": "charges",
        "target_unit": "USD per year", "model": "ridge", "params": {"alpha": 1.0},
        "features": features,
        "metrics": {"test": {"r2": 0.0, "rmse": 0.0, "mae": 0.0}},
        "training_revision": "0" * 40, "onnx_md5": md5,
    }
    (models / "model.json").write_text(json.dumps(card, indent=2))
    write_lock(root)

    sample = frame[list(FEATURES)].head(20)
    examples = [
        {k: (int(v) if NUMERIC.get(k, ("",))[0] == "int" else v) for k, v in row.items()}
        for row in sample.to_dict(orient="records")
    ]
    examples = [{k: (float(v) if k == "bmi" else v) for k, v in e.items()} for e in examples]
    xs = sample.copy()
    for name in NUMERIC:
        xs[name] = xs[name].astype(np.float32)
    expected = [float(v) for v in pipe.predict(xs)]
    return TinyModel(root, card, md5, examples, expected)



def free_port() -> int:
    """A loopback port nothing listens on (free when this returns)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base_url: str, proc: Any, seconds: float = 30,
               output: Any = None) -> None:
    """Poll GET /health/ready until 200; fail early (with `output()`, e.g. the server's stderr)
    if the process exits, and after `seconds` at most."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, output() if output else f"exit code {proc.returncode}"
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server not ready in {seconds:g} s"
        time.sleep(0.05)
