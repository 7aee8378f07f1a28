"""Draft `conf/dataset/<name>.yaml` from a table (`python -m medcast.datasets init`): infer each
column's type (int, float, category), its allowed range (the observed one, widened), its
categories (stripped) and whether values are missing; list every unused column under `ignore:`.
The draft is commented where a human must look (units, plausible ranges, suspicious columns)."""

from __future__ import annotations

import difflib
import json
import math
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcast.datasets.read import NotText, read_header, read_raw
from medcast.datasets.spec import (
    DEFAULT_NA_VALUES,
    DatasetConfig,
    SourceConfig,
    check_name,
    dataset_file,
    parse_dataset,
    raw_dir,
    review_markers,
)
from medcast.datasets.validate import missing_mask
from medcast.errors import ConfigError

MAX_CATEGORIES = 30  # more distinct texts than this: free text or an identifier, not a feature
WIDEN = 0.1  # allowed range = observed range ± 10 % of its span


@dataclass
class ColumnDraft:
    name: str
    spec: dict[str, Any]
    n_missing: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Draft:
    ds: DatasetConfig
    columns: list[ColumnDraft]
    ignored: dict[str, str]  # column → why it is left out
    n_rows: int
    n_missing_target: int


def guess_source(file: Path, name: str, delimiter: str | None, decimal: str,
                 encoding: str) -> SourceConfig:
    """The source as it will be read from data/raw/<name>/ (where `make data` puts it)."""
    suffix = file.suffix.lower()
    fmt = "parquet" if suffix in (".parquet", ".pq") else "csv"
    path = (raw_dir(name) / file.name).as_posix()
    if fmt == "parquet":
        return SourceConfig("parquet", path)
    if delimiter is None:
        delimiter = _sniff_delimiter(file, encoding)
    return SourceConfig("csv", path, delimiter=delimiter, decimal=decimal, encoding=encoding)


def _sniff_delimiter(file: Path, encoding: str) -> str:
    import csv

    try:
        sample = file.read_bytes()[:64_000].decode(encoding, errors="replace")
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


@dataclass(frozen=True)
class InitCall:
    """What `init` was asked to draft: the table, its columns, and how to read it."""

    file: Path
    name: str
    target: str
    features: list[str] | None = None
    id_column: str | None = None
    delimiter: str | None = None  # None: sniffed
    decimal: str = "."
    encoding: str = "utf-8"

    def command(self, **change: str) -> str:
        """The `init` command line of this call, with `change`d options (for messages)."""
        call = replace(self, **change)
        args = ["python", "-m", "medcast.datasets", "init", str(call.file), "--name", call.name,
                "--target", call.target]
        if call.features:
            args += ["--features", ",".join(call.features)]
        if call.id_column:
            args += ["--id", call.id_column]
        if call.delimiter:
            args += ["--delimiter", "tab" if call.delimiter == "\t" else call.delimiter]
        if call.decimal != ".":
            args += ["--decimal", call.decimal]
        if call.encoding != "utf-8":
            args += ["--encoding", call.encoding]
        return shlex.join(args)


def draft(file: Path, name: str, target: str, features: list[str] | None = None,
          id_column: str | None = None, delimiter: str | None = None, decimal: str = ".",
          encoding: str = "utf-8") -> Draft:
    """Read `file` and infer its description; raises ConfigError for an unknown column, a
    non-numeric target, or a table read with the wrong encoding or decimal separator."""
    call = InitCall(file, name, target, features, id_column, delimiter, decimal, encoding)
    check_name(name)
    source = guess_source(file, name, delimiter, decimal, encoding)
    header, raw = _read(call, source)
    text = {c: raw[c].map(lambda v: None if v is None else str(v).strip()) for c in header}
    missing = {c: missing_mask(text[c], DEFAULT_NA_VALUES) for c in header}
    chosen = features if features else [c for c in header if c not in (target, id_column)]
    _check_decimal(call, [*chosen, target], text, missing)
    target_num = _numbers(text[target], missing[target], decimal)
    if target_num is None:
        raise ConfigError(f"{file}: target '{target}' is not numeric: medcast does regression")
    drafts, ignored = _draft_features(call, chosen, text, missing, target_num)
    ignored = {**{c: "not among --features" for c in header
                  if c not in chosen and c not in (target, id_column)}, **ignored}
    target_col = _draft_column(target, text[target], missing[target], decimal)
    assert target_col is not None
    target_col.spec.pop("missing", None)  # a missing target drops its row, never imputed
    if target_col.spec.get("type") == "category":
        target_col.spec = {"type": "float", **_range(target_num)}
    drafts.append(target_col)
    spec = {
        "name": name,
        "source": _source_dict(source),
        "target": target,
        "target_unit": "REVIEW: unit of the target",
        "id": id_column,
        "ignore": list(ignored),
        "columns": {c.name: c.spec for c in drafts},
    }
    ds = parse_dataset(spec, f"draft of {dataset_file(name)}", name)
    return Draft(ds, drafts, ignored, len(raw), int(missing[target].sum()))


def _read(call: InitCall, source: SourceConfig) -> tuple[list[str], pd.DataFrame]:
    """The stripped header and every column as text, read where the file is now (data/raw/ or
    elsewhere) with the source's options; the columns asked for must be there."""
    reading = DatasetConfig(call.name, SourceConfig(source.format, str(call.file),
                                                    source.delimiter, source.decimal,
                                                    source.encoding), call.target, "", {})
    try:
        written = read_header(reading, Path("."))
        raw = read_raw(reading, written, Path("."))
    except NotText as err:
        raise ConfigError(f"{call.file}: {err.reason}; draft again with its encoding: "
                          f"`{call.command(encoding=err.guess)}`") from None
    header = [h.strip() for h in written]
    asked = [call.target, *(call.features or []), *([call.id_column] if call.id_column else [])]
    for wanted in asked:
        if wanted not in header:
            close = difflib.get_close_matches(wanted, header, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{call.file}: no column '{wanted}'{hint}; columns: {header}")
    return header, raw.rename(columns=lambda c: str(c).strip())


def _check_decimal(call: InitCall, columns: list[str], text: dict[str, pd.Series],
                   missing: dict[str, pd.Series]) -> None:
    """Numbers with a decimal comma read with a decimal point would become text: say so."""
    if call.decimal == ",":
        return
    commas = [c for c in columns if _decimal_comma(text[c], missing[c])]
    if commas:
        example = text[commas[0]][text[commas[0]].str.contains(",", na=False)].iloc[0]
        raise ConfigError(
            f"{call.file}: column{'s' if len(commas) > 1 else ''} {commas} hold numbers with a "
            f"decimal comma (e.g. '{example}'); draft again with `--decimal ,`: "
            f"`{call.command(decimal=',')}`"
        )


def _draft_features(call: InitCall, chosen: list[str], text: dict[str, pd.Series],
                    missing: dict[str, pd.Series], target: pd.Series
                    ) -> tuple[list[ColumnDraft], dict[str, str]]:
    """Each chosen column's draft, and those left out (free text; derived from the target
    unless --features named it) with the reason."""
    drafts, ignored = [], {}
    for column in chosen:
        col = _draft_column(column, text[column], missing[column], call.decimal)
        if col is None:
            n_distinct = text[column][~missing[column]].nunique()
            ignored[column] = f"free text or an identifier? {n_distinct} distinct values"
            continue
        leak = _derived_from_target(col, text[column], missing[column], target)
        if leak and not call.features:
            ignored[column] = leak
            continue
        if leak:
            col.notes.append(f"REVIEW: {leak}")
        drafts.append(col)
    return drafts, ignored


def _decimal_comma(text: pd.Series, missing: pd.Series) -> bool:
    """Numbers written with a decimal comma ('12,5'): some values have one and nearly all (90 %)
    read as numbers once it is a point."""
    present = text[~missing]
    if present.empty or not present.str.fullmatch(r"[-+]?\d+,\d+").any():
        return False
    numbers = pd.to_numeric(present.str.replace(",", ".", regex=False), errors="coerce")
    return bool(numbers.notna().mean() >= 0.9)


def _source_dict(source: SourceConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"format": source.format, "path": source.path}
    if source.format == "csv":
        out.update(delimiter=source.delimiter, decimal=source.decimal, encoding=source.encoding)
    return out


def _numbers(text: pd.Series, missing: pd.Series, decimal: str) -> pd.Series | None:
    values = text[~missing]
    if decimal != ".":
        values = values.str.replace(decimal, ".", regex=False)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any() or not np.isfinite(numeric.to_numpy(dtype=float)).all():
        return None
    return numeric.astype(float)


def _range(values: pd.Series, whole: bool = False) -> dict[str, float]:
    if values.empty:
        return {}
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * WIDEN or abs(hi) * WIDEN or 1.0
    low, high = lo - pad, hi + pad
    if lo >= 0:
        low = max(low, 0)  # a count or a measurement that is never negative stays so
    if whole:
        low, high = math.floor(low), math.ceil(high)
    else:
        low, high = _round(low, math.floor), _round(high, math.ceil)
    return {"min": low, "max": high}


def _round(value: float, direction: Any) -> float:
    """Round outward to 3 significant digits, so the YAML reads 12.5, not 12.4999981."""
    if value == 0:
        return 0
    digits = 2 - int(math.floor(math.log10(abs(value))))
    scale = 10.0**digits
    out = direction(value * scale) / scale
    return int(out) if float(out).is_integer() else round(out, max(digits, 0))


def _draft_column(name: str, text: pd.Series, missing: pd.Series, decimal: str
                  ) -> ColumnDraft | None:
    present = text[~missing]
    n_missing = int(missing.sum())
    numeric = _numbers(text, missing, decimal)
    notes = []
    if numeric is not None and len(present):
        whole = bool((numeric == numeric.round()).all())
        if whole and numeric.nunique() <= 2:
            spec: dict[str, Any] = {"type": "category",
                                    "categories": sorted({_as_code(v) for v in numeric})}
            notes.append(f"REVIEW: a code with values {spec['categories']}: a category; "
                         "make it int if the numbers mean a quantity")
        else:
            spec = {"type": "int" if whole else "float", **_range(numeric, whole)}
            notes.append(f"REVIEW: unit; observed {numeric.min():g} to {numeric.max():g}, "
                         "allowed range widened by 10 %")
    else:
        categories = sorted(set(present))
        if not categories or len(categories) > MAX_CATEGORIES:
            return None
        spec = {"type": "category", "categories": categories}
    if n_missing:
        spec["missing"] = True
        notes.append(f"missing in {n_missing} of {len(text)} rows ({n_missing / len(text):.0%})")
    return ColumnDraft(name, spec, n_missing, notes)


def _as_code(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _derived_from_target(col: ColumnDraft, text: pd.Series, missing: pd.Series,
                         target: pd.Series) -> str | None:
    """A column that splits the target perfectly (a threshold of it, e.g. 'low birth weight'
    from 'birth weight'), or that is almost the target itself, leaks the answer."""
    known = target.index[target.notna()]
    both = known.intersection(text.index[~missing])
    if len(both) < 10:
        return None
    y = target.loc[both]
    if col.spec["type"] == "category" and len(col.spec.get("categories", [])) == 2:
        groups = [y[text.loc[both] == c] for c in col.spec["categories"]]
        if all(len(g) for g in groups):
            lo, hi = sorted(groups, key=lambda g: g.median())
            if lo.max() < hi.min():
                return "separates the target perfectly: derived from it? (moved to ignore)"
    elif col.spec["type"] != "category":
        values = pd.to_numeric(text.loc[both], errors="coerce")
        if values.std() > 0 and y.std() > 0 and abs(np.corrcoef(values, y)[0, 1]) > 0.995:
            return "almost equal to the target (|r| > 0.995): derived from it? (moved to ignore)"
    return None


# ---- output -----------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    """A YAML flow scalar (JSON is valid YAML and quotes what needs quoting)."""
    return json.dumps(value, ensure_ascii=False)


def _flow(spec: dict[str, Any]) -> str:
    items = []
    for key, value in spec.items():
        if isinstance(value, list):
            items.append(f"{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            items.append(f"{key}: {_scalar(value)}")
    return "{" + ", ".join(items) + "}"


def render(d: Draft, file: Path) -> str:
    """The commented YAML of a draft."""
    ds = d.ds
    src = _source_dict(ds.source)
    lines = [
        f"# {ds.name}: drafted by `python -m medcast.datasets init` from {file}",
        f"# ({d.n_rows} rows). REVIEW every line marked so: units, plausible ranges (the observed",
        "# range widened by 10 %: a value outside it stops preprocess with a message), and which",
        "# columns are features; preprocess refuses a value still holding REVIEW. Then:",
        f"# `python -m medcast.datasets use {ds.name}` and `dvc exp run`.",
        f"name: {_scalar(ds.name)}",
        "description: null  # one line on where the table comes from",
        "# Where the table is read from (`make data NAME=... FILE=...` copies it there and tracks",
        "# it with DVC); how to read it.",
        f"source: {_flow(src)}",
        "# Cell values (after stripping spaces) that mean 'no value'.",
        f"na_values: [{', '.join(_scalar(v) for v in ds.na_values)}]",
        f"target: {_scalar(ds.target)}",
        f"target_unit: {_scalar(ds.target_unit)}",
    ]
    if d.n_missing_target:
        lines.append(f"# {d.n_missing_target} rows have no target: they are dropped, never "
                     "imputed.")
    lines.append("# A row identifier: never a feature, carried into reports/predictions.csv.")
    lines.append(f"id: {_scalar(ds.id)}")
    lines.append("# Columns of the table deliberately left out (any other unlisted column is an "
                 "error).")
    if d.ignored:
        lines.append("ignore:")
        lines += [f"  - {_scalar(c)}  # {why}" for c, why in d.ignored.items()]
    else:
        lines.append("ignore: []")
    lines.append("# Features, then the target. type: int | float | category; missing: true lets "
                 "a column")
    lines.append("# have missing values, imputed inside every model (median + indicator, or a "
                 "'(missing)' level).")
    lines.append("columns:")
    for col in d.columns:
        spec = dict(col.spec)
        if col.name != ds.target:
            spec.setdefault("unit", None)
        for note in col.notes:
            lines.append(f"  # {col.name}: {note}")
        lines.append(f"  {_scalar(col.name)}: {_flow(spec)}")
    return "\n".join(lines) + "\n"


def summary(d: Draft, path: Path) -> str:
    ds = d.ds
    width = max(len(c.name) for c in d.columns)
    rows = [f"{d.n_rows} rows; target '{ds.target}' missing in {d.n_missing_target} "
            "(those rows are dropped)",
            f"{len(d.columns) - 1} features, {len(d.ignored)} column"
            f"{'' if len(d.ignored) == 1 else 's'} ignored"
            + (f", id '{ds.id}'" if ds.id else "")]
    for col in d.columns:
        if col.name == ds.target:
            continue
        rate = f"missing {col.n_missing / d.n_rows:.0%}" if col.n_missing else "complete"
        rows.append(f"  {col.name:<{width}}  {col.spec['type']:<8}  {rate}")
    for column, why in d.ignored.items():
        rows.append(f"  ignored {column}: {why}")
    markers = review_markers(ds)
    rows.append(f"wrote {path}: review the lines marked REVIEW" + (
        f"; preprocess refuses the file while a value holds one ({', '.join(markers)})"
        if markers else ""))
    return "\n".join(rows)
