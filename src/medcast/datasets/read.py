"""Read a raw table as stored (CSV with its delimiter, decimal separator and encoding; Parquet;
or scikit-learn's bundled diabetes table): the used columns as text, nothing cleaned or coerced
(validate decides), and the names of every column of the file."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medcast.cells import text_of
from medcast.datasets.spec import DatasetConfig, dataset_file
from medcast.errors import DataValidationError


@dataclass(frozen=True)
class RawTable:
    """The used columns as text (None where a cell is null in Parquet), and every header."""

    frame: pd.DataFrame
    header: list[str]
    label: str  # what messages call the table (its path)


class NotText(DataValidationError):
    """A CSV table that is not text in the encoding it is read with; `guess` is the encoding
    it most likely has (guess_encoding)."""

    def __init__(self, ds: DatasetConfig, err: UnicodeDecodeError, guess: str) -> None:
        byte = err.object[err.start] if err.start < len(err.object) else 0
        self.reason = f"not {ds.source.encoding} text (byte 0x{byte:02x}: {err.reason})"
        self.guess = guess
        super().__init__(
            f"{ds.raw}: {self.reason}; set `encoding: {guess}` under `source:` in "
            f"{dataset_file(ds.name)} (or the file's own encoding, if you know it)"
        )


def guess_encoding(path: Path) -> str:
    """utf-16 (a byte-order mark: Excel's "Unicode text"), cp1252 (Windows' western encoding:
    bytes 0x80-0x9f, which are letters, quotes and dashes there, all defined) or latin-1 (reads
    any byte)."""
    windows = False
    with path.open("rb") as handle:
        if handle.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            return "utf-16"
        handle.seek(0)
        while chunk := handle.read(1 << 20):  # one byte a character: chunks decode alike
            try:
                chunk.decode("cp1252")
            except UnicodeDecodeError:
                return "latin-1"
            windows = windows or re.search(rb"[\x80-\x9f]", chunk) is not None
    return "cp1252" if windows else "latin-1"


def missing_file_message(ds: DatasetConfig) -> str:
    return (
        f"{ds.raw}: file not found. Get the {ds.name} table with `make data NAME={ds.name} "
        f"FILE=<your copy of {Path(ds.raw).name}>` (or `dvc pull {ds.raw}.dvc` if a colleague "
        "pushed it), then run again"
    )


def read_header(ds: DatasetConfig, root: Path = Path(".")) -> list[str]:
    """Every column name of the raw table, as written (the used ones are read by read_raw)."""
    path = root / ds.raw
    if ds.source.format == "sklearn":
        return list(_bundled(ds).columns)
    if not path.exists():
        raise DataValidationError(missing_file_message(ds))
    if ds.source.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataValidationError(f"{ds.raw}: not a readable Parquet file ({err})") from None
    try:
        with path.open(newline="", encoding=ds.source.encoding) as handle:
            return next(csv.reader(handle, delimiter=ds.source.delimiter), [])
    except UnicodeDecodeError as err:
        raise NotText(ds, err, guess_encoding(path)) from None


def read_raw(ds: DatasetConfig, columns: list[str], root: Path = Path(".")) -> pd.DataFrame:
    """The given columns of the raw table, every cell as text (or None for a Parquet null)."""
    if ds.source.format == "sklearn":
        return _as_text(_bundled(ds)[columns])
    path = root / ds.raw
    if not path.exists():
        raise DataValidationError(missing_file_message(ds))
    if ds.source.format == "parquet":
        try:
            frame = pd.read_parquet(path, columns=columns)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataValidationError(f"{ds.raw}: not a readable Parquet file ({err})") from None
        return _as_text(frame)
    try:
        # Every cell as text so that a stray word in a numeric column is reported, not coerced.
        return pd.read_csv(path, dtype=str, keep_default_na=False, sep=ds.source.delimiter,
                           encoding=ds.source.encoding, usecols=columns, engine="c")[columns]
    except UnicodeDecodeError as err:
        raise NotText(ds, err, guess_encoding(path)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataValidationError(f"{ds.raw}: not a readable CSV table: {err}") from None


def load_raw(ds: DatasetConfig, root: Path = Path(".")) -> RawTable:
    """The columns the dataset uses (or all when the header lacks some: validate names them)."""
    header = read_header(ds, root)
    wanted = [c for c in header if c.strip() in set(ds.used)] if header else []
    return RawTable(read_raw(ds, wanted, root) if wanted else pd.DataFrame(), header, ds.raw)


def _bundled(ds: DatasetConfig) -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True, scaled=False)
    frame: pd.DataFrame = bunch.frame.rename(columns={"target": ds.target})
    return frame


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as a CSV would hold them (2.0 → "2"), nulls as None, text as it is."""
    out = {}
    for name in frame.columns:
        col = frame[name]
        values = col.to_numpy(dtype=object)
        missing = col.isna().to_numpy()
        text = np.empty(len(values), dtype=object)
        for i, (v, gone) in enumerate(zip(values, missing, strict=True)):
            if gone:
                text[i] = None
            elif isinstance(v, bool | np.bool_):
                text[i] = str(bool(v)).lower()
            elif isinstance(v, int | float | np.integer | np.floating):
                text[i] = text_of(v.item() if hasattr(v, "item") else v)
            else:
                text[i] = str(v)
        out[name] = text
    return pd.DataFrame(out, index=frame.index)
