"""The description of a dataset, `conf/dataset/<name>.yaml`: where the raw table is and how to
read it, which columns are used (features and target), their types, allowed ranges, units and
categories, which may be missing, an optional row id, and the columns deliberately ignored."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from medcast.errors import ConfigError
from medcast.typed import build

DATASET_DIR = "conf/dataset"
RAW_DIR = "data/raw"  # data/raw/<name>/ holds dataset <name>'s table: a dep of preprocess

# Tokens read as "no value" unless a dataset says otherwise (`na_values`); compared after
# stripping whitespace, case-sensitively ("na" stays a value: it may be a real code).
DEFAULT_NA_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", ".")
# The explicit level a missing category becomes inside every model (its own one-hot column).
MISSING_LEVEL = "(missing)"
BUNDLED = ("diabetes",)  # format: sklearn → scikit-learn's bundled tables
# What `init` writes into a value only a human can fill in (medcast.datasets.draft); preprocess
# refuses a description that still holds one (with preprocess.allow_review: true, warns).
REVIEW_MARKER = re.compile(r"\bREVIEW\b")


@dataclass(frozen=True)
class ColumnSpec:
    type: Literal["int", "float", "category"]
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    unit: str | None = None
    # Clinical cut-offs of a numeric column (e.g. BMI 30, obesity): each adds the indicator
    # "value > cut-off" to every model's inputs, computed inside the model's pipeline.
    cutoffs: tuple[float, ...] | None = None
    # May the column have missing values? They are imputed inside each model's pipeline
    # (fitted on training folds only); elsewhere a missing value is an error. A missing target
    # is never imputed: the row is dropped (and counted).
    missing: bool = False
    # Report the selected model's performance per level of this category column (evaluate's
    # subgroups). null: yes when it has at most 10 levels.
    subgroup: bool | None = None


@dataclass(frozen=True)
class SourceConfig:
    """Where the raw table is and how to read it."""

    format: Literal["csv", "parquet", "sklearn"]
    path: str  # under data/raw/ (csv, parquet); the bundled table's name (sklearn)
    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    source: SourceConfig
    target: str
    target_unit: str
    columns: dict[str, ColumnSpec]
    # A row identifier: kept out of the features, carried into reports/predictions.csv.
    id: str | None = None
    # Other columns of the raw table, deliberately not used (never an error).
    ignore: tuple[str, ...] = ()
    na_values: tuple[str, ...] = DEFAULT_NA_VALUES
    description: str | None = None

    @property
    def features(self) -> list[str]:
        return [c for c in self.columns if c != self.target]

    @property
    def used(self) -> list[str]:
        """Every column read from the raw table: the id first, then features and target."""
        return ([self.id] if self.id else []) + list(self.columns)

    @property
    def raw(self) -> str:
        """The raw file (what `dvc add` tracks), or the bundled table's name."""
        return self.source.path


def review_markers(ds: DatasetConfig) -> list[str]:
    """The dotted keys whose value still holds a REVIEW marker (what `init` writes where only a
    human knows the answer, e.g. `target_unit: "REVIEW: unit of the target"`), in the order of
    DatasetConfig's fields."""
    found: list[str] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, str):
            if REVIEW_MARKER.search(value):
                found.append(key)
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
        elif isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}.{name}")
        elif isinstance(value, tuple | list) and any(
                isinstance(item, str) and REVIEW_MARKER.search(item) for item in value):
            found.append(key)

    walk(ds, "")
    return found


def raw_dir(name: str) -> Path:
    """The folder of dataset `name`'s raw table(s): data/raw/<name>."""
    return Path(RAW_DIR) / name


def dataset_names(root: Path = Path(".")) -> list[str]:
    return sorted(p.stem for p in (root / DATASET_DIR).glob("*.yaml"))


def dataset_file(name: str, root: Path = Path(".")) -> Path:
    return root / DATASET_DIR / f"{name}.yaml"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"dataset: {name!r} is not a dataset name (letters, digits, _ . -)")
    return name


def source_mismatch(name: str, table: Path, root: Path = Path(".")) -> str | None:
    """`make data NAME=… FILE=…` keeps the file's name: a table copied under another name than
    the one conf/dataset/NAME.yaml reads lands beside the old one, and the study would go on
    reading the old one. The warning saying so and what to do; None when the description reads
    `table` (or there is no description yet: `init` will name it)."""
    path = dataset_file(check_name(name), root)
    if not path.exists():
        return None
    try:
        source = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("source") or {}
    except (yaml.YAMLError, AttributeError):
        return None  # preprocess names what is wrong with the file itself
    reads = source.get("path") if isinstance(source, dict) else None
    if not isinstance(reads, str) or (root / reads).resolve() == (root / table).resolve():
        return None
    return (f"warning: {path} reads {reads}, not the table just added ({table}): the study "
            f"would still run on {reads}. To use the new table, set `source: {{path: {table}}}` "
            f"in {path}, or run make data again with the file named {Path(reads).name}; then "
            f"`dvc remove {table}.dvc` for the copy you do not use")


def dataset_config(name: str, root: Path = Path(".")) -> DatasetConfig:
    """conf/dataset/<name>.yaml, validated; a missing file says how to draft one."""
    path = dataset_file(check_name(name), root)
    if not path.exists():
        known = ", ".join(dataset_names(root)) or "none"
        raise ConfigError(
            f"dataset: no {DATASET_DIR}/{name}.yaml (known: {known}); draft one from your table "
            f"with `python -m medcast.datasets init FILE --name {name} --target COLUMN`"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_dataset(raw, str(path), name)


def parse_dataset(raw: Any, where: str, name: str | None = None) -> DatasetConfig:
    try:
        ds = build(DatasetConfig, raw)
        check_dataset(ds, name)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return ds


def check_dataset(ds: DatasetConfig, name: str | None = None) -> None:
    """Consistency of one dataset description; raises ConfigError naming the key."""
    if name is not None and ds.name != name:
        raise ConfigError(f"name: {ds.name!r} differs from the file name {name!r}")
    _check_source(ds)
    if ds.target not in ds.columns:
        raise ConfigError(f"target: '{ds.target}' is not among columns")
    if ds.id is not None and ds.id in ds.columns:
        raise ConfigError(f"id: '{ds.id}' is also listed under columns; an id is not a feature")
    overlap = [c for c in ds.ignore if c in ds.columns or c == ds.id]
    if overlap:
        raise ConfigError(f"ignore: {overlap} also used as a column or id")
    if not ds.features:
        raise ConfigError("columns: no feature besides the target")
    for name_, spec in ds.columns.items():
        _check_column(name_, spec, is_target=name_ == ds.target)


def _check_source(ds: DatasetConfig) -> None:
    src = ds.source
    if src.format == "sklearn":
        if src.path not in BUNDLED:
            raise ConfigError(f"source.path: bundled tables are {list(BUNDLED)}, got {src.path!r}")
    elif Path(src.path).is_absolute() or Path(src.path).parent != raw_dir(ds.name):
        raise ConfigError(
            f"source.path: {src.path!r} is not in {raw_dir(ds.name)}/ (the preprocess stage "
            f"depends on that folder): copy the table there with `make data NAME={ds.name} "
            f"FILE={src.path}`"
        )
    if len(src.delimiter) != 1 or len(src.decimal) != 1 or src.delimiter == src.decimal:
        raise ConfigError("source.delimiter and source.decimal: one character each, different")


def _check_column(name: str, spec: ColumnSpec, is_target: bool) -> None:
    where = f"columns.{name}"
    if not name.strip() or name != name.strip():
        raise ConfigError(f"{where}: a column name may not be blank or padded with spaces")
    if spec.type == "category":
        if is_target:
            raise ConfigError(f"{where}: the target must be a number (int or float)")
        if not spec.categories:
            raise ConfigError(f"{where}: a category column needs 'categories'")
        stripped = [c.strip() for c in spec.categories]
        padded = [c for c in spec.categories if c != c.strip()]
        if padded:
            raise ConfigError(f"{where}: category {padded[0]!r} is padded with spaces; write "
                              f"{padded[0].strip()!r} (the table's cells are read stripped)")
        if len(set(stripped)) != len(stripped) or "" in stripped:
            raise ConfigError(f"{where}: categories must be distinct and non-blank")
        if MISSING_LEVEL in stripped:
            raise ConfigError(f"{where}: {MISSING_LEVEL!r} is reserved for missing values")
        if spec.min is not None or spec.max is not None or spec.cutoffs:
            raise ConfigError(f"{where}: min, max and cutoffs are for numeric columns")
    elif spec.categories:
        raise ConfigError(f"{where}: categories are for type category, not {spec.type}")
    for bound in (spec.min, spec.max):
        if bound is not None and not math.isfinite(bound):
            raise ConfigError(f"{where}: min and max must be finite numbers")
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        raise ConfigError(f"{where}: min {spec.min} > max {spec.max}")
    if spec.cutoffs and is_target:
        raise ConfigError(f"{where}: cutoffs need a numeric feature column")
