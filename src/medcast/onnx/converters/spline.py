"""SplineTransformer (extrapolation="constant"): skl2onnx has no converter before 1.21. The
B-spline basis by the Cox–de Boor recursion in ONNX ops. Delete once the pinned skl2onnx converts
it and matches scikit-learn (test_onnx_converters checks it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcast.errors import ArtifactError
from medcast.onnx.converters.common import Emitter

ALIAS = "MedcastSplineTransformer"


def register() -> None:
    from skl2onnx import update_registered_converter
    from sklearn.preprocessing import SplineTransformer

    update_registered_converter(SplineTransformer, ALIAS, _spline_shape, _convert_spline)


def _spline_shape(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__(
        [n, int(operator.raw_operator.n_features_out_)]
    )


def _convert_spline(scope: Any, operator: Any, container: Any) -> None:
    """B-spline basis by the Cox–de Boor recursion over the full (extended) knot vector.

    Constant extrapolation is evaluation at the input clipped to [t_k, t_-k-1]: outside that
    range scikit-learn copies the basis values at the boundary. The knot vector extends beyond
    the boundary and the basis is continuous there, so half-open degree-0 intervals also give
    the right values at the upper boundary itself.
    """
    spline = operator.raw_operator
    if (
        spline.extrapolation != "constant" or spline.sparse_output or not spline.include_bias
        or spline.degree < 1 or len(operator.inputs) != 1
    ):
        raise ArtifactError(
            "SplineTransformer export supports extrapolation='constant', include_bias=True, "
            f"dense output, degree ≥ 1 (got extrapolation={spline.extrapolation!r}, "
            f"include_bias={spline.include_bias}, sparse_output={spline.sparse_output}, "
            f"degree={spline.degree})"
        )
    emit = Emitter(scope, container, operator.inputs[0])
    degree = int(spline.degree)
    knots = np.stack([np.asarray(b.t, dtype=np.float64) for b in spline.bsplines_])  # [F, T]
    n_features, n_knots = knots.shape

    def inverse(span: np.ndarray) -> np.ndarray:
        # 0 for empty spans (repeated quantile knots): the usual 0/0 := 0 convention.
        return np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0)

    x = emit.node("Max", [operator.inputs[0].full_name, emit.const("lo", knots[:, degree])])
    x = emit.node("Min", [x, emit.const("hi", knots[:, -degree - 1])])
    x = emit.node("Unsqueeze", [x, emit.ints([2])], "spline_x")  # [N, F, 1] vs knots [F, T]
    inside = emit.node("And", [
        emit.node("GreaterOrEqual", [x, emit.const("knot", knots[:, :-1])]),
        emit.node("Less", [x, emit.const("knot", knots[:, 1:])]),
    ])
    basis = emit.node("Cast", [inside], "basis0", to=emit.proto)  # [N, F, T-1]
    for k in range(1, degree + 1):
        nb = n_knots - 1 - k
        left, right = knots[:, :nb], knots[:, k + 1:k + 1 + nb]
        lower = emit.node("Slice", [basis, emit.ints([0]), emit.ints([nb]), emit.ints([2])])
        upper = emit.node("Slice", [basis, emit.ints([1]), emit.ints([nb + 1]), emit.ints([2])])
        w_left = emit.node("Mul", [emit.node("Sub", [x, emit.const("knot", left)]),
                                   emit.const("inv_span", inverse(knots[:, k:k + nb] - left))])
        w_right = emit.node("Mul", [emit.node("Sub", [emit.const("knot", right), x]),
                                    emit.const("inv_span", inverse(right - knots[:, 1:1 + nb]))])
        basis = emit.node("Add", [emit.node("Mul", [w_left, lower]),
                                  emit.node("Mul", [w_right, upper])], f"basis{k}")
    # Feature-major columns, as scikit-learn lays them out.
    emit.node("Reshape", [basis, emit.ints([-1, n_features * (n_knots - degree - 1)])],
              outputs=[operator.outputs[0].full_name])
