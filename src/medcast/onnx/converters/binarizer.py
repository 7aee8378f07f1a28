"""Binarizer (clinical cut-offs, "bmi>30"): skl2onnx 1.20 computes `not (x < threshold)` on
doubles, so x == threshold gives 1 where scikit-learn gives 0 (x > threshold). See
docs/upstream/skl2onnx-binarizer.md for the report. Delete when upstream's matches scikit-learn
at the threshold (test_onnx_converters checks it)."""

from __future__ import annotations

from typing import Any

from medcast.onnx.converters.common import Emitter, same_shape

ALIAS = "MedcastBinarizer"


def register() -> None:
    from skl2onnx import update_registered_converter
    from sklearn.preprocessing import Binarizer

    update_registered_converter(Binarizer, ALIAS, same_shape, _convert_binarizer)


def _convert_binarizer(scope: Any, operator: Any, container: Any) -> None:
    """1.0 where x > threshold, else 0.0 (scikit-learn's rule), in the input's float type."""
    from skl2onnx.operator_converters.common import concatenate_variables

    emit = Emitter(scope, container, operator.inputs[0])
    x = concatenate_variables(scope, operator.inputs, container)
    above = emit.node("Greater", [x, emit.const("threshold", operator.raw_operator.threshold)])
    emit.node("Cast", [above], outputs=[operator.outputs[0].full_name], to=emit.proto)
