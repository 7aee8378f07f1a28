"""MissingIndicator(features="all"): skl2onnx 1.20 has no converter. IsNaN, cast to the graph's
float type. Delete when upstream converts it (test_onnx_converters checks it)."""

from __future__ import annotations

from typing import Any

from medcast.errors import ArtifactError
from medcast.onnx.converters.common import Emitter, is_nan, same_shape

ALIAS = "MedcastMissingIndicator"


def register() -> None:
    from skl2onnx import update_registered_converter
    from sklearn.impute import MissingIndicator

    update_registered_converter(MissingIndicator, ALIAS, same_shape, _convert_indicator)


def _convert_indicator(scope: Any, operator: Any, container: Any) -> None:
    """1.0 where the input is NaN, per input column (features='all')."""
    from skl2onnx.operator_converters.common import concatenate_variables

    indicator = operator.raw_operator
    if indicator.features != "all" or not is_nan(indicator.missing_values):
        raise ArtifactError("MissingIndicator export supports features='all' with NaN, got "
                            f"features={indicator.features!r}")
    emit = Emitter(scope, container, operator.inputs[0])
    x = concatenate_variables(scope, operator.inputs, container)
    emit.node("Cast", [emit.node("IsNaN", [x])], outputs=[operator.outputs[0].full_name],
              to=emit.proto)
