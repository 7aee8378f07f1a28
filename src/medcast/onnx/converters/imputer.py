"""SimpleImputer: skl2onnx 1.20 emits ai.onnx.ml Imputer for numbers, which ONNX Runtime runs for
float only (NOT_IMPLEMENTED on the doubles of medcast graphs), and refuses string imputation
whose missing marker is None/NaN. Here: Where(IsNaN(x), statistic, x) for numbers and, for
categories (the contract feeds a missing one as ""), Where(x == "", fill value, x). Delete when
upstream's runs on doubles and takes a None marker (test_onnx_converters checks it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcast.errors import ArtifactError
from medcast.onnx.converters.common import Emitter, is_nan, same_shape

ALIAS = "MedcastSimpleImputer"


def register() -> None:
    from skl2onnx import update_registered_converter
    from sklearn.impute import SimpleImputer

    update_registered_converter(SimpleImputer, ALIAS, same_shape, _convert_imputer)


def _convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    """Where the input is missing, the fitted statistic (numbers) or the fill value (strings)."""
    import numbers

    from onnx import TensorProto
    from skl2onnx.common.data_types import StringTensorType
    from skl2onnx.operator_converters.common import concatenate_variables

    imputer = operator.raw_operator
    strategy, marker = imputer.strategy, imputer.missing_values
    out = [operator.outputs[0].full_name]
    x = concatenate_variables(scope, operator.inputs, container)
    if isinstance(operator.inputs[0].type, StringTensorType):
        if strategy != "constant" or not (marker is None or marker == "" or is_nan(marker)):
            raise ArtifactError("string SimpleImputer export supports strategy='constant' with "
                                f"None/NaN/'' missing values, got {strategy!r}, {marker!r}")
        emit = Emitter(scope, container, operator.inputs[0])
        # String Equal needs opset 19; ai.onnx.ml's LabelEncoder maps "" → 1, anything else → 0.
        flag = emit.node("LabelEncoder", [x], "is_blank", op_domain="ai.onnx.ml", op_version=2,
                         keys_strings=[""], values_int64s=[1], default_int64=0)
        blank = emit.node("Cast", [flag], "blank", to=TensorProto.BOOL)
        fill = emit.const("fill", np.array([str(imputer.fill_value)], dtype=object), dtype=object)
        emit.node("Where", [blank, fill, x], outputs=out)
        return
    if not is_nan(marker) or not isinstance(imputer.statistics_[0], numbers.Number):
        raise ArtifactError(f"numeric SimpleImputer export supports NaN as the missing value, "
                            f"got {marker!r}")
    if imputer.add_indicator:
        raise ArtifactError("SimpleImputer(add_indicator=True) is not exported: use a "
                            "separate MissingIndicator")
    emit = Emitter(scope, container, operator.inputs[0])
    # keep_empty_features: a column empty at fit time has a NaN statistic and is imputed as 0.
    stats = np.nan_to_num(np.asarray(imputer.statistics_, dtype=np.float64), nan=0.0)
    missing = emit.node("IsNaN", [x])
    emit.node("Where", [missing, emit.const("impute", stats.reshape(1, -1)), x], outputs=out)


