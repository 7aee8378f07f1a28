"""Cuts of an exported graph for the service's explanations (serve/explain.py).

ONNX Runtime runs every node of a graph whatever outputs are asked for, and an explanation
runs the graph on thousands of coalition rows. Two cuts make that cheaper without changing a
single bit of any prediction:

* `prediction_only`: only the `prediction` output and the nodes it needs (not the interval's);
* `at_the_door`: the graph split where each float32 numeric input becomes its double
  (medcast.onnx.export.decimal_nodes, row by row and elementwise): the *door* (float32 inputs →
  doubles) and the *body* (the doubles and the category inputs → prediction). An explanation
  converts the patient's and the background's values once (1 + background rows) and runs only
  the body on the coalitions, which hold nothing but those values.

Needs the `onnx` package (in the serve extra; imported only for a model with an explainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medcast.onnx.contract import DECIMAL_PREFIX, DOUBLE_SUFFIX, OUTPUT_NAME


@dataclass(frozen=True)
class Cut:
    """A graph split at its door: `door` (None: a graph without one) maps the float32 input of
    each of `numeric` to the tensor `name + DOUBLE_SUFFIX` the `body` takes."""

    body: bytes
    door: bytes | None = None
    numeric: tuple[str, ...] = ()


def _prune(model: Any, outputs: set[str]) -> Any:
    """`model` (changed in place) with only `outputs` and the nodes and initializers they need."""
    graph = model.graph
    needed = set(outputs)
    nodes = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            nodes.append(node)
            needed.update(name for name in node.input if name)
    kept_outputs = [o for o in graph.output if o.name in outputs]
    kept_init = [t for t in graph.initializer if t.name in needed]
    del graph.node[:]
    graph.node.extend(reversed(nodes))
    del graph.output[:]
    graph.output.extend(kept_outputs)
    del graph.initializer[:]
    graph.initializer.extend(kept_init)
    return model


def prediction_only(model_bytes: bytes) -> bytes:
    """The graph with only its `prediction` output."""
    import onnx

    return _prune(onnx.load_model_from_string(model_bytes), {OUTPUT_NAME}).SerializeToString()


def at_the_door(model_bytes: bytes) -> Cut:
    """The prediction-only graph split at its door; a graph without one comes back whole."""
    import onnx
    from onnx import TensorProto, helper

    model = _prune(onnx.load_model_from_string(model_bytes), {OUTPUT_NAME})
    graph = model.graph
    door = [n for n in graph.node if n.name.startswith(DECIMAL_PREFIX)]
    if not door:
        return Cut(model.SerializeToString())
    body = [n for n in graph.node if not n.name.startswith(DECIMAL_PREFIX)]
    inputs = {v.name: v for v in graph.input}
    produced_by_door = {name for n in door for name in n.output}
    numeric = tuple(name for name in inputs
                    if name + DOUBLE_SUFFIX in produced_by_door)
    doubles = [helper.make_tensor_value_info(name + DOUBLE_SUFFIX, TensorProto.DOUBLE, [None, 1])
               for name in numeric]
    rest = [v for name, v in inputs.items() if name not in numeric]

    def part(nodes: list[Any], ins: list[Any], outs: list[Any], name: str) -> bytes:
        used = {i for n in nodes for i in n.input}
        init = [t for t in graph.initializer if t.name in used]
        part_graph = helper.make_graph(nodes, name, ins, outs, initializer=init)
        part_model = helper.make_model(part_graph, opset_imports=list(model.opset_import))
        part_model.ir_version = model.ir_version
        return part_model.SerializeToString()

    door_bytes = part(door, [inputs[name] for name in numeric], doubles, "door")
    body_bytes = part(body, [*doubles, *rest], list(graph.output), "body")
    return Cut(body_bytes, door_bytes, numeric)
