"""Validate a raw table against its dataset description (conf/dataset/<name>.yaml) and type it:
every problem — a missing, unexpected or duplicated column, a wrong type, a value out of range,
an unknown category, a missing value where none may be — is found in one pass and reported in
one message naming the columns and 1-based data rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medcast.cells import cell_text
from medcast.datasets.read import RawTable
from medcast.datasets.spec import DATASET_DIR, ColumnSpec, DatasetConfig
from medcast.errors import DataValidationError

MAX_ROWS_SHOWN = 5


def _rows(mask: pd.Series | np.ndarray) -> str:
    """Name offending rows as 1-based data rows (the header is not counted)."""
    idx = np.flatnonzero(np.asarray(mask)) + 1
    shown = ", ".join(str(i) for i in idx[:MAX_ROWS_SHOWN])
    more = f" and {len(idx) - MAX_ROWS_SHOWN} more" if len(idx) > MAX_ROWS_SHOWN else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def _text(values: pd.Series) -> pd.Series:
    """Each cell as text (medcast.cells.cell_text, the service's rule too); None where null."""
    return values.map(lambda v: None if v is None or v is pd.NA or (isinstance(v, float) and
                                                                     np.isnan(v)) else cell_text(v))


def missing_mask(text: pd.Series, na_values: tuple[str, ...]) -> pd.Series:
    """Where a stripped cell is null or one of the dataset's `na_values` tokens."""
    return text.isna() | text.isin(list(na_values))


def _check_category(name: str, text: pd.Series, missing: pd.Series, spec: ColumnSpec
                    ) -> tuple[pd.Series, list[str]]:
    problems = []
    allowed = [c.strip() for c in spec.categories or ()]
    unknown = ~missing & ~text.isin(allowed)
    if unknown.any():
        seen = sorted(set(text[unknown]))[:MAX_ROWS_SHOWN]
        problems.append(
            f"column '{name}': unknown categor{'ies' if len(seen) > 1 else 'y'} "
            f"{seen} in {_rows(unknown)} (allowed: {sorted(allowed)})"
        )
    return text.where(~missing, None).astype(object), problems


def _check_number(name: str, text: pd.Series, missing: pd.Series, spec: ColumnSpec,
                  ds: DatasetConfig) -> tuple[pd.Series, list[str]]:
    problems = []
    decimal = ds.source.decimal
    candidate = text.where(~missing)
    if decimal != ".":
        candidate = candidate.str.replace(decimal, ".", regex=False)
    numeric = pd.to_numeric(candidate, errors="coerce").astype("float64")
    wrong = ~missing & numeric.isna()
    if wrong.any():
        seen = sorted(set(text[wrong]))[:3]
        comma = decimal != "," and text[wrong].str.fullmatch(r"[-+]?\d+,\d+").mean() > 0.5
        hint = (f" (a decimal comma: set `decimal: \",\"` under `source:` in "
                f"{DATASET_DIR}/{ds.name}.yaml)") if comma else ""
        problems.append(f"column '{name}': not a number ({seen}) in {_rows(wrong)}{hint}")
    infinite = np.isinf(numeric.to_numpy())
    if infinite.any():
        problems.append(f"column '{name}': infinite value in {_rows(infinite)}")
    finite = numeric.where(~infinite)
    if spec.type == "int":
        fractional = finite.notna() & (finite != finite.round())
        if fractional.any():
            problems.append(f"column '{name}': expected whole numbers, got fractions in "
                            f"{_rows(fractional)}")
    low = finite < spec.min if spec.min is not None else pd.Series(False, index=finite.index)
    high = finite > spec.max if spec.max is not None else pd.Series(False, index=finite.index)
    out = low | high
    if out.any():
        problems.append(
            f"column '{name}': out of range [{spec.min}, {spec.max}] {spec.unit or ''} "
            f"in {_rows(out)} (e.g. {finite[out].iloc[0]:g})".replace("  ", " ")
        )
    return finite, problems


def _check_columns(header: list[str], ds: DatasetConfig) -> list[str]:
    names = [h.strip() for h in header]
    problems = []
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"column name(s) {repeated} appear more than once in the header")
    missing = [c for c in ds.used if c not in names]
    if missing:
        problems.append(f"missing column(s) {missing}")
    extra = [n for n in names if n not in ds.used and n not in ds.ignore]
    if extra:
        problems.append(
            f"unexpected column(s) {extra}: list them under `ignore:` in "
            f"{DATASET_DIR}/{ds.name}.yaml to leave them out (or under `columns:` to use them)"
        )
    stale = [c for c in ds.ignore if c not in names]
    if stale:
        problems.append(f"`ignore:` names column(s) {stale} that the table does not have")
    return problems


def validate(raw: RawTable | pd.DataFrame, ds: DatasetConfig, source: str = "") -> pd.DataFrame:
    """The used columns (id, features, target) with their types — float64/int64 numbers (NaN
    where missing), object categories (None where missing) — or DataValidationError listing
    every problem. A missing target is allowed here: `drop_missing_target` drops those rows."""
    if isinstance(raw, pd.DataFrame):
        raw = RawTable(raw, list(raw.columns), ds.raw)
    label = source or raw.label
    problems = _check_columns(raw.header, ds)
    if problems:
        raise DataValidationError(f"{label}: " + "; ".join(problems))
    frame = raw.frame.rename(columns=lambda c: str(c).strip()).reset_index(drop=True)
    if frame.empty:
        raise DataValidationError(f"{label}: the table has no rows")

    clean: dict[str, pd.Series] = {}
    for name in ds.used:
        text = _text(frame[name])
        missing = missing_mask(text, ds.na_values)
        if name == ds.id:
            clean[name], found = _check_id(name, text, missing)
        else:
            spec = ds.columns[name]
            if missing.any() and not spec.missing and name != ds.target:
                found = [f"column '{name}': missing value in {_rows(missing)} (if it may be "
                         f"missing, declare `missing: true` for it in {DATASET_DIR}/{ds.name}.yaml)"]
            else:
                found = []
            if spec.type == "category":
                values, more = _check_category(name, text, missing, spec)
            else:
                values, more = _check_number(name, text, missing, spec, ds)
            clean[name] = values
            found += more
        problems.extend(found)
    if problems:
        raise DataValidationError(f"{label}: " + "; ".join(problems))
    out = pd.DataFrame(clean)
    for name, spec in ds.columns.items():
        if spec.type == "int" and not out[name].isna().any():
            out[name] = out[name].astype("int64")
    return out[ds.used]


def _check_id(name: str, text: pd.Series, missing: pd.Series) -> tuple[pd.Series, list[str]]:
    problems = []
    if missing.any():
        problems.append(f"id column '{name}': missing value in {_rows(missing)}")
    repeated = text.duplicated(keep=False) & ~missing
    if repeated.any():
        problems.append(f"id column '{name}': repeated value(s) "
                        f"{sorted(set(text[repeated]))[:3]} in {_rows(repeated)}")
    return text.astype(object), problems


def drop_missing_target(frame: pd.DataFrame, ds: DatasetConfig) -> tuple[pd.DataFrame, int]:
    """Rows whose target is missing are dropped, never imputed; returns (rest, how many)."""
    keep = frame[ds.target].notna()
    return frame[keep].reset_index(drop=True), int((~keep).sum())
