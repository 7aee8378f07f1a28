"""Run an exported graph with ONNX Runtime on a DataFrame: one single-threaded session, feeds
built from the graph's own inputs, large tables in batches (the parity check and benchmarks; the
service builds its feeds with medcast.onnx.contract alone)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast.errors import ArtifactError, DataValidationError, first_line
from medcast.features import FeatureSchema
from medcast.onnx.contract import OUTPUT_NAME, column

if TYPE_CHECKING:
    import onnx
    import onnxruntime


def onnx_inputs(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """The feed for an exported graph from a DataFrame (NaN/None where a value is missing).
    Extra columns (e.g. the target) are ignored."""
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise DataValidationError(f"columns {missing} missing (expected {schema.names})")
    return {f.name: frame_column(frame, f.name, f.type) for f in schema.features}


def frame_column(frame: pd.DataFrame, name: str, feature_type: str) -> np.ndarray:
    values = frame[name]
    if feature_type == "category":
        return column(values.to_numpy(dtype=object), feature_type)
    return pd.to_numeric(values).to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)


def inference_session(model: onnx.ModelProto | bytes) -> onnxruntime.InferenceSession:
    """A single-threaded CPU session: predictions must not depend on thread count, and the
    service scales with processes, not threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise ArtifactError(f"ONNX Runtime cannot load the model: {first_line(err)}") from None


# Rows per ONNX Runtime call when checking a graph on many rows. Some graphs hold a tensor of
# rows × an initializer's size (the brute-force kNN: rows × training points × features), so a
# call holds at most BATCH_VALUES such values (256 MB of float32); every other graph, and every
# table below that (the built-in studies), runs in one call of up to BATCH_ROWS rows.
BATCH_ROWS = 1 << 16
BATCH_VALUES = 1 << 26


def batch_rows(model: onnx.ModelProto | bytes) -> int:
    """Rows per call for `model` (see BATCH_VALUES)."""
    import onnx

    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    widest = max((int(np.prod(t.dims)) for t in model.graph.initializer), default=1)
    return int(min(BATCH_ROWS, max(1, BATCH_VALUES // max(widest, 1))))


def run_batched(session: onnxruntime.InferenceSession, outputs: list[str], frame: pd.DataFrame,
                batch: int | None = None, workers: int = 1) -> list[np.ndarray]:
    """session.run on `frame` in batches of `batch` rows (None: one call), outputs joined. The
    feed is built from the graph's own inputs, so it checks the graph, not just the schema.
    `workers` threads run the batches at once (ONNX Runtime releases the GIL; each call stays
    single-threaded, so every row's result is the same whatever the number of workers)."""
    missing = [i.name for i in session.get_inputs() if i.name not in frame.columns]
    if missing:
        raise DataValidationError(f"columns {missing} missing for the ONNX model")
    step = len(frame) if batch is None else batch
    inputs = session.get_inputs()

    def run(start: int) -> list[Any]:
        rows = frame.iloc[start:start + step]
        feed = {i.name: frame_column(rows, i.name,
                                     "category" if i.type == "tensor(string)" else "float")
                for i in inputs}
        return session.run(outputs, feed)

    starts = range(0, max(len(frame), 1), max(step, 1))
    if workers > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, len(starts))) as pool:
            parts = list(pool.map(run, starts))
    else:
        parts = [run(start) for start in starts]
    return [np.concatenate([np.asarray(part[k], dtype=np.float64).reshape(-1) for part in parts])
            for k in range(len(outputs))]


def predict_onnx(session: onnxruntime.InferenceSession, frame: pd.DataFrame,
                 batch: int | None = None) -> np.ndarray:
    """Run an exported graph on `frame` (in batches of `batch` rows; None: one call):
    predictions as a float64 vector of length N."""
    (out,) = run_batched(session, [OUTPUT_NAME], frame, batch)
    return out
