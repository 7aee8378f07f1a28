"""Export a fitted medcast pipeline, preprocessing included, as one ONNX graph from raw features
to `prediction` (the contract in medcast.onnx.contract); save, load and check such a graph.
Reads a fitted Pipeline and its FeatureSchema; writes a `.onnx` file that needs ONNX Runtime
only (no scikit-learn, no TensorFlow).

Inside, the graph computes in float64, as scikit-learn does. At the door each float32 input is
turned back into the double scikit-learn would have read from the same decimal text (26.2, not
float32's 26.2000008; see `decimal_nodes`); at the exit the prediction is cast to float32.
Some regressors take float32 features inside the graph, as they do in scikit-learn or Keras
(`onnx_float32` in medcast.models.REGISTRY; see medcast.onnx.converters.target).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcast.errors import ArtifactError, first_line
from medcast.features import FeatureSchema
from medcast.onnx.contract import DECIMAL_PREFIX, DOUBLE_SUFFIX, INTERVAL_OUTPUTS, OUTPUT_NAME

if TYPE_CHECKING:  # heavy imports stay out of module import
    import onnx

# Pinned so that the same pipeline always gives the same graph, whatever the library defaults
# become: ONNX opset 17 (ONNX Runtime ≥ 1.14 runs it) and ai.onnx.ml 3.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}


def to_onnx(estimator: Any, schema: FeatureSchema) -> onnx.ModelProto:
    """One ONNX graph for the fitted medcast pipeline `estimator` (preprocess → model), with
    the input/output contract described in the module docstring. Raises ArtifactError when a
    step cannot be exported."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    from medcast.onnx.converters.registry import register

    if OUTPUT_NAME in schema.names:
        raise ArtifactError(f"a feature is named '{OUTPUT_NAME}', the graph's output name")
    register()
    # Numeric inputs are declared double so that every converter emits its double variant;
    # _float32_inputs() then makes them float32 inputs feeding decimal_nodes.
    initial_types = [
        (f.name, (StringTensorType if f.type == "category" else DoubleTensorType)([None, 1]))
        for f in schema.features
    ]
    try:
        model = convert_sklearn(
            estimator,
            name=f"medcast_{schema.dataset}",
            initial_types=initial_types,
            target_opset=TARGET_OPSET,
            doc_string=f"medcast: {schema.target} ({schema.target_unit}) from {schema.names}",
        )
    except ArtifactError:
        raise
    except Exception as err:  # skl2onnx raises many types (MissingShapeCalculator, RuntimeError…)
        raise ArtifactError(f"cannot export {_describe(estimator)} to ONNX: {err}") from err
    _restore_input_names(model, schema)
    _float32_inputs(model, schema)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # a converter bug, not user input: still report it cleanly
        raise ArtifactError(f"the exported graph is not valid ONNX: {err}") from err
    return model


def _describe(estimator: Any) -> str:
    steps = getattr(estimator, "steps", None)
    if not steps:
        return type(estimator).__name__
    last = steps[-1][1]
    inner = getattr(last, "regressor_", None)
    return f"{type(estimator).__name__}(… {type(inner or last).__name__})"


def _restore_input_names(model: onnx.ModelProto, schema: FeatureSchema) -> None:
    """skl2onnx turns input names into identifiers ("BL.Cig.Day" → "BL_Cig_Day"); the contract
    names each input exactly like its feature, so rename them back (inputs come in the order of
    initial_types)."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if [v.name for v in inputs] == schema.names:
        return
    if len(inputs) != len(schema.features):
        raise ArtifactError(f"the exported graph has inputs {[v.name for v in inputs]}, "
                            f"expected one per feature {schema.names}")
    rename = {v.name: f.name for v, f in zip(inputs, schema.features, strict=True)}
    produced = {name for node in graph.node for name in node.output} | initializers
    clash = (set(rename.values()) - set(rename)) & produced
    if clash:
        raise ArtifactError(f"feature names {sorted(clash)} clash with tensor names of the graph")
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for value in inputs:
        value.name = rename[value.name]


def _float32_inputs(model: onnx.ModelProto, schema: FeatureSchema) -> None:
    """Make numeric inputs float32 and the output float32 `prediction`: float32 is what the
    service contract promises. Inside, each numeric value goes back to the double a CSV parser
    or JSON decoder would have given scikit-learn (see decimal_nodes)."""
    from onnx import TensorProto, helper

    graph = model.graph
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {t.name for t in graph.initializer}
    inner = {name: f"{name}{DOUBLE_SUFFIX}" for name in schema.numeric}
    clash = (set(inner.values()) | {OUTPUT_NAME}) & taken
    clash |= {name for name in taken if name.startswith(DECIMAL_PREFIX)}
    if clash:
        raise ArtifactError(f"the exported graph already uses the tensor names {sorted(clash)}")
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in inner:
                node.input[i] = inner[name]
    for value in graph.input:
        if value.name in inner:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    entry: list[Any] = []
    if schema.numeric:
        entry, constants = decimal_nodes(schema.numeric, [inner[n] for n in schema.numeric])
        graph.initializer.extend(constants)
    if len(graph.output) != 1:
        raise ArtifactError(f"expected one graph output, got {[o.name for o in graph.output]}")
    exit_cast = helper.make_node(
        "Cast", [graph.output[0].name], [OUTPUT_NAME], to=TensorProto.FLOAT, name="cast_prediction"
    )
    nodes = [*entry, *graph.node, exit_cast]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 1]))




def decimal_nodes(inputs: list[str], outputs: list[str]) -> tuple[list[Any], list[Any]]:
    """Nodes turning float32 inputs [N, 1] into doubles: each value becomes the shortest decimal
    of 6 or 7 significant digits that rounds to the same float32 (else the float32 value).

    Why: scikit-learn sees the double nearest to the decimal in the CSV or JSON (26.2), the
    graph sees float32(26.2) = 26.2000008. Trees split at midpoints of training values, and
    with values on a grid a test value often *is* a midpoint (26.1 and 26.3 → 26.2); the
    float32 offset then sends it down the other branch (measured: a decision tree off by 16 %
    on one diabetes row). Recovered exactly: every decimal of ≤ 6 significant digits between
    1e-15 and 1e21 in magnitude, and nearly all of 7 digits (all from 1e-3 to 1e6, measured).
    Longer values stay within one float32 step: the chosen double still rounds to the input.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    constants: list[Any] = []

    def const(name: str, value: Any, dtype: Any = np.float64) -> str:
        if DECIMAL_PREFIX + name not in {c.name for c in constants}:  # shared by both digit counts
            array = np.asarray(value, dtype=dtype)
            constants.append(numpy_helper.from_array(array, DECIMAL_PREFIX + name))
        return DECIMAL_PREFIX + name

    def node(op: str, args: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, args, [DECIMAL_PREFIX + name], name=DECIMAL_PREFIX + name, **attrs))
        return DECIMAL_PREFIX + name

    f32 = node("Concat", inputs, "f32", axis=1) if len(inputs) > 1 else inputs[0]
    raw = node("Cast", [f32], "raw", to=TensorProto.DOUBLE)
    magnitude = node("Max", [node("Abs", [raw], "abs"), const("tiny", 1e-300)], "mag")
    # floor(log10|x|) may be one off next to powers of ten: then one digit more or less is
    # kept, which still recovers short decimals there.
    log10 = node("Div", [node("Log", [magnitude], "ln"), const("ln10", np.log(10.0))], "log10")
    exponent = node("Floor", [log10], "exp10")
    chosen = raw
    for digits in (7, 6):  # the outer Where is the 6-digit one: the shorter decimal wins
        # Keep k decimals (k < 0: round to tens, hundreds…). Multiplying or dividing by the
        # power of ten 10^|k|, exact up to 10^22, keeps every step correctly rounded.
        k = node("Clip", [node("Sub", [const(f"d{digits}", digits - 1), exponent], f"k{digits}"),
                          const("k_min", -22.0), const("k_max", 22.0)], f"kc{digits}")
        scale = node("Pow", [const("ten", 10.0), node("Abs", [k], f"ak{digits}")], f"p{digits}")
        fraction = node("GreaterOrEqual", [k, const("zero", 0.0)], f"frac{digits}")
        up = node("Where", [fraction, node("Mul", [raw, scale], f"mul{digits}"),
                            node("Div", [raw, scale], f"div{digits}")], f"up{digits}")
        whole = node("Round", [up], f"round{digits}")
        snapped = node("Where", [fraction, node("Div", [whole, scale], f"back_div{digits}"),
                                 node("Mul", [whole, scale], f"back_mul{digits}")], f"snap{digits}")
        same = node("Equal", [node("Cast", [snapped], f"f32_{digits}", to=TensorProto.FLOAT), f32],
                    f"same{digits}")
        chosen = node("Where", [same, snapped, chosen], f"chosen{digits}")
    if len(outputs) == 1:
        nodes.append(helper.make_node("Identity", [chosen], outputs, name=DECIMAL_PREFIX + "identity"))
    else:
        nodes.append(helper.make_node(
            "Split", [chosen, const("split", [1] * len(outputs), np.int64)], outputs, axis=1,
            name=DECIMAL_PREFIX + "split",
        ))
    return nodes, constants


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write `model` to `path` atomically (a reader never sees half a file), with the same
    bytes for the same graph: skl2onnx lists the opset domains in set order, which follows
    PYTHONHASHSEED, so they are sorted here."""
    ordered = sorted(model.opset_import, key=lambda opset: (opset.domain, opset.version))
    del model.opset_import[:]
    model.opset_import.extend(ordered)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, path)


def load_onnx(path: str | os.PathLike[str], schema: FeatureSchema | None = None) -> onnx.ModelProto:
    """Read and validate an exported graph; with `schema`, also check its input/output
    contract. Raises ArtifactError for a missing, truncated or tampered file."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load_model_from_string(path.read_bytes())
        onnx.checker.check_model(model, full_check=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found; export the model first") from None
    except Exception as err:  # protobuf DecodeError, ValidationError, shape inference errors
        raise ArtifactError(f"{path}: not a valid ONNX model ({first_line(err)})") from None
    # What to_onnx writes is self-contained and uses standard operators only; anything else
    # (tensors in side files, custom-op domains) did not come from here.
    domains = {o.domain for o in model.opset_import} - {"", "ai.onnx", "ai.onnx.ml"}
    external = [t.name for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if domains or external:
        raise ArtifactError(
            f"{path}: unexpected custom operator domains {sorted(domains)} or external tensors "
            f"{external[:3]}; re-export the model"
        )
    if schema is not None:
        check_signature(model, schema)
    return model


def check_signature(model: onnx.ModelProto, schema: FeatureSchema) -> None:
    """Raise ArtifactError unless the graph's inputs and output follow the contract for
    `schema` (names, element types, [N, 1] shapes)."""
    from onnx import TensorProto

    def describe(values: Any) -> list[tuple[str, int, list[int | str]]]:
        return [
            (
                v.name,
                v.type.tensor_type.elem_type,
                [d.dim_value if d.HasField("dim_value") else "N"
                 for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    expected_in = [
        (f.name, TensorProto.STRING if f.type == "category" else TensorProto.FLOAT, ["N", 1])
        for f in schema.features
    ]
    initializers = {t.name for t in model.graph.initializer}
    got_in = describe(v for v in model.graph.input if v.name not in initializers)
    if got_in != expected_in:
        raise ArtifactError(f"ONNX inputs {got_in} do not match the schema's {expected_in}")
    got_out = describe(model.graph.output)
    names = [OUTPUT_NAME] if len(got_out) == 1 else [OUTPUT_NAME, *INTERVAL_OUTPUTS]
    if got_out != [(name, TensorProto.FLOAT, ["N", 1]) for name in names]:
        raise ArtifactError(f"ONNX outputs {got_out} are not [('{OUTPUT_NAME}', float, [N, 1])]"
                            f" (and {list(INTERVAL_OUTPUTS)} alike, with intervals)")
