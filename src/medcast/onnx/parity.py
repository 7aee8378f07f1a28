"""Run an exported graph with ONNX Runtime and check it against the native pipeline, row by
row (evaluate does this on every test row, and on copies of some with each nullable feature
missing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast.errors import ArtifactError, DataValidationError
from medcast.onnx.contract import INTERVAL_OUTPUTS, OUTPUT_NAME
from medcast.onnx.export import _first_line, frame_column

if TYPE_CHECKING:
    import onnx
    import onnxruntime


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
        raise ArtifactError(f"ONNX Runtime cannot load the model: {_first_line(err)}") from None


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
                batch: int | None = None) -> list[np.ndarray]:
    """session.run on `frame` in batches of `batch` rows (None: one call), outputs joined. The
    feed is built from the graph's own inputs, so it checks the graph, not just the schema."""
    missing = [i.name for i in session.get_inputs() if i.name not in frame.columns]
    if missing:
        raise DataValidationError(f"columns {missing} missing for the ONNX model")
    step = len(frame) if batch is None else batch
    parts = []
    for start in range(0, max(len(frame), 1), max(step, 1)):
        rows = frame.iloc[start:start + step]
        feed = {i.name: frame_column(rows, i.name,
                                     "category" if i.type == "tensor(string)" else "float")
                for i in session.get_inputs()}
        parts.append(session.run(outputs, feed))
    return [np.concatenate([np.asarray(part[k], dtype=np.float64).reshape(-1) for part in parts])
            for k in range(len(outputs))]


def predict_onnx(session: onnxruntime.InferenceSession, frame: pd.DataFrame,
                 batch: int | None = None) -> np.ndarray:
    """Run an exported graph on `frame` (in batches of `batch` rows; None: one call):
    predictions as a float64 vector of length N."""
    (out,) = run_batched(session, [OUTPUT_NAME], frame, batch)
    return out


def tied_rows(estimator: Any, X: pd.DataFrame) -> np.ndarray | None:
    """Rows whose prediction is not unique, for a pipeline ending in a k-nearest-neighbours
    regressor: its k-th and (k+1)-th nearest training points are equally far (to 1e-9), so
    which of them counts is a tie that scikit-learn's tree search and the graph's TopK may break
    differently; both answers are the model's. None for other models (every row is unique).
    Large tables with repeated or clipped values have such rows (13 of 26,760 test rows of a
    107,040-row resampled insurance table)."""
    from sklearn.neighbors import KNeighborsRegressor

    steps = getattr(estimator, "named_steps", {})
    knn = getattr(steps.get("model"), "regressor_", None)
    if not isinstance(knn, KNeighborsRegressor) or knn.n_neighbors >= knn.n_samples_fit_:
        return None
    k = int(knn.n_neighbors)
    dist, _ = knn.kneighbors(estimator[:-1].transform(X), k + 1)
    return np.isclose(dist[:, k - 1], dist[:, k], rtol=1e-9, atol=1e-12)


def check_parity(
    estimator: Any,
    onnx_model: onnx.ModelProto | bytes,
    X: pd.DataFrame,
    rtol: float = 1e-4,
    tied: np.ndarray | None = None,
    bounds: Callable[[pd.DataFrame, np.ndarray], tuple[Any, Any]] | None = None,
) -> dict[str, float]:
    """Compare ONNX Runtime (1 thread) with `estimator.predict(X)` row by row; with `bounds`
    (the interval model's, from X and the native predictions) also the graph's lower/upper
    outputs, from the same graph run (medcast.onnx.intervals.compare_bounds), as
    "interval_max_rel_diff".

    The relative difference of a row is |onnx − native| / max(|native|, floor), where floor is
    1 % of the median |native| prediction (and at least 1e-6): relative to the prediction
    itself, except that a prediction near zero is measured against the predictions' typical
    size, so that float32 rounding of a value that happens to be ~0 does not count as a 100 %
    error. Rows marked in `tied` (tied_rows: a kNN's tie at its k-th neighbour) are left out
    of the maxima and counted as "n_tied" (a key present only when some are). Returns
    {"max_abs_diff", "max_rel_diff", "n"}; raises ArtifactError naming the worst row when
    max_rel_diff > rtol, or when the graph cannot run on X.
    """
    session = inference_session(onnx_model)
    native = np.asarray(estimator.predict(X), dtype=np.float64).reshape(-1)
    outputs = [OUTPUT_NAME, *(INTERVAL_OUTPUTS if bounds is not None else ())]
    try:
        exported, *graph_bounds = run_batched(session, outputs, X, batch_rows(onnx_model))
    except DataValidationError:
        raise
    except Exception as err:
        raise ArtifactError(f"ONNX Runtime failed on the parity rows: {_first_line(err)}") from None
    if exported.shape != native.shape:
        raise ArtifactError(f"ONNX returned {exported.shape[0]} predictions for {len(native)} rows")
    abs_diff = np.abs(exported - native)
    abs_diff[~np.isfinite(exported)] = np.inf  # NaN would otherwise compare as "no difference"
    floor = max(1e-6, 0.01 * float(np.median(np.abs(native)))) if len(native) else 1e-6
    rel_diff = abs_diff / np.maximum(np.abs(native), floor)
    if tied is not None:
        abs_diff[tied] = rel_diff[tied] = 0.0
    result = {
        "max_abs_diff": float(abs_diff.max(initial=0.0)),
        "max_rel_diff": float(rel_diff.max(initial=0.0)),
        "n": int(len(native)),
    }
    if tied is not None and tied.any():
        result["n_tied"] = int(tied.sum())
    if result["max_rel_diff"] > rtol:
        worst = int(np.argmax(rel_diff))
        raise ArtifactError(
            f"ONNX predictions differ from scikit-learn: row {worst + 1} of {len(native)} "
            f"(index {X.index[worst]}) "
            f"gives {exported[worst]:.6g} instead of {native[worst]:.6g} "
            f"(relative difference {rel_diff[worst]:.3g} > rtol {rtol:g}; "
            f"{int((rel_diff > rtol).sum())} rows over)"
        )
    if bounds is not None:
        from medcast.onnx.intervals import compare_bounds

        result["interval_max_rel_diff"] = compare_bounds(*bounds(X, native), graph_bounds, rtol,
                                                         tied)
    return result
