"""What serving a fitted candidate would cost, and whether that is within train.serving_budget.

Reads a fitted medcast pipeline, its FeatureSchema and one row of features; writes nothing.

* Size: the bytes of its ONNX prediction graph (medcast.onnx.export.to_onnx), in MB (10^6
  bytes). The export stage adds the conformal interval's `lower`/`upper` outputs to that graph
  (medcast.onnx.bounds: a few nodes and at most a small table of quantiles per interval group),
  so the served file is this size plus a few kB.
* Latency: the fastest of MIN_RUNS to MAX_RUNS single-row predictions within about MAX_SECONDS
  (ONNX Runtime, one thread, as the service runs it: medcast.onnx.runtime.inference_session),
  after one warm-up run. The minimum, not the median: other processes only ever add time, so
  the fastest run is the estimate of the graph's own cost that load disturbs least (Chen &
  Revels, "Robust benchmarking in noisy environments", arXiv:1608.04295, 2016). Under a load
  average of 7 on 2 cores the median of a kNN at 100× insurance doubled (2.4 → 4.8 ms), close
  to the 5 ms default. Still a wall-clock measurement: it depends on the machine, so it goes to
  the log and MLflow, never into a DVC output.
* Budget: over_budget names the limit a cost exceeds, not the measured milliseconds, so that
  the leaderboard holds the same text on any machine where the verdict is the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from medcast.features import FeatureSchema
from medcast.params import ServingBudget

MIN_RUNS, MAX_RUNS, MAX_SECONDS = 5, 100, 0.5


@dataclass(frozen=True)
class ServingCost:
    """One candidate's served cost: its ONNX graph's size (MB) and a single-row prediction's
    latency (ms, the fastest run)."""

    onnx_mb: float
    ms: float


def measure(pipeline: Any, schema: FeatureSchema, row: pd.DataFrame) -> ServingCost:
    """The serving cost of the fitted `pipeline`, timed on `row` (one row of features; extra
    columns are ignored). Raises medcast.errors.ArtifactError when the pipeline cannot be
    exported to ONNX."""
    from medcast.onnx.export import to_onnx

    return measure_graph(to_onnx(pipeline, schema).SerializeToString(), schema, row)


def measure_graph(data: bytes, schema: FeatureSchema, row: pd.DataFrame) -> ServingCost:
    """The serving cost of the ONNX graph `data` (every output it has, as the service runs it:
    the export stage's graph adds the interval's bounds), timed on `row`."""
    from medcast.onnx.runtime import inference_session, onnx_inputs

    session = inference_session(data)
    feed = onnx_inputs(row.iloc[:1], schema)
    session.run(None, feed)  # warm-up: the first run allocates
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_RUNS or (len(times) < MAX_RUNS
                                    and time.perf_counter() - start < MAX_SECONDS):
        begin = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - begin)
    return ServingCost(onnx_mb=len(data) / 1e6, ms=min(times) * 1e3)


def over_budget(cost: ServingCost, budget: ServingBudget) -> str | None:
    """Why `cost` is over `budget` (every limit it exceeds, "; "-joined), or None within it.
    The size is stated (it is the same on every machine), the latency is not."""
    reasons = []
    if budget.max_mb is not None and cost.onnx_mb > budget.max_mb:
        reasons.append(f"ONNX graph {significant(cost.onnx_mb):g} MB > train.serving_budget.max_mb "
                       f"{budget.max_mb:g}")
    if budget.max_ms is not None and cost.ms > budget.max_ms:
        reasons.append(f"single-row latency over train.serving_budget.max_ms {budget.max_ms:g} ms")
    return "; ".join(reasons) or None


def significant(value: float, digits: int = 3) -> float:
    """`value` rounded to `digits` significant digits (the leaderboard's onnx_mb)."""
    return float(f"{value:.{digits}g}")
