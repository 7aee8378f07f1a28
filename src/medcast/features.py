"""The feature schema a model is trained on (names, types, observed and allowed ranges,
categories, which may be missing) and the preprocessing transformer built from it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medcast.datasets.spec import MISSING_LEVEL, DatasetConfig
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
    # May be missing (declared `missing: true`): imputed inside each pipeline.
    nullable: bool = False
    # Share of training rows where it is missing (0 for a column that may not be missing).
    missing_rate: float = 0.0


@dataclass(frozen=True)
class FeatureSchema:
    dataset: str
    target: str
    target_unit: str
    features: tuple[Feature, ...]
    # The row-identifier column carried beside the features (never a model input).
    id: str | None = None
    # Rows of the raw table left out because their target was missing.
    n_dropped_missing_target: int = 0

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.type != "category"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == "category"]

    @property
    def nullable(self) -> list[str]:
        return [f.name for f in self.features if f.nullable]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        feats = tuple(
            Feature(**{**f, **{key: tuple(f[key]) if f.get(key) else None
                               for key in ("categories", "cutoffs")}})
            for f in data["features"]
        )
        return cls(data["dataset"], data["target"], data["target_unit"], feats,
                   data.get("id"), int(data.get("n_dropped_missing_target", 0)))


def infer_schema(train: pd.DataFrame, ds: DatasetConfig, n_dropped_missing_target: int = 0
                 ) -> FeatureSchema:
    """Schema of the training split: declared types/ranges plus what was observed."""
    feats = []
    for name in ds.features:
        spec = ds.columns[name]
        col = train[name]
        rate = round(float(col.isna().mean()), 6) if len(col) else 0.0
        if spec.type == "category":
            feats.append(Feature(name, "category", spec.unit,
                                 categories=tuple(spec.categories or ()), nullable=spec.missing,
                                 missing_rate=rate))
        else:
            seen = col.dropna()
            feats.append(
                Feature(
                    name, spec.type, spec.unit, spec.min, spec.max,
                    float(seen.min()) if len(seen) else None,
                    float(seen.max()) if len(seen) else None,
                    cutoffs=tuple(float(c) for c in spec.cutoffs) if spec.cutoffs else None,
                    nullable=spec.missing, missing_rate=rate,
                )
            )
    return FeatureSchema(ds.name, ds.target, ds.target_unit, tuple(feats), ds.id,
                         n_dropped_missing_target)


def save_schema(schema: FeatureSchema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema.to_dict(), indent=2) + "\n")


def load_schema(path: Path) -> FeatureSchema:
    try:
        return FeatureSchema.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found; run `dvc repro preprocess` first") from None
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: not a feature schema ({err}); rerun preprocess") from None


def typed(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """The features with the dtypes every pipeline expects: float64 numbers (NaN = missing)
    and object categories (None = missing)."""
    out = {}
    for f in schema.features:
        col = frame[f.name]
        if f.type == "category":
            out[f.name] = col.astype(object).where(col.notna(), None)
        else:
            out[f.name] = pd.to_numeric(col, errors="raise").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def split_xy(frame: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, pd.Series]:
    return typed(frame, schema), frame[schema.target].astype(float)


def read_split(path: Path, schema: FeatureSchema) -> tuple[pd.DataFrame, pd.Series]:
    """Read a processed split written by preprocess, with the schema's dtypes."""
    frame = read_frame(path, schema)
    return split_xy(frame, schema)


def read_frame(path: Path, schema: FeatureSchema) -> pd.DataFrame:
    """A processed split (Parquet): the id (if any), the features and the target, only."""
    columns = ([schema.id] if schema.id else []) + [*schema.names, schema.target]
    try:
        frame = pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found; run `dvc repro preprocess` first") from None
    except (KeyError, ValueError, OSError) as err:  # pyarrow: unknown column, not Parquet
        raise ArtifactError(f"{path}: cannot read columns {columns} ({err}); rerun preprocess"
                            ) from None
    return frame


def encoded_name(name: str) -> str:
    """Readable name of one encoded column ("num__age" → "age", "bmi>30__bmi" → "bmi>30",
    "missing__bmi" → "bmi missing")."""
    transformer, _, feature = name.partition("__")
    if transformer == "missing":
        return f"{feature} missing"
    return feature if transformer in ("num", "cat") else transformer


def make_preprocessor(schema: FeatureSchema, numeric_steps: list[Any] | None = None,
                      impute: bool = True) -> Any:
    """Impute (median for numbers, an explicit "(missing)" level for categories) where a
    feature may be missing, add a missing-indicator per such number, scale numbers (then any
    extra steps, e.g. splines), add one indicator per clinical cut-off ("bmi>30") and one-hot
    encode categories. Fitted inside each model's pipeline, so on training folds only.
    `impute=False` keeps missing numbers as NaN for regressors that take them."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Binarizer, OneHotEncoder, StandardScaler

    def median() -> Any:
        # keep_empty_features: a column missing in a whole training fold still gives a column.
        return SimpleImputer(strategy="median", keep_empty_features=True)

    nullable_numeric = [f.name for f in schema.features if f.nullable and f.type != "category"]
    transformers: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        steps = [median()] if impute and nullable_numeric else []
        transformers.append(
            ("num", make_pipeline(*steps, StandardScaler(), *(numeric_steps or [])),
             schema.numeric)
        )
    if nullable_numeric:
        transformers.append(("missing", MissingIndicator(features="all"), nullable_numeric))
    if schema.categorical:
        feats = [f for f in schema.features if f.type == "category"]
        cats = [[*(f.categories or ()), *([MISSING_LEVEL] if f.nullable else [])] for f in feats]
        encoder = OneHotEncoder(categories=cats, drop="if_binary", sparse_output=False)
        steps = []
        if any(f.nullable for f in feats):
            steps = [SimpleImputer(strategy="constant", fill_value=MISSING_LEVEL,
                                   missing_values=None, keep_empty_features=True)]
        transformers.append(("cat", make_pipeline(*steps, encoder), schema.categorical))
    for f in schema.features:
        for cut in f.cutoffs or ():
            step = Binarizer(threshold=cut)
            # A missing value is compared as the training median (Binarizer refuses NaN).
            transformers.append((f"{f.name}>{cut:g}",
                                 make_pipeline(median(), step) if f.nullable else step, [f.name]))
    # Output names are "<transformer>__<column>" (cut-offs share their column's name);
    # encoded_name() turns them back into readable ones.
    return ColumnTransformer(transformers, remainder="drop")
