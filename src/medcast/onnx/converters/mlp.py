"""KerasMLPRegressor: Keras exports the network (its own ONNX export, tf2onnx underneath), and its
nodes and initializers are inlined, renamed, into the scikit-learn graph. TensorFlow is imported
only here. skl2onnx has no Keras converter: this one stays."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcast.errors import ArtifactError
from medcast.onnx.converters.common import Emitter, column_shape

if TYPE_CHECKING:
    import onnx

ALIAS = "MedcastKerasMLPRegressor"
OPSET = 17  # medcast.onnx.export.TARGET_OPSET[""]


def register() -> None:
    from skl2onnx import update_registered_converter

    from medcast.models.mlp import KerasMLPRegressor  # sklearn only; TF loads in fit/export

    update_registered_converter(KerasMLPRegressor, ALIAS, column_shape, _convert_mlp)


def keras_to_onnx(network: Any, n_features: int, opset: int = OPSET) -> onnx.ModelProto:
    """The Keras network alone as an ONNX model (float32 [N, F] → [N, 1]). Imports TensorFlow."""
    import warnings

    import keras
    import onnx

    # An explicit signature: a network loaded from mlp.keras has never been called, and Keras
    # refuses to infer one then.
    signature = [keras.InputSpec(shape=(None, n_features), dtype="float32")]
    with tempfile.TemporaryDirectory(prefix="medcast-onnx-") as tmp, warnings.catch_warnings():
        # Keras' tf2onnx shim probes np.object, which NumPy 2 answers with a FutureWarning.
        warnings.simplefilter("ignore", FutureWarning)
        path = Path(tmp) / "mlp.onnx"
        network.export(str(path), format="onnx", verbose=False, opset_version=opset,
                       input_signature=signature)
        return onnx.load_model(str(path))


def _convert_mlp(scope: Any, operator: Any, container: Any) -> None:
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    mlp = operator.raw_operator
    if getattr(mlp, "model_", None) is None:
        raise ArtifactError("the MLP has no fitted network (model_ is None); load it first")
    graph = keras_to_onnx(mlp.model_, int(mlp.n_features_in_)).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ArtifactError(f"the Keras graph has inputs {inputs} and outputs {list(graph.output)}")

    emit = Emitter(scope, container, operator.inputs[0])
    # The network was trained on float32 features: feed it float32, as KerasMLPRegressor does.
    network_in = emit.node("Cast", [operator.inputs[0].full_name], "mlp_input",
                           to=TensorProto.FLOAT)
    network_out = scope.get_unique_variable_name("mlp_output")
    prefix = scope.get_unique_variable_name("mlp") + "/"
    renamed = {inputs[0]: network_in, graph.output[0].name: network_out}

    def rename(name: str) -> str:
        if not name:  # an omitted optional input stays omitted
            return name
        return renamed.setdefault(name, prefix + name)

    for tensor in graph.initializer:
        value = numpy_helper.to_array(tensor)
        name = rename(tensor.name)
        container.add_initializer(name, None, list(value.shape),
                                  numpy_helper.from_array(value, name))
    for node in graph.node:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise ArtifactError(f"cannot inline Keras node {node.op_type}: it has a subgraph")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        container.add_node(
            node.op_type, [rename(i) for i in node.input], [rename(o) for o in node.output],
            op_domain=node.domain, name=scope.get_unique_operator_name(node.op_type), **attrs,
        )
    emit.node("Cast", [network_out], outputs=[operator.outputs[0].full_name], to=emit.proto)
