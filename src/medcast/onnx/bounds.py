"""Give an exported graph the conformal interval (medcast.intervals) as two more outputs,
`lower` and `upper` = prediction ∓ q·max(σ(x), floor), where σ is the difficulty pipeline's own
exported graph merged in (its tensors prefixed, the feature inputs shared), or ∓ q for
constant width. The service then gets the interval from the same verified file and the same
ONNX Runtime call as the prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast.errors import ArtifactError
from medcast.features import FeatureSchema
from medcast.onnx.contract import INTERVAL_OUTPUTS, OUTPUT_NAME
from medcast.onnx.runtime import batch_rows, inference_session, run_batched

if TYPE_CHECKING:
    import onnx

    from medcast.intervals import IntervalModel

PREFIX = "difficulty_"


def with_intervals(model: onnx.ModelProto, interval: IntervalModel, schema: FeatureSchema
                   ) -> onnx.ModelProto:
    """A copy of `model` (to_onnx's graph) with outputs `lower` and `upper` added."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    from medcast.onnx.export import to_onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {t.name for t in graph.initializer}
    if any(name.startswith(PREFIX) for name in taken) or set(INTERVAL_OUTPUTS) & taken:
        raise ArtifactError(f"the exported graph already uses tensor names starting with "
                            f"'{PREFIX}' or named {list(INTERVAL_OUTPUTS)}")
    q = numpy_helper.from_array(np.array(interval.q, dtype=np.float32), "interval_q")
    graph.initializer.append(q)
    if interval.method == "adaptive":
        if interval.difficulty is None:
            raise ArtifactError("an adaptive interval needs its fitted difficulty model")
        difficulty = compose.add_prefix(to_onnx(interval.difficulty, schema), PREFIX,
                                        rename_inputs=False)
        nodes, initializers = _share_decimal_inputs(difficulty.graph, taken, schema)
        graph.node.extend(nodes)
        graph.initializer.extend(initializers)
        # skl2onnx declares the lowest opset each graph needs (≤ TARGET_OPSET): the merged
        # graph takes the higher per domain (the operators used mean the same in both).
        versions = {o.domain: o.version for o in out.opset_import}
        for opset in difficulty.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
        del out.opset_import[:]
        out.opset_import.extend(helper.make_opsetid(domain, version)
                                for domain, version in sorted(versions.items()))
        floor = numpy_helper.from_array(np.array(interval.floor, dtype=np.float32),
                                        "interval_floor")
        graph.initializer.append(floor)
        sigma = difficulty.graph.output[0].name
        graph.node.extend([
            helper.make_node("Max", [sigma, "interval_floor"], ["interval_sigma"],
                             name="interval_sigma"),
            helper.make_node("Mul", ["interval_sigma", "interval_q"], ["interval_half"],
                             name="interval_half"),
        ])
        half = "interval_half"
    else:
        half = "interval_q"  # broadcast against [N, 1]
    lower, upper = INTERVAL_OUTPUTS
    graph.node.extend([
        helper.make_node("Sub", [OUTPUT_NAME, half], [lower], name="interval_lower"),
        helper.make_node("Add", [OUTPUT_NAME, half], [upper], name="interval_upper"),
    ])
    for name in INTERVAL_OUTPUTS:
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1]))
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as err:
        raise ArtifactError(f"the graph with intervals is not valid ONNX: {err}") from err
    return out


def _share_decimal_inputs(difficulty: Any, taken: set[str], schema: FeatureSchema
                          ) -> tuple[list[Any], list[Any]]:
    """The difficulty graph's nodes and initializers, minus its own float32 → decimal input
    conversion when the model's graph already computes the same doubles (to_onnx's
    `<feature>__f64` tensors): the two would compute identical values, and on one row the
    conversion's ~40 small operators are most of the subgraph's cost."""
    from medcast.onnx.export import DECIMAL_PREFIX, DOUBLE_SUFFIX

    shared = {f"{PREFIX}{name}{DOUBLE_SUFFIX}": f"{name}{DOUBLE_SUFFIX}"
              for name in schema.numeric}
    if not shared or not set(shared.values()) <= taken:
        return list(difficulty.node), list(difficulty.initializer)
    own = PREFIX + DECIMAL_PREFIX
    nodes = [n for n in difficulty.node if not n.name.startswith(own)]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = shared.get(name, name)
    used = {name for node in nodes for name in node.input}
    return nodes, [t for t in difficulty.initializer if t.name in used]


def bound_differences(native: tuple[Any, Any], exported: tuple[Any, Any]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's relative difference of the graph's (lower, upper) from the pipeline's. A bound
    is ŷ ∓ width, so its float32 error is of the size of the row's interval, not of the bound:
    the difference is measured against the row's larger |bound| (and at least 1 % of the
    median of those, and 1e-6), so a bound that happens to lie near zero is not held to a
    tighter limit than the rest (a lower bound of −41.17 against an upper one of 20,000)."""
    lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in native)
    scale = np.maximum(np.abs(lo), np.abs(hi))
    floor = max(1e-6, 0.01 * float(np.median(scale))) if len(scale) else 1e-6
    scale = np.maximum(scale, floor)
    out = []
    for ref, got in zip((lo, hi), exported, strict=True):
        got = np.asarray(got, dtype=np.float64).reshape(-1)
        diff = np.abs(got - ref)
        diff[~np.isfinite(got)] = np.inf
        out.append(diff / scale)
    return out[0], out[1]


def check_interval_parity(session_or_model: Any, frame: pd.DataFrame, lower: Any, upper: Any,
                          rtol: float = 1e-4, tied: np.ndarray | None = None
                          ) -> dict[str, float]:
    """Compare the graph's `lower`/`upper` on `frame` with the pipeline's bounds, relative to
    each row's interval (bound_differences). Raises ArtifactError when a bound differs by more
    than `rtol`."""
    is_session = hasattr(session_or_model, "run")
    session = session_or_model if is_session else inference_session(session_or_model)
    batch = None if is_session else batch_rows(session_or_model)
    got = run_batched(session, list(INTERVAL_OUTPUTS), frame, batch)
    return {"max_rel_diff": compare_bounds(lower, upper, got, rtol, tied), "n": len(frame)}


def compare_bounds(lower: Any, upper: Any, got: Any, rtol: float = 1e-4,
                   tied: np.ndarray | None = None) -> float:
    """The largest relative difference (bound_differences) of the graph's bounds `got` (lower,
    upper) from the pipeline's; rows in `tied` left out. Raises ArtifactError naming the worst
    row when it exceeds `rtol`."""
    worst = 0.0
    rels = bound_differences((lower, upper), (got[0], got[1]))
    for name, native, exported, rel in zip(INTERVAL_OUTPUTS, (lower, upper), got, rels,
                                           strict=True):
        native = np.asarray(native, dtype=np.float64).reshape(-1)
        if tied is not None:  # a kNN's tie at its k-th neighbour (medcast.onnx.parity)
            rel[tied] = 0.0
        if len(rel) and rel.max() > rtol:
            row = int(np.argmax(rel))
            raise ArtifactError(f"ONNX interval bound '{name}' differs from the pipeline's: row "
                                f"{row + 1} gives {exported[row]:.6g} instead of "
                                f"{native[row]:.6g} (relative difference {rel[row]:.3g} > "
                                f"rtol {rtol:g})")
        worst = max(worst, float(rel.max(initial=0.0)))
    return worst
