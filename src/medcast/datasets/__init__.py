"""Datasets: their description (`conf/dataset/<name>.yaml`, see spec), reading a raw table,
validating it, and drafting a description from a new table (`python -m medcast.datasets init`)."""

from __future__ import annotations

from medcast.datasets.read import RawTable, load_raw
from medcast.datasets.spec import DatasetConfig, dataset_config
from medcast.datasets.validate import drop_missing_target, validate

__all__ = ["DatasetConfig", "RawTable", "drop_missing_target", "dataset_config", "load_raw",
           "validate"]
