"""The feature schema a model is trained on (names, types, observed and allowed ranges,
categories) and the preprocessing transformer built from it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medcast.config import DatasetConfig
from medcast.errors import ArtifactError


@dataclass(frozen=True)
class Feature:
    name: str
    type: str  # "int" | "float" | "category"
    unit: str | None
    allowed_min: float | None = None
    allowed_max: float | None = None
    observed_min: float | None = None
    observed_max: float | None = None
    categories: tuple[str, ...] | None = None
    cutoffs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class FeatureSchema:
    dataset: str
    target: str
    target_unit: str
    features: tuple[Feature, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.type != "category"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == "category"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        feats = tuple(
            Feature(**{**f, **{key: tuple(f[key]) if f.get(key) else None
                               for key in ("categories", "cutoffs")}})
            for f in data["features"]
        )
        return cls(data["dataset"], data["target"], data["target_unit"], feats)


def infer_schema(train: pd.DataFrame, ds: DatasetConfig) -> FeatureSchema:
    """Schema of the training split: declared types/ranges plus what was observed."""
    feats = []
    for name in ds.features:
        spec = ds.columns[name]
        if spec.type == "category":
            feats.append(Feature(name, "category", spec.unit, categories=tuple(spec.categories or ())))
        else:
            col = train[name]
            feats.append(
                Feature(
                    name, spec.type, spec.unit, spec.min, spec.max,
                    float(col.min()), float(col.max()),
                    cutoffs=tuple(float(c) for c in spec.cutoffs) if spec.cutoffs else None,
                )
            )
    return FeatureSchema(ds.name, ds.target, ds.target_unit, tuple(feats))


def save_schema(schema: FeatureSchema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema.to_dict(), indent=2) + "\n")


def load_schema(path: Path) -> FeatureSchema:
    try:
        return FeatureSchema.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found; run `dvc repro preprocess` first") from None
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: not a feature schema ({err})") from None


def split_xy(frame: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, pd.Series]:
    return frame[schema.names], frame[schema.target].astype(float)


def read_split(path: Path, schema: FeatureSchema) -> tuple[pd.DataFrame, pd.Series]:
    """Read a processed split written by preprocess, with the schema's dtypes."""
    dtypes = {f.name: ("str" if f.type == "category" else "float64") for f in schema.features}
    try:
        frame = pd.read_csv(path, dtype=dtypes)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found; run `dvc repro preprocess` first") from None
    missing = [c for c in [*schema.names, schema.target] if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: columns {missing} missing; rerun preprocess")
    return split_xy(frame, schema)


def encoded_name(name: str) -> str:
    """Readable name of one encoded column ("num__age" → "age", "bmi>30__bmi" → "bmi>30")."""
    transformer, _, feature = name.partition("__")
    return feature if transformer in ("num", "cat") else transformer


def make_preprocessor(schema: FeatureSchema, numeric_steps: list[Any] | None = None) -> Any:
    """Scale numeric columns (then any extra steps, e.g. splines), add one indicator per
    clinical cut-off ("bmi>30") and one-hot encode categories; fitted inside each model's
    pipeline, so on training folds only."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Binarizer, OneHotEncoder, StandardScaler

    transformers: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        transformers.append(
            ("num", make_pipeline(StandardScaler(), *(numeric_steps or [])), schema.numeric)
        )
    if schema.categorical:
        cats = [list(f.categories or ()) for f in schema.features if f.type == "category"]
        transformers.append(
            ("cat", OneHotEncoder(categories=cats, drop="if_binary", sparse_output=False),
             schema.categorical)
        )
    for f in schema.features:
        for cut in f.cutoffs or ():
            transformers.append((f"{f.name}>{cut:g}", Binarizer(threshold=cut), [f.name]))
    # Output names are "<transformer>__<column>" (cut-offs share their column's name);
    # encoded_name() turns them back into readable ones.
    return ColumnTransformer(transformers, remainder="drop")
