"""TransformedTargetRegressor(transformer=StandardScaler()): skl2onnx 1.20 has no converter.
The parser emits the inner regressor (any registered one, the Keras MLP included) on float32
features where the regressor computes in float32, then `prediction × scale + mean` on its output.
Delete when skl2onnx converts TransformedTargetRegressor (test_onnx_converters checks it)."""

from __future__ import annotations

from typing import Any

from medcast.errors import ArtifactError
from medcast.onnx.converters.common import Emitter, cast, column_shape

ALIAS = "MedcastTransformedTargetRegressor"


def register() -> None:
    from skl2onnx import update_registered_converter
    from sklearn.compose import TransformedTargetRegressor

    update_registered_converter(TransformedTargetRegressor, ALIAS, column_shape,
                                _convert_target, parser=_parse_target)


def _parse_target(
    scope: Any, model: Any, inputs: list[Any], custom_parsers: Any = None
) -> list[Any]:
    from skl2onnx._parse import _parse_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    regressor = model.regressor_
    float32 = isinstance(regressor, _float32_regressors()) and isinstance(
        inputs[0].type, DoubleTensorType
    )
    if float32:
        inputs = [cast(scope, inputs[0], FloatTensorType(), "features_f32")]
    inner = _parse_sklearn(scope, regressor, inputs, custom_parsers=custom_parsers)
    if len(inner) != 1:
        raise ArtifactError(f"{type(regressor).__name__} has {len(inner)} ONNX outputs, not 1")
    if float32:
        inner = [cast(scope, inner[0], DoubleTensorType(), "regressor_f64")]
    operator = scope.declare_local_operator(ALIAS, model)
    operator.inputs.append(inner[0])
    output = scope.declare_local_variable("target", inner[0].type.__class__())
    operator.outputs.append(output)
    return [output]


def _float32_regressors() -> tuple[type, ...]:
    """Regressors fed float32 features inside the double graph (`onnx_float32` in the model
    registry).

    Trees: scikit-learn itself casts X to float32 before walking a tree, and skl2onnx's float
    path rounds each threshold so that float32 comparisons decide as scikit-learn's do. Its
    double path is broken at ai.onnx.ml 3: thresholds end up as float32 attributes anyway and
    the declared double output is float (the graph fails validation).
    SVR: ONNX Runtime has no double kernel for SVMRegressor (measured: NOT_IMPLEMENTED).
    The MLP: Keras computes in float32.
    """
    from medcast.models import REGISTRY, regressor_class

    return tuple(regressor_class(c) for c in REGISTRY.values() if c.onnx_float32)


def _convert_target(scope: Any, operator: Any, container: Any) -> None:
    from sklearn.preprocessing import StandardScaler

    model = operator.raw_operator
    scaler = model.transformer_
    if not isinstance(scaler, StandardScaler) or model._training_dim != 1:
        raise ArtifactError(
            "only TransformedTargetRegressor(transformer=StandardScaler()) on a 1-D target can "
            f"be exported, got {type(scaler).__name__}"
        )
    emit = Emitter(scope, container, operator.inputs[0])
    scale = scaler.scale_ if scaler.with_std else [1.0]
    mean = scaler.mean_ if scaler.with_mean else [0.0]
    # Some converters give [N] rather than [N, 1]: normalise first.
    column = emit.node("Reshape", [operator.inputs[0].full_name, emit.ints([-1, 1])], "target_col")
    scaled = emit.node("Mul", [column, emit.const("target_scale", scale)], "target_scaled")
    emit.node("Add", [scaled, emit.const("target_mean", mean)],
              outputs=[operator.outputs[0].full_name])
