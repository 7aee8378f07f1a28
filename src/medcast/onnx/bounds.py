"""Give an exported graph the conformal interval (medcast.intervals) as two more outputs,
`lower` and `upper` = prediction ∓ q·max(σ(x), floor), where σ is the difficulty pipeline's own
exported graph merged in (its tensors prefixed, the feature inputs shared), or ∓ q for
constant width. With Mondrian cells (medcast.mondrian; Vovk et al. 2005, ch. 4) q is each row's,
looked up from its group features' string inputs (LabelEncoder, Gather) in a float32 table.
The service then gets the interval from the same verified file and the same ONNX Runtime call
as the prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast.datasets.spec import MISSING_LEVEL
from medcast.errors import ArtifactError
from medcast.features import FeatureSchema
from medcast.onnx.contract import INTERVAL_OUTPUTS, MISSING_TEXT, OUTPUT_NAME
from medcast.onnx.runtime import batch_rows, inference_session, run_batched

if TYPE_CHECKING:
    import onnx

    from medcast.intervals import IntervalModel
    from medcast.mondrian import Cells

PREFIX = "difficulty_"
# LabelEncoder's version 2 (string keys → int64 values), in ai.onnx.ml since its opset 2.
LABEL_ENCODER_OPSET = 2


def with_intervals(model: onnx.ModelProto, interval: IntervalModel, schema: FeatureSchema
                   ) -> onnx.ModelProto:
    """A copy of `model` (to_onnx's graph) with outputs `lower` and `upper` added."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {t.name for t in graph.initializer}
    if any(name.startswith(PREFIX) for name in taken) or set(INTERVAL_OUTPUTS) & taken:
        raise ArtifactError(f"the exported graph already uses tensor names starting with "
                            f"'{PREFIX}' or named {list(INTERVAL_OUTPUTS)}")
    if interval.cells is None:
        q = numpy_helper.from_array(np.array(interval.q, dtype=np.float32), "interval_q")
        graph.initializer.append(q)
    else:  # Mondrian: each row's q from its cell, [N, 1]
        _add_cell_q(out, interval.cells, interval.q, taken)
    # q·max(σ, floor); constant width: q itself, broadcast against [N, 1]
    half = (_add_difficulty(out, interval, schema, taken) if interval.method == "adaptive"
            else "interval_q")
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


def _add_difficulty(out: onnx.ModelProto, interval: IntervalModel, schema: FeatureSchema,
                    taken: set[str]) -> str:
    """Merge the difficulty pipeline's graph into `out` (tensors prefixed, feature inputs
    shared) and add q·max(σ, floor); returns the name of that half-width tensor."""
    from onnx import compose, helper, numpy_helper

    from medcast.onnx.export import to_onnx

    if interval.difficulty is None:
        raise ArtifactError("an adaptive interval needs its fitted difficulty model")
    graph = out.graph
    difficulty = compose.add_prefix(to_onnx(interval.difficulty, schema), PREFIX,
                                    rename_inputs=False)
    nodes, initializers = _share_decimal_inputs(difficulty.graph, taken, schema)
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    _merge_opsets(out, {o.domain: o.version for o in difficulty.opset_import})
    floor = numpy_helper.from_array(np.array(interval.floor, dtype=np.float32), "interval_floor")
    graph.initializer.append(floor)
    sigma = difficulty.graph.output[0].name
    graph.node.extend([
        helper.make_node("Max", [sigma, "interval_floor"], ["interval_sigma"],
                         name="interval_sigma"),
        helper.make_node("Mul", ["interval_sigma", "interval_q"], ["interval_half"],
                         name="interval_half"),
    ])
    return "interval_half"


def _merge_opsets(out: onnx.ModelProto, versions: dict[str, int]) -> None:
    """skl2onnx declares the lowest opset each graph needs (≤ TARGET_OPSET): the merged graph
    takes the higher per domain (the operators used mean the same in both)."""
    from onnx import helper

    merged = {o.domain: o.version for o in out.opset_import}
    for domain, version in versions.items():
        merged[domain] = max(merged.get(domain, 0), version)
    del out.opset_import[:]
    out.opset_import.extend(helper.make_opsetid(domain, version)
                            for domain, version in sorted(merged.items()))


def _add_cell_q(out: onnx.ModelProto, cells: Cells, pooled_q: float, taken: set[str]) -> None:
    """Nodes giving `interval_q` [N, 1], each row's Mondrian q (medcast.mondrian): per group
    feature an ai.onnx.ml LabelEncoder (its string input → the level's code; "" is
    "(missing)"; any other text the unseen code), the codes combined row-major into one cell
    index as Cells.codes does, and a Gather from the float32 table of q's (Cells.table)."""
    from onnx import helper, numpy_helper

    nodes: list[Any] = []
    constants = [numpy_helper.from_array(cells.table(pooled_q).astype(np.float32),
                                         "interval_q_table")]
    index = ""
    for j, (name, levels) in enumerate(zip(cells.groups, cells.levels, strict=True)):
        keys, values = list(levels), list(range(len(levels)))
        if MISSING_LEVEL in levels:
            keys.append(MISSING_TEXT)
            values.append(levels.index(MISSING_LEVEL))
        code = f"interval_code_{j}"
        nodes.append(helper.make_node("LabelEncoder", [name], [code], name=code,
                                      domain="ai.onnx.ml", keys_strings=keys,
                                      values_int64s=values, default_int64=len(levels)))
        if not index:
            index = code
            continue
        radix = numpy_helper.from_array(np.array(len(levels) + 1, dtype=np.int64),
                                        f"interval_radix_{j}")
        constants.append(radix)
        nodes.append(helper.make_node("Mul", [index, radix.name], [f"interval_scaled_{j}"],
                                      name=f"interval_scaled_{j}"))
        index = f"interval_cell_{j}"
        nodes.append(helper.make_node("Add", [f"interval_scaled_{j}", code], [index], name=index))
    nodes.append(helper.make_node("Gather", ["interval_q_table", index], ["interval_q"], axis=0,
                                  name="interval_q"))
    clash = ({t for n in nodes for t in n.output} | {c.name for c in constants}) & taken
    if clash:
        raise ArtifactError(f"the exported graph already uses the tensor names {sorted(clash)}")
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(constants)
    _merge_opsets(out, {"ai.onnx.ml": LABEL_ENCODER_OPSET})


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
