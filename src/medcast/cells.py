"""How a raw table's cell reads as text: the rule the pipeline reads a table by
(medcast.datasets) and the service reads a request's category values by (serve.schemas), so a
value that training took is a value the service takes, as the same level.

Standard library only: the serve install imports it without pandas or scikit-learn.
"""

from __future__ import annotations


def cell_text(value: object) -> str:
    """A non-missing cell as the pipeline reads it: its text, without surrounding whitespace
    (`str.strip()`: " Yes" and "Yes\\t" are "Yes"). Whether the text is then a missing-value
    token, a number or a level is for the reader to decide."""
    return str(value).strip()


def text_of(value: int | float) -> str:
    """A number as the text a CSV would hold (2 and 2.0 → "2", 0.5 → "0.5"): how a typed cell
    (Parquet, a YAML config) reads as text, hence as a category level."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
