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

`CutGraph` runs the two parts: the service's explainer (serve/explain.py) and the export's
check of it (medcast.explain) both call it, so both compute the same bits.

Needs the `onnx` package (in the serve extra; imported only for a model with an explainer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcast.onnx.contract import DECIMAL_PREFIX, DOUBLE_SUFFIX, OUTPUT_NAME, column


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


@dataclass(frozen=True)
class CutGraph:
    """A graph cut at its door, as ONNX Runtime sessions: numeric values go through the door
    (float32 → the graph's doubles) once, the coalition rows through the body only. Rows are
    given in feature order, None where a value is missing."""

    body: Any  # onnxruntime.InferenceSession: body inputs → prediction
    door: Any | None  # onnxruntime.InferenceSession: float32 numeric inputs → doubles
    features: tuple[tuple[str, str], ...]  # (name, type) in card order
    numeric: tuple[str, ...]  # the features the door converts (the body takes their doubles)

    @classmethod
    def of(cls, graph: bytes, features: Sequence[tuple[str, str]],
           session: Callable[[bytes], Any]) -> CutGraph:
        """`session` opens a graph's bytes (the caller's ONNX Runtime options)."""
        cut = at_the_door(graph)
        door = session(cut.door) if cut.door is not None else None
        return cls(session(cut.body), door, tuple(features), cut.numeric)

    def columns(self, rows: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        """The body's input columns (1-D, one per feature) for `rows`."""
        cols = [column([r[i] for r in rows], kind).reshape(-1)
                for i, (_, kind) in enumerate(self.features)]
        if self.door is not None:
            index = {name: i for i, (name, _) in enumerate(self.features)}
            feed = {name: cols[index[name]].reshape(-1, 1) for name in self.numeric}
            for name, out in zip(self.numeric, self.door.run(None, feed), strict=True):
                cols[index[name]] = np.asarray(out).reshape(-1)
        return cols

    def patient(self, row: Sequence[Any]) -> list[Any]:
        """One patient's body values (through the door in a call of two rows: a lone row may
        take another kernel path, serve.model.LoadedModel._run)."""
        return [col[0] for col in self.columns([row] * 2)]

    def predict(self, batch: int | None = None) -> Callable[[list[np.ndarray]], np.ndarray]:
        """The body's `prediction` for body columns: one call, or calls of at most `batch`
        rows (a check's 2^m coalitions per background row)."""
        names = [name + DOUBLE_SUFFIX if name in self.numeric else name
                 for name, _ in self.features]

        def run(columns: list[np.ndarray]) -> np.ndarray:
            n = len(columns[0])
            step = n if batch is None else max(1, batch)
            parts = []
            for start in range(0, max(n, 1), step):
                feed = {name: col[start:start + step].reshape(-1, 1)
                        for name, col in zip(names, columns, strict=True)}
                (out,) = self.body.run([OUTPUT_NAME], feed)
                parts.append(np.asarray(out, dtype=np.float64).reshape(-1))
            return np.concatenate(parts)

        return run
