"""A tiny served model for the service's tests, benchmark and screenshot, built to the serving
contract and described by the card the `evaluate` stage writes.

`build_tiny_model(root)` trains ColumnTransformer(StandardScaler, OneHotEncoder) + Ridge on the
generated insurance-like table, converts it with skl2onnx (one [None, 1] input per feature:
float32 for numbers, string for categories; one output `prediction`), and writes what the
export stage would: `models/model.onnx`, `models/model.json` (built by
`medcast.card.build_card`, as the stage builds it, with its scores, ONNX parity and the
interval's coverage on a held-out table, so the card the service parses is the one the pipeline
writes) and a `dvc.lock` recording both md5s. Imports scikit-learn: never import this from the
service.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devtools.factories import insurance_frame

# name: (type, unit, allowed min, allowed max), as a dataset config declares them
NUMERIC = {"age": ("int", "years", 0, 120), "bmi": ("float", "kg/m2", 10, 80),
           "children": ("int", None, 0, 20)}
CATEGORICAL = ("sex", "smoker", "region")
FEATURES = ("age", "sex", "bmi", "children", "smoker", "region")
TARGET = ("charges", "USD per year")
CV_FOLDS = 5
LEVEL = 0.9  # the interval's level


@dataclass(frozen=True)
class TinyModel:
    root: Path  # a repo-like folder: dvc.lock + models/
    card: dict[str, Any]
    md5: str
    examples: list[dict[str, Any]]  # valid request bodies
    expected: list[float]  # scikit-learn's predictions for `examples`
    # the pipeline's interval bounds for `examples` (medcast.intervals), when built with them
    expected_lower: list[float] | None = None
    expected_upper: list[float] | None = None
    raw: Path | None = None  # the raw table it was trained on, as its file holds it (if any)

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


def feature_schema(frame: Any) -> Any:
    """The training data's schema (medcast.features), as `preprocess` infers it."""
    from medcast.features import Feature, FeatureSchema

    features = []
    for name in FEATURES:
        if name in NUMERIC:
            kind, unit, lo, hi = NUMERIC[name]
            features.append(Feature(name, kind, unit, lo, hi, float(frame[name].min()),
                                    float(frame[name].max())))
        else:
            features.append(Feature(name, "category", None,
                                    categories=tuple(sorted(frame[name].unique().tolist()))))
    return FeatureSchema("insurance", TARGET[0], TARGET[1], tuple(features))


def _float32(frame: Any) -> Any:
    import numpy as np

    out = frame[list(FEATURES)].copy()
    for name in NUMERIC:
        out[name] = out[name].astype(np.float32)
    return out


def _with_intervals(onx: Any, pipe: Any, x: Any, y: Any, schema: Any, seed: int,
                    method: str) -> tuple[Any, Any]:
    """The graph with `lower`/`upper` outputs, and the interval model (medcast.intervals)
    calibrated on out-of-fold residuals as `evaluate` does (`method` forced, for the tests)."""
    from medcast import intervals
    from medcast.features import typed
    from medcast.onnx.bounds import with_intervals

    X = typed(x, schema)
    oof = intervals.oof_predictions(pipe, X, y, CV_FOLDS, seed)
    model = intervals.fit_both(X, y, oof, schema, LEVEL, CV_FOLDS, seed)[method]
    return with_intervals(onx, model, schema), model


def build_tiny_model(root: Path, n: int = 300, seed: int = 0, interval: str | None = "adaptive",
                     signal: bool = True) -> TinyModel:
    """`interval`: "adaptive" or "constant" width, or None for a model without intervals;
    `signal`: the card's verdict on the null model (False: "no candidate beats the mean")."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from medcast.card import card_dict, card_json
    from medcast.metrics import cross_validate, summarize

    frame = insurance_frame(n, seed)
    x, y = _float32(frame), frame[TARGET[0]]
    params = {"alpha": 1.0}
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), list(NUMERIC)),
            ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
        ])),
        ("ridge", Ridge(**params)),
    ])
    cv = summarize(cross_validate(pipe, x, y, CV_FOLDS, seed))
    pipe.fit(x, y)
    types = [(f, FloatTensorType([None, 1]) if f in NUMERIC else StringTensorType([None, 1]))
             for f in FEATURES]
    onx = convert_sklearn(pipe, initial_types=types,
                          final_types=[("prediction", FloatTensorType([None, 1]))],
                          target_opset={"": 17, "ai.onnx.ml": 3})
    schema = feature_schema(frame)
    interval_model = None
    if interval is not None:
        onx, interval_model = _with_intervals(onx, pipe, x, y, schema, seed, interval)
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    onnx_bytes = onx.SerializeToString()
    (models / "model.onnx").write_bytes(onnx_bytes)
    meta = {"model": "ridge", "dataset": schema.dataset, "params": params, "cv": cv}
    card = _card(frame, insurance_frame(n // 3, seed + 1), pipe, meta, schema, onnx_bytes,
                 interval_model, signal, explainer_card(frame, schema, seed))
    (models / "model.json").write_text(card_json(card))
    write_lock(root)

    sample = frame[list(FEATURES)].head(20)
    examples = [
        {k: (int(v) if NUMERIC.get(k, ("",))[0] == "int" else v) for k, v in row.items()}
        for row in sample.to_dict(orient="records")
    ]
    examples = [{k: (float(v) if k == "bmi" else v) for k, v in e.items()} for e in examples]
    expected = [float(v) for v in pipe.predict(_float32(sample))]
    lower = upper = None
    if interval_model is not None:
        from medcast.features import typed

        bounds = interval_model.bounds(typed(sample, schema), expected)
        lower, upper = ([float(v) for v in b] for b in bounds)
    return TinyModel(root, card_dict(card), md5_file(models / "model.onnx"), examples, expected,
                     lower, upper)


def explainer_card(train: Any, schema: Any, seed: int, rows: int = 20,
                   coalitions: int = 150) -> Any:
    """The card's explainer as the export draws it (medcast.explain): `rows` training rows as
    the background (seeded), the budget."""
    from medcast import explain, shapley
    from medcast.card import ExplainerCard

    picked = explain.background(train[schema.names], rows, seed)
    background = explain.card_rows(picked, schema)
    method = shapley.plan(len(schema.features), coalitions, seed).method
    return ExplainerCard(background, coalitions, seed, method)


def _card(train: Any, held_out: Any, pipe: Any, meta: dict[str, Any], schema: Any,
          onnx_bytes: bytes, interval_model: Any, signal: bool = True,
          explainer: Any = None) -> Any:
    """The card as `evaluate` builds it (medcast.card): scores, ONNX parity (of the bounds too)
    and the interval's coverage on the held-out rows."""
    from medcast import intervals
    from medcast.card import build_card
    from medcast.evaluate import metrics_report
    from medcast.features import typed
    from medcast.metrics import scores
    from medcast.onnx.parity import check_parity

    x_test, y_test = _float32(held_out), held_out[TARGET[0]]
    predicted = pipe.predict(x_test)
    report = metrics_report(meta, scores(y_test, predicted), schema, len(train), len(x_test))
    interval = bounds = None
    if interval_model is not None:
        def bounds(X: Any, native: Any) -> Any:
            return interval_model.bounds(typed(X, schema), native)

        summary = intervals.interval_report(interval_model, y_test, *bounds(x_test, predicted))
        interval = {**interval_model.card(), "coverage": summary["interval.coverage"]}
    parity = check_parity(pipe, onnx_bytes, x_test, bounds=bounds)
    verdict = ("ridge predicts charges better than its training mean" if signal else
               "no candidate beats the mean: the best, ridge, does not predict charges better "
               "than its training mean")
    return build_card(report, meta, schema, onnx_bytes, parity,
                      train.to_csv(index=False).encode(), interval,
                      {"signal": signal, "message": verdict}, explainer)


def _read_messy_table(root: Path, n: int, seed: int, coded: bool) -> tuple[Any, Any, Path]:
    """The messy clinical table written as a raw CSV under `root` and read back as `preprocess`
    reads it (medcast.datasets: the pipeline's reader and validator): (its dataset config, the
    typed table of every row, the CSV's path)."""
    from devtools.factories import messy_clinical_spec, write_messy_clinical_csv
    from medcast.datasets import load_raw, validate

    ds = messy_clinical_spec(coded)
    path = root / ds.raw
    write_messy_clinical_csv(path, n, seed, coded)
    return ds, validate(load_raw(ds, root), ds), path


def build_nullable_model(root: Path, n: int = 200, seed: int = 0, coded: bool = False
                         ) -> TinyModel:
    """A model built by medcast's own pipeline (ridge, imputation inside) on the messy clinical
    table, whose card marks BL.Cig.Day, sbp and Hypertension nullable (`coded`: and the arm `trt`,
    categories "1", "2"); exported, locked. The raw table stays at `raw` (data/raw/trial/ under
    `root`); `examples` are its rows as the pipeline reads them (stripped, blanks missing; rows
    without the target too) and `expected` the native model's predictions for them."""
    from medcast import models
    from medcast.card import build_card, card_dict, card_json
    from medcast.datasets import drop_missing_target
    from medcast.evaluate import metrics_report
    from medcast.features import infer_schema, split_xy, typed
    from medcast.metrics import cross_validate, scores, summarize
    from medcast.onnx.export import save_onnx, to_onnx
    from medcast.onnx.parity import check_parity

    ds, table, raw = _read_messy_table(root, n, seed, coded)
    frame, _ = drop_missing_target(table, ds)
    train, test = frame.iloc[: n * 3 // 4], frame.iloc[n * 3 // 4:]
    schema = infer_schema(train, ds)
    X, y = split_xy(train, schema)
    Xt, yt = split_xy(test, schema)
    pipe = models.build("ridge", {"alpha": 1.0}, schema, seed)
    cv = summarize(cross_validate(pipe, X, y, CV_FOLDS, seed))
    pipe.fit(X, y)
    onx = to_onnx(pipe, schema)
    models_dir = root / "models"
    save_onnx(onx, models_dir / "model.onnx")
    onnx_bytes = (models_dir / "model.onnx").read_bytes()
    meta = {"model": "ridge", "dataset": schema.dataset, "params": {"alpha": 1.0}, "cv": cv}
    report = metrics_report(meta, scores(yt, pipe.predict(Xt)), schema, len(X), len(Xt))
    card = build_card(report, meta, schema, onnx_bytes, check_parity(pipe, onnx_bytes, Xt),
                      train.to_csv(index=False).encode(),
                      explainer=explainer_card(train, schema, seed))
    (models_dir / "model.json").write_text(card_json(card))
    write_lock(root)
    every = typed(table, schema)
    examples = json.loads(every.to_json(orient="records"))
    expected = [float(v) for v in pipe.predict(every)]
    return TinyModel(root, card_dict(card), md5_file(models_dir / "model.onnx"), examples,
                     expected, raw=raw)
