"""Load a raw dataset (scikit-learn's diabetes, or the insurance CSV) and validate it against
the schema declared in params.yaml (dataset.columns)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medcast.config import ColumnSpec, DatasetConfig
from medcast.errors import DataValidationError

MAX_ROWS_SHOWN = 5


def load_raw(ds: DatasetConfig, root: Path = Path(".")) -> pd.DataFrame:
    """Read the raw table exactly as stored; no cleaning (validate() decides)."""
    if ds.source == "sklearn":
        from sklearn.datasets import load_diabetes

        bunch = load_diabetes(as_frame=True, scaled=False)
        frame: pd.DataFrame = bunch.frame.rename(columns={"target": ds.target})
        return frame
    path = root / ds.raw
    if not path.exists():
        raise DataValidationError(
            f"{ds.raw}: file not found. Put the {ds.name} table there "
            "(README, 'Getting the insurance data'), then `dvc add` it or run `dvc pull`."
        )
    try:
        # Everything as text first so a stray word in a numeric column is reported, not coerced.
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataValidationError(f"{ds.raw}: not a readable CSV table: {err}") from None


def _rows(mask: pd.Series | np.ndarray) -> str:
    """Name offending rows as 1-based data rows (the header is not counted)."""
    idx = np.flatnonzero(np.asarray(mask)) + 1
    shown = ", ".join(str(i) for i in idx[:MAX_ROWS_SHOWN])
    more = f" and {len(idx) - MAX_ROWS_SHOWN} more" if len(idx) > MAX_ROWS_SHOWN else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def _check_column(name: str, values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, list[str]]:
    problems: list[str] = []
    if spec.type == "category":
        text = values.astype(str).str.strip()
        missing = values.isna() | (text == "") | text.str.lower().isin(["nan", "null", "na"])
        if missing.any():
            problems.append(f"column '{name}': missing value in {_rows(missing)}")
        allowed = set(spec.categories or ())
        unknown = ~missing & ~text.isin(allowed)
        if unknown.any():
            seen = sorted(set(text[unknown]))[:MAX_ROWS_SHOWN]
            problems.append(
                f"column '{name}': unknown categor{'ies' if len(seen) > 1 else 'y'} "
                f"{seen} in {_rows(unknown)} (allowed: {sorted(allowed)})"
            )
        return text, problems

    if values.dtype == object or pd.api.types.is_string_dtype(values):
        text = values.astype(str).str.strip()
        empty = text.isin(["", "nan", "NaN", "NA", "null"]) | values.isna()
        numeric = pd.to_numeric(text.where(~empty), errors="coerce")
        wrong = ~empty & numeric.isna()
        if wrong.any():
            seen = sorted(set(text[wrong]))[:3]
            problems.append(f"column '{name}': not a number ({seen}) in {_rows(wrong)}")
            return numeric, problems
    else:
        numeric = pd.to_numeric(values, errors="coerce")
    numeric = numeric.astype(float)
    bad = ~np.isfinite(numeric.to_numpy())
    if bad.any():
        problems.append(f"column '{name}': missing, NaN or infinite value in {_rows(bad)}")
    finite = numeric.where(~bad)
    if spec.type == "int":
        fractional = finite.notna() & (finite != finite.round())
        if fractional.any():
            problems.append(f"column '{name}': expected whole numbers, got fractions in {_rows(fractional)}")
    low = finite < spec.min if spec.min is not None else pd.Series(False, index=finite.index)
    high = finite > spec.max if spec.max is not None else pd.Series(False, index=finite.index)
    out = low | high
    if out.any():
        problems.append(
            f"column '{name}': out of range [{spec.min}, {spec.max}] {spec.unit or ''} "
            f"in {_rows(out)} (e.g. {finite[out].iloc[0]:g})".replace("  ", " ")
        )
    return numeric, problems


def validate(frame: pd.DataFrame, ds: DatasetConfig, source: str = "") -> pd.DataFrame:
    """Return the table with declared dtypes, or raise DataValidationError listing every problem
    (column names and 1-based row numbers) found in one pass."""
    label = source or ds.raw
    expected = list(ds.columns)
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in ds.columns]
    problems: list[str] = []
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"unexpected column(s) {extra} (expected exactly {expected})")
    if problems:
        raise DataValidationError(f"{label}: " + "; ".join(problems))
    if frame.empty:
        raise DataValidationError(f"{label}: the table has no rows")

    clean: dict[str, pd.Series] = {}
    for name, spec in ds.columns.items():
        values, found = _check_column(name, frame[name].reset_index(drop=True), spec)
        problems.extend(found)
        clean[name] = values
    if problems:
        raise DataValidationError(f"{label}: " + "; ".join(problems))
    out = pd.DataFrame(clean)
    for name, spec in ds.columns.items():
        if spec.type == "int":
            out[name] = out[name].astype("int64")
        elif spec.type == "float":
            out[name] = out[name].astype("float64")
        else:
            out[name] = out[name].astype(str)
    return out[expected]
