"""KNeighborsRegressor: skl2onnx 1.20's converter silently treats weights="distance" as uniform
(it negates the TopK distances before clamping them at 1e-6). Brute force over the stored
training points instead. Delete when upstream's matches scikit-learn with distance weights
(test_onnx_converters checks it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcast.errors import ArtifactError
from medcast.onnx.converters.common import Emitter, column_shape

ALIAS = "MedcastKNeighborsRegressor"


def register() -> None:
    from skl2onnx import update_registered_converter
    from sklearn.neighbors import KNeighborsRegressor

    update_registered_converter(KNeighborsRegressor, ALIAS, column_shape, _convert_knn)


def _convert_knn(scope: Any, operator: Any, container: Any) -> None:
    """Distances from explicit differences (not the |x|² − 2x·p + |p|² expansion), so that a
    duplicate of a training row is at distance exactly 0, as in scikit-learn's tree search; with
    weights="distance" such neighbours then share all the weight, as scikit-learn does."""
    from onnx import TensorProto

    knn = operator.raw_operator
    metric = knn.effective_metric_
    targets = np.asarray(knn._y)
    if (
        metric not in ("euclidean", "manhattan") or knn.weights not in ("uniform", "distance")
        or targets.ndim != 1
    ):
        raise ArtifactError(
            "KNeighborsRegressor export supports euclidean/manhattan metrics, uniform/distance "
            f"weights and one target (got metric={metric!r}, weights={knn.weights!r})"
        )
    emit = Emitter(scope, container, operator.inputs[0])
    x = emit.node("Unsqueeze", [operator.inputs[0].full_name, emit.ints([1])])  # [N, 1, F]
    diff = emit.node("Sub", [x, emit.const("knn_points", knn._fit_X)])  # [N, M, F]
    if metric == "euclidean":
        squared = emit.node("ReduceSum", [emit.node("Mul", [diff, diff]), emit.ints([2])],
                            keepdims=0)
        dist = emit.node("Sqrt", [squared])
    else:
        dist = emit.node("ReduceSum", [emit.node("Abs", [diff]), emit.ints([2])], keepdims=0)
    top_dist, top_idx = emit.node("TopK", [dist, emit.ints([int(knn.n_neighbors)])], n_out=2,
                                  largest=0, sorted=1)
    values = emit.node("Gather", [emit.const("knn_y", targets), top_idx])  # [N, k]
    out = [operator.outputs[0].full_name]
    if knn.weights == "uniform":
        emit.node("ReduceMean", [values], outputs=out, axes=[1], keepdims=1)
        return
    weights = emit.node("Reciprocal", [top_dist])
    # scikit-learn: a row with neighbours at distance 0 averages those neighbours only.
    exact = emit.node("Cast", [emit.node("IsInf", [weights])], to=emit.proto)
    any_exact = emit.node("Cast", [emit.node("ReduceMax", [exact], axes=[1], keepdims=1)],
                          to=TensorProto.BOOL)
    weights = emit.node("Where", [any_exact, exact, weights])
    total = emit.node("ReduceSum", [emit.node("Mul", [weights, values]), emit.ints([1])],
                      keepdims=1)
    norm = emit.node("ReduceSum", [weights, emit.ints([1])], keepdims=1)
    emit.node("Div", [total, norm], outputs=out)
