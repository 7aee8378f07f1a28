"""Check an exported graph against the native pipeline, row by row, prediction and interval
bounds alike (the export stage does this on every test row, and on copies of some with each
nullable feature missing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast.errors import ArtifactError, DataValidationError, first_line
from medcast.onnx.bounds import compare_bounds
from medcast.onnx.contract import INTERVAL_OUTPUTS, OUTPUT_NAME
from medcast.onnx.runtime import batch_rows, inference_session, run_batched

if TYPE_CHECKING:
    import onnx


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
    workers: int = 1,
) -> dict[str, float]:
    """Compare ONNX Runtime (1 thread) with `estimator.predict(X)` row by row; with `bounds`
    (the interval model's, from X and the native predictions) also the graph's lower/upper
    outputs, from the same graph run (medcast.onnx.bounds.compare_bounds), as
    "interval_max_rel_diff". `workers` threads run the graph's batches (run_batched).

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
        exported, *graph_bounds = run_batched(session, outputs, X, batch_rows(onnx_model),
                                              workers)
    except DataValidationError:
        raise
    except Exception as err:
        raise ArtifactError(f"ONNX Runtime failed on the parity rows: {first_line(err)}") from None
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
        result["interval_max_rel_diff"] = compare_bounds(*bounds(X, native), graph_bounds, rtol,
                                                         tied)
    return result
