"""What the converters share: an emitter of nodes and constants with unique names, and the
shape calculators of one-column and same-width outputs."""

from __future__ import annotations

from typing import Any

import numpy as np


class Emitter:
    """Adds nodes and constants to a skl2onnx container under unique names."""

    def __init__(self, scope: Any, container: Any, variable: Any) -> None:
        from onnx import TensorProto
        from skl2onnx.common.data_types import DoubleTensorType

        self.scope, self.container = scope, container
        # Each converter computes in its input's float type (double in medcast graphs).
        double = isinstance(variable.type, DoubleTensorType)
        self.proto = TensorProto.DOUBLE if double else TensorProto.FLOAT
        self.dtype: type[np.floating[Any]] = np.float64 if double else np.float32

    def const(self, hint: str, value: Any, dtype: Any = None) -> str:
        from onnx import numpy_helper

        name = self.scope.get_unique_variable_name(hint)
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype or self.dtype))
        if array.dtype == object:  # skl2onnx copies raw_data only: strings go as a list
            from onnx import TensorProto

            self.container.add_initializer(name, TensorProto.STRING, list(array.shape),
                                           [str(v).encode() for v in array.ravel()])
            return name
        self.container.add_initializer(
            name, None, list(array.shape), numpy_helper.from_array(array, name)
        )
        return name

    def ints(self, values: list[int]) -> str:
        return self.const("ints", values, np.int64)

    def node(self, op: str, inputs: list[str], hint: str = "", *, outputs: list[str] | None = None,
             n_out: int = 1, **attrs: Any) -> Any:
        outs = outputs or [self.scope.get_unique_variable_name(hint or op.lower())
                           for _ in range(n_out)]
        self.container.add_node(op, inputs, outs, name=self.scope.get_unique_operator_name(op),
                                **attrs)
        return outs[0] if len(outs) == 1 else outs


def column_shape(operator: Any) -> None:
    """Regressors here give one column, in the input's float type."""
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__([n, 1])


def same_shape(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    width = sum(i.get_second_dimension() for i in operator.inputs)
    operator.outputs[0].type = operator.inputs[0].type.__class__([n, width])


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def cast(scope: Any, variable: Any, to_type: Any, hint: str) -> Any:
    """A skl2onnx cast operator from `variable` to a new variable of `to_type`."""
    operator = scope.declare_local_operator("SklearnCast")
    operator.inputs.append(variable)
    output = scope.declare_local_variable(hint, to_type)
    operator.outputs.append(output)
    return output
