"""Export a fitted medcast pipeline, preprocessing included, as one ONNX graph from raw features
to `prediction`, and check it against scikit-learn. Reads a fitted Pipeline and its
FeatureSchema; writes a `.onnx` file that needs ONNX Runtime only (no scikit-learn, no TensorFlow).

The graph's contract, shared with the service (see `onnx_inputs`):

* one input per feature, named like the feature, shape [N, 1]: float32 for numeric features
  (int ones included), string for categorical ones; a missing value is NaN (numbers) or the
  empty string (categories), and the graph imputes it as the pipeline does;
* one output, `prediction`, shape [N, 1], float32, in target units.

Inside, the graph computes in float64, as scikit-learn does. At the door each float32 input is
turned back into the double scikit-learn would have read from the same decimal text (26.2, not
float32's 26.2000008; see `_decimal_nodes`); at the exit the prediction is cast to float32.
Three regressors take float32 features inside the graph, as they do in scikit-learn or Keras:
trees (scikit-learn casts X to float32 itself; skl2onnx adjusts thresholds so float32
comparisons decide identically), SVR (ONNX Runtime has no double SVM kernel) and the MLP.

Converters skl2onnx lacks or gets wrong, registered on the first `to_onnx` call:

* `SimpleImputer`: ONNX Runtime has no double kernel for the ai.onnx.ml Imputer skl2onnx emits,
  and skl2onnx refuses string imputation of missing values that are not strings: Where(IsNaN)
  for numbers, Where(x == "") for categories;
* `MissingIndicator` (features="all"): IsNaN, cast to the graph's float type;
* `HistGradientBoostingRegressor`: skl2onnx 1.20 fails to build its TreeEnsembleRegressor node
  (numpy integer attributes); exported here with double thresholds and the learned direction
  of missing values (nodes_missing_value_tracks_true);

* `TransformedTargetRegressor` with a `StandardScaler` target transformer: prediction × scale +
  mean (Mul, Add);
* `SplineTransformer` (constant extrapolation): the Cox–de Boor recursion in ONNX ops;
* `KNeighborsRegressor`: skl2onnx 1.20 exports weights="distance" as uniform;
* `Binarizer` (clinical cut-offs): skl2onnx 1.20 maps x == threshold to 1 on doubles, where
  scikit-learn gives 0 (x > threshold);
* `KerasMLPRegressor`: Keras exports the network (tf2onnx), and its nodes and initializers are
  inlined, renamed, into the scikit-learn graph. TensorFlow is imported only here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medcast.errors import ArtifactError, DataValidationError
from medcast.features import FeatureSchema

if TYPE_CHECKING:  # heavy imports stay out of module import (evaluate imports this module)
    import onnx
    import onnxruntime

# Pinned so that the same pipeline always gives the same graph, whatever the library defaults
# become: ONNX opset 17 (ONNX Runtime ≥ 1.14 runs it) and ai.onnx.ml 3.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
OUTPUT_NAME = "prediction"

_TTR_ALIAS = "MedcastTransformedTargetRegressor"
_SPLINE_ALIAS = "MedcastSplineTransformer"
_MLP_ALIAS = "MedcastKerasMLPRegressor"
_KNN_ALIAS = "MedcastKNeighborsRegressor"
_BINARIZER_ALIAS = "MedcastBinarizer"
_IMPUTER_ALIAS = "MedcastSimpleImputer"
_INDICATOR_ALIAS = "MedcastMissingIndicator"
_HGB_ALIAS = "MedcastHistGradientBoostingRegressor"
_DOUBLE_SUFFIX = "__f64"
_registered = False


# --------------------------------------------------------------------------- the feed contract


def _column(frame: pd.DataFrame, name: str, is_string: bool) -> np.ndarray:
    values = frame[name]
    missing = values.isna().to_numpy()
    if is_string:
        # ONNX Runtime takes numpy object arrays of str for tensor(string); "" is missing.
        text = values.to_numpy(dtype=object)
        out = np.array(["" if gone else str(v) for v, gone in zip(text, missing, strict=True)],
                       dtype=object)
        return out.reshape(-1, 1)
    return pd.to_numeric(values).to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)


def onnx_inputs(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """The feed for an exported graph: {feature: [N, 1] array}, float32 for numeric features,
    object (str) for categorical ones. Extra columns (e.g. the target) are ignored."""
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise DataValidationError(f"columns {missing} missing (expected {schema.names})")
    return {f.name: _column(frame, f.name, f.type == "category") for f in schema.features}


# --------------------------------------------------------------------------- export


def to_onnx(estimator: Any, schema: FeatureSchema) -> onnx.ModelProto:
    """One ONNX graph for the fitted medcast pipeline `estimator` (preprocess → model), with
    the input/output contract described in the module docstring. Raises ArtifactError when a
    step cannot be exported."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    if OUTPUT_NAME in schema.names:
        raise ArtifactError(f"a feature is named '{OUTPUT_NAME}', the graph's output name")
    _register_converters()
    # Numeric inputs are declared double so that every converter emits its double variant;
    # _float32_inputs() then makes them float32 inputs feeding _decimal_nodes.
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
    or JSON decoder would have given scikit-learn (see _decimal_nodes)."""
    from onnx import TensorProto, helper

    graph = model.graph
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {t.name for t in graph.initializer}
    inner = {name: f"{name}{_DOUBLE_SUFFIX}" for name in schema.numeric}
    clash = (set(inner.values()) | {OUTPUT_NAME}) & taken
    clash |= {name for name in taken if name.startswith(_PREFIX)}
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
        entry, constants = _decimal_nodes(schema.numeric, [inner[n] for n in schema.numeric])
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


_PREFIX = "medcast_in_"


def _decimal_nodes(inputs: list[str], outputs: list[str]) -> tuple[list[Any], list[Any]]:
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
        if _PREFIX + name not in {c.name for c in constants}:  # shared by both digit counts
            array = np.asarray(value, dtype=dtype)
            constants.append(numpy_helper.from_array(array, _PREFIX + name))
        return _PREFIX + name

    def node(op: str, args: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, args, [_PREFIX + name], name=_PREFIX + name, **attrs))
        return _PREFIX + name

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
        nodes.append(helper.make_node("Identity", [chosen], outputs, name=_PREFIX + "identity"))
    else:
        nodes.append(helper.make_node(
            "Split", [chosen, const("split", [1] * len(outputs), np.int64)], outputs, axis=1,
            name=_PREFIX + "split",
        ))
    return nodes, constants


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write `model` to `path` atomically (a reader never sees half a file)."""
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
        raise ArtifactError(f"{path}: not a valid ONNX model ({_first_line(err)})") from None
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


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
    if got_out != [(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])]:
        raise ArtifactError(f"ONNX output {got_out} is not [('{OUTPUT_NAME}', float, [N, 1])]")


# --------------------------------------------------------------------------- running


def inference_session(model: onnx.ModelProto | bytes) -> onnxruntime.InferenceSession:
    """A single-threaded CPU session: predictions must not depend on thread count, and the
    service scales with processes, not threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise ArtifactError(f"ONNX Runtime cannot load the model: {_first_line(err)}") from None


def predict_onnx(session: onnxruntime.InferenceSession, frame: pd.DataFrame) -> np.ndarray:
    """Run an exported graph on `frame`: predictions as a float64 vector of length N. The feed
    is built from the graph's own inputs, so it checks the graph, not just the schema."""
    missing = [i.name for i in session.get_inputs() if i.name not in frame.columns]
    if missing:
        raise DataValidationError(f"columns {missing} missing for the ONNX model")
    feed = {
        i.name: _column(frame, i.name, i.type == "tensor(string)") for i in session.get_inputs()
    }
    (out,) = session.run([OUTPUT_NAME], feed)
    return np.asarray(out, dtype=np.float64).reshape(-1)


def check_parity(
    estimator: Any,
    onnx_model: onnx.ModelProto | bytes,
    X: pd.DataFrame,
    rtol: float = 1e-4,
) -> dict[str, float]:
    """Compare ONNX Runtime (1 thread) with `estimator.predict(X)` row by row.

    The relative difference of a row is |onnx − native| / max(|native|, floor), where floor is
    1 % of the median |native| prediction (and at least 1e-6): relative to the prediction
    itself, except that a prediction near zero is measured against the predictions' typical
    size, so that float32 rounding of a value that happens to be ~0 does not count as a 100 %
    error. Returns {"max_abs_diff", "max_rel_diff", "n"}; raises ArtifactError naming the worst
    row when max_rel_diff > rtol, or when the graph cannot run on X.
    """
    session = inference_session(onnx_model)
    native = np.asarray(estimator.predict(X), dtype=np.float64).reshape(-1)
    try:
        exported = predict_onnx(session, X)
    except DataValidationError:
        raise
    except Exception as err:
        raise ArtifactError(f"ONNX Runtime failed on the parity rows: {_first_line(err)}") from None
    if exported.shape != native.shape:
        raise ArtifactError(f"ONNX returned {exported.shape[0]} predictions for {len(native)} rows")
    abs_diff = np.abs(exported - native)
    abs_diff[~np.isfinite(exported)] = np.inf  # NaN would otherwise compare as "no difference"
    floor = max(1e-6, 0.01 * float(np.median(np.abs(native)))) if len(native) else 1e-6
    rel_diff = abs_diff / np.maximum(np.abs(native), floor)
    result = {
        "max_abs_diff": float(abs_diff.max(initial=0.0)),
        "max_rel_diff": float(rel_diff.max(initial=0.0)),
        "n": int(len(native)),
    }
    if result["max_rel_diff"] > rtol:
        worst = int(np.argmax(rel_diff))
        raise ArtifactError(
            f"ONNX predictions differ from scikit-learn: row {worst + 1} of {len(native)} "
            f"(index {X.index[worst]}) "
            f"gives {exported[worst]:.6g} instead of {native[worst]:.6g} "
            f"(relative difference {rel_diff[worst]:.3g} > rtol {rtol:g}; "
            f"{int((rel_diff > rtol).sum())} rows over)"
        )
    return result


# --------------------------------------------------------------------------- converters


def _register_converters() -> None:
    """Register the converters skl2onnx lacks (target transform, splines, Keras MLP) or gets
    wrong (KNN). skl2onnx keeps them in a process-wide registry, so this runs on the first
    export, not at import; idempotent."""
    global _registered
    if _registered:
        return
    from skl2onnx import update_registered_converter
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import Binarizer, SplineTransformer

    from medcast.models.mlp import KerasMLPRegressor  # sklearn only; TF loads in fit/export

    update_registered_converter(
        TransformedTargetRegressor, _TTR_ALIAS, _column_shape, _convert_target,
        parser=_parse_target,
    )
    update_registered_converter(SplineTransformer, _SPLINE_ALIAS, _spline_shape, _convert_spline)
    update_registered_converter(KerasMLPRegressor, _MLP_ALIAS, _column_shape, _convert_mlp)
    # Replaces skl2onnx's own converter, which silently treats weights="distance" as uniform
    # (it negates the TopK distances before clamping them at 1e-6: measured here, 1.20.0).
    update_registered_converter(KNeighborsRegressor, _KNN_ALIAS, _column_shape, _convert_knn)
    # Replaces skl2onnx's, which computes `not (x < threshold)`: 1 at the threshold itself.
    update_registered_converter(Binarizer, _BINARIZER_ALIAS, _same_shape, _convert_binarizer)
    # Replaces skl2onnx's, whose numeric path needs ai.onnx.ml Imputer (float only in ONNX
    # Runtime) and whose string path refuses None/NaN as the missing marker.
    update_registered_converter(SimpleImputer, _IMPUTER_ALIAS, _same_shape, _convert_imputer)
    update_registered_converter(MissingIndicator, _INDICATOR_ALIAS, _same_shape,
                                _convert_indicator)
    update_registered_converter(HistGradientBoostingRegressor, _HGB_ALIAS, _column_shape,
                                _convert_hist_boosting)
    _registered = True


class _Emitter:
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


def _column_shape(operator: Any) -> None:
    """Regressors here give one column, in the input's float type."""
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__([n, 1])


# TransformedTargetRegressor. The parser emits the inner regressor (any registered one, the
# Keras MLP included), then the inverse target transform on its output.


def _parse_target(
    scope: Any, model: Any, inputs: list[Any], custom_parsers: Any = None
) -> list[Any]:
    from skl2onnx._parse import _parse_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    regressor = model.regressor_
    float32 = isinstance(regressor, _float32_regressors()) and isinstance(
        inputs[0].type, DoubleTensorType
    )
    if float32:
        inputs = [_cast(scope, inputs[0], FloatTensorType(), "features_f32")]
    inner = _parse_sklearn(scope, regressor, inputs, custom_parsers=custom_parsers)
    if len(inner) != 1:
        raise ArtifactError(f"{type(regressor).__name__} has {len(inner)} ONNX outputs, not 1")
    if float32:
        inner = [_cast(scope, inner[0], DoubleTensorType(), "regressor_f64")]
    operator = scope.declare_local_operator(_TTR_ALIAS, model)
    operator.inputs.append(inner[0])
    output = scope.declare_local_variable("target", inner[0].type.__class__())
    operator.outputs.append(output)
    return [output]


def _float32_regressors() -> tuple[type, ...]:
    """Regressors fed float32 features inside the double graph (`onnx_float32` in the model
    registry).

    Trees: scikit-learn itself casts X to float32 before walking a tree, and skl2onnx's float
    path rounds each threshold so that float32 comparisons decide as scikit-learn's do. Its
    double path is broken at ai.onnx.ml 3: thresholds end up as float32 attributes anyway and
    the declared double output is float (the graph fails validation).
    SVR: ONNX Runtime has no double kernel for SVMRegressor (measured: NOT_IMPLEMENTED).
    The MLP: Keras computes in float32.
    """
    from medcast.models import REGISTRY, regressor_class

    return tuple(regressor_class(c) for c in REGISTRY.values() if c.onnx_float32)


def _cast(scope: Any, variable: Any, to_type: Any, hint: str) -> Any:
    operator = scope.declare_local_operator("SklearnCast")
    operator.inputs.append(variable)
    output = scope.declare_local_variable(hint, to_type)
    operator.outputs.append(output)
    return output


def _convert_target(scope: Any, operator: Any, container: Any) -> None:
    from sklearn.preprocessing import StandardScaler

    model = operator.raw_operator
    scaler = model.transformer_
    if not isinstance(scaler, StandardScaler) or model._training_dim != 1:
        raise ArtifactError(
            "only TransformedTargetRegressor(transformer=StandardScaler()) on a 1-D target can "
            f"be exported, got {type(scaler).__name__}"
        )
    emit = _Emitter(scope, container, operator.inputs[0])
    scale = scaler.scale_ if scaler.with_std else [1.0]
    mean = scaler.mean_ if scaler.with_mean else [0.0]
    # Some converters give [N] rather than [N, 1]: normalise first.
    column = emit.node("Reshape", [operator.inputs[0].full_name, emit.ints([-1, 1])], "target_col")
    scaled = emit.node("Mul", [column, emit.const("target_scale", scale)], "target_scaled")
    emit.node("Add", [scaled, emit.const("target_mean", mean)],
              outputs=[operator.outputs[0].full_name])


# SplineTransformer: skl2onnx 1.20 has no converter.


def _spline_shape(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__(
        [n, int(operator.raw_operator.n_features_out_)]
    )


def _convert_spline(scope: Any, operator: Any, container: Any) -> None:
    """B-spline basis by the Cox–de Boor recursion over the full (extended) knot vector.

    Constant extrapolation is evaluation at the input clipped to [t_k, t_-k-1]: outside that
    range scikit-learn copies the basis values at the boundary. The knot vector extends beyond
    the boundary and the basis is continuous there, so half-open degree-0 intervals also give
    the right values at the upper boundary itself.
    """
    spline = operator.raw_operator
    if (
        spline.extrapolation != "constant" or spline.sparse_output or not spline.include_bias
        or spline.degree < 1 or len(operator.inputs) != 1
    ):
        raise ArtifactError(
            "SplineTransformer export supports extrapolation='constant', include_bias=True, "
            f"dense output, degree ≥ 1 (got extrapolation={spline.extrapolation!r}, "
            f"include_bias={spline.include_bias}, sparse_output={spline.sparse_output}, "
            f"degree={spline.degree})"
        )
    emit = _Emitter(scope, container, operator.inputs[0])
    degree = int(spline.degree)
    knots = np.stack([np.asarray(b.t, dtype=np.float64) for b in spline.bsplines_])  # [F, T]
    n_features, n_knots = knots.shape

    def inverse(span: np.ndarray) -> np.ndarray:
        # 0 for empty spans (repeated quantile knots): the usual 0/0 := 0 convention.
        return np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0)

    x = emit.node("Max", [operator.inputs[0].full_name, emit.const("lo", knots[:, degree])])
    x = emit.node("Min", [x, emit.const("hi", knots[:, -degree - 1])])
    x = emit.node("Unsqueeze", [x, emit.ints([2])], "spline_x")  # [N, F, 1] vs knots [F, T]
    inside = emit.node("And", [
        emit.node("GreaterOrEqual", [x, emit.const("knot", knots[:, :-1])]),
        emit.node("Less", [x, emit.const("knot", knots[:, 1:])]),
    ])
    basis = emit.node("Cast", [inside], "basis0", to=emit.proto)  # [N, F, T-1]
    for k in range(1, degree + 1):
        nb = n_knots - 1 - k
        left, right = knots[:, :nb], knots[:, k + 1:k + 1 + nb]
        lower = emit.node("Slice", [basis, emit.ints([0]), emit.ints([nb]), emit.ints([2])])
        upper = emit.node("Slice", [basis, emit.ints([1]), emit.ints([nb + 1]), emit.ints([2])])
        w_left = emit.node("Mul", [emit.node("Sub", [x, emit.const("knot", left)]),
                                   emit.const("inv_span", inverse(knots[:, k:k + nb] - left))])
        w_right = emit.node("Mul", [emit.node("Sub", [emit.const("knot", right), x]),
                                    emit.const("inv_span", inverse(right - knots[:, 1:1 + nb]))])
        basis = emit.node("Add", [emit.node("Mul", [w_left, lower]),
                                  emit.node("Mul", [w_right, upper])], f"basis{k}")
    # Feature-major columns, as scikit-learn lays them out.
    emit.node("Reshape", [basis, emit.ints([-1, n_features * (n_knots - degree - 1)])],
              outputs=[operator.outputs[0].full_name])


# KNeighborsRegressor: brute force over the stored training points.


def _convert_knn(scope: Any, operator: Any, container: Any) -> None:
    """Distances from explicit differences (not the |x|² − 2x·p + |p|² expansion), so that a
    duplicate of a training row is at distance exactly 0, as in scikit-learn's tree search; with
    weights="distance" such neighbours then share all the weight, as scikit-learn does."""
    from onnx import TensorProto

    knn = operator.raw_operator
    metric = knn.effective_metric_
    targets = np.asarray(knn._y)
    if (
        metric not in ("euclidean", "manhattan") or knn.weights not in ("uniform", "distance")
        or targets.ndim != 1
    ):
        raise ArtifactError(
            "KNeighborsRegressor export supports euclidean/manhattan metrics, uniform/distance "
            f"weights and one target (got metric={metric!r}, weights={knn.weights!r})"
        )
    emit = _Emitter(scope, container, operator.inputs[0])
    x = emit.node("Unsqueeze", [operator.inputs[0].full_name, emit.ints([1])])  # [N, 1, F]
    diff = emit.node("Sub", [x, emit.const("knn_points", knn._fit_X)])  # [N, M, F]
    if metric == "euclidean":
        squared = emit.node("ReduceSum", [emit.node("Mul", [diff, diff]), emit.ints([2])],
                            keepdims=0)
        dist = emit.node("Sqrt", [squared])
    else:
        dist = emit.node("ReduceSum", [emit.node("Abs", [diff]), emit.ints([2])], keepdims=0)
    top_dist, top_idx = emit.node("TopK", [dist, emit.ints([int(knn.n_neighbors)])], n_out=2,
                                  largest=0, sorted=1)
    values = emit.node("Gather", [emit.const("knn_y", targets), top_idx])  # [N, k]
    out = [operator.outputs[0].full_name]
    if knn.weights == "uniform":
        emit.node("ReduceMean", [values], outputs=out, axes=[1], keepdims=1)
        return
    weights = emit.node("Reciprocal", [top_dist])
    # scikit-learn: a row with neighbours at distance 0 averages those neighbours only.
    exact = emit.node("Cast", [emit.node("IsInf", [weights])], to=emit.proto)
    any_exact = emit.node("Cast", [emit.node("ReduceMax", [exact], axes=[1], keepdims=1)],
                          to=TensorProto.BOOL)
    weights = emit.node("Where", [any_exact, exact, weights])
    total = emit.node("ReduceSum", [emit.node("Mul", [weights, values]), emit.ints([1])],
                      keepdims=1)
    norm = emit.node("ReduceSum", [weights, emit.ints([1])], keepdims=1)
    emit.node("Div", [total, norm], outputs=out)


def _same_shape(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    width = sum(i.get_second_dimension() for i in operator.inputs)
    operator.outputs[0].type = operator.inputs[0].type.__class__([n, width])


def _convert_binarizer(scope: Any, operator: Any, container: Any) -> None:
    """1.0 where x > threshold, else 0.0 (scikit-learn's rule), in the input's float type."""
    from skl2onnx.operator_converters.common import concatenate_variables

    emit = _Emitter(scope, container, operator.inputs[0])
    x = concatenate_variables(scope, operator.inputs, container)
    above = emit.node("Greater", [x, emit.const("threshold", operator.raw_operator.threshold)])
    emit.node("Cast", [above], outputs=[operator.outputs[0].full_name], to=emit.proto)


# KerasMLPRegressor: export the network with Keras (tf2onnx), then inline it.


def keras_to_onnx(network: Any, n_features: int, opset: int = TARGET_OPSET[""]) -> onnx.ModelProto:
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

    emit = _Emitter(scope, container, operator.inputs[0])
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


# Missing values: the feed contract marks them NaN (numbers) or "" (categories).


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
        if strategy != "constant" or not (marker is None or marker == "" or _is_nan(marker)):
            raise ArtifactError("string SimpleImputer export supports strategy='constant' with "
                                f"None/NaN/'' missing values, got {strategy!r}, {marker!r}")
        emit = _Emitter(scope, container, operator.inputs[0])
        # String Equal needs opset 19; ai.onnx.ml's LabelEncoder maps "" → 1, anything else → 0.
        flag = emit.node("LabelEncoder", [x], "is_blank", op_domain="ai.onnx.ml", op_version=2,
                         keys_strings=[""], values_int64s=[1], default_int64=0)
        blank = emit.node("Cast", [flag], "blank", to=TensorProto.BOOL)
        fill = emit.const("fill", np.array([str(imputer.fill_value)], dtype=object), dtype=object)
        emit.node("Where", [blank, fill, x], outputs=out)
        return
    if not _is_nan(marker) or not isinstance(imputer.statistics_[0], numbers.Number):
        raise ArtifactError(f"numeric SimpleImputer export supports NaN as the missing value, "
                            f"got {marker!r}")
    if imputer.add_indicator:
        raise ArtifactError("SimpleImputer(add_indicator=True) is not exported: use a "
                            "separate MissingIndicator")
    emit = _Emitter(scope, container, operator.inputs[0])
    # keep_empty_features: a column empty at fit time has a NaN statistic and is imputed as 0.
    stats = np.nan_to_num(np.asarray(imputer.statistics_, dtype=np.float64), nan=0.0)
    missing = emit.node("IsNaN", [x])
    emit.node("Where", [missing, emit.const("impute", stats.reshape(1, -1)), x], outputs=out)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _convert_indicator(scope: Any, operator: Any, container: Any) -> None:
    """1.0 where the input is NaN, per input column (features='all')."""
    from skl2onnx.operator_converters.common import concatenate_variables

    indicator = operator.raw_operator
    if indicator.features != "all" or not _is_nan(indicator.missing_values):
        raise ArtifactError("MissingIndicator export supports features='all' with NaN, got "
                            f"features={indicator.features!r}")
    emit = _Emitter(scope, container, operator.inputs[0])
    x = concatenate_variables(scope, operator.inputs, container)
    emit.node("Cast", [emit.node("IsNaN", [x])], outputs=[operator.outputs[0].full_name],
              to=emit.proto)


def _convert_hist_boosting(scope: Any, operator: Any, container: Any) -> None:
    """TreeEnsembleRegressor with double thresholds (ai.onnx.ml 3): x <= threshold goes left;
    a missing x goes where the split learned (missing_go_to_left)."""
    from onnx import numpy_helper

    hgb = operator.raw_operator
    if type(hgb._loss.link).__name__ != "IdentityLink" or hgb.n_trees_per_iteration_ != 1:
        raise ArtifactError("HistGradientBoostingRegressor export supports the squared-error "
                            f"loss only, got loss={hgb.loss!r}")
    nodes_t: list[int] = []
    nodes_n: list[int] = []
    feature: list[int] = []
    modes: list[str] = []
    values: list[float] = []
    true_ids: list[int] = []
    false_ids: list[int] = []
    missing_true: list[int] = []
    leaf_t: list[int] = []
    leaf_n: list[int] = []
    weights: list[float] = []
    for t, (predictor,) in enumerate(hgb._predictors):
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ArtifactError("HistGradientBoostingRegressor with categorical splits is not "
                                "exported: medcast one-hot encodes categories before it")
        for i, node in enumerate(nodes):
            nodes_t.append(t)
            nodes_n.append(i)
            if node["is_leaf"]:
                feature.append(0)
                modes.append("LEAF")
                values.append(0.0)
                true_ids.append(0)
                false_ids.append(0)
                missing_true.append(0)
                leaf_t.append(t)
                leaf_n.append(i)
                weights.append(float(node["value"]))
            else:
                feature.append(int(node["feature_idx"]))
                modes.append("BRANCH_LEQ")
                values.append(float(node["num_threshold"]))
                true_ids.append(int(node["left"]))
                false_ids.append(int(node["right"]))
                missing_true.append(int(node["missing_go_to_left"]))
    baseline = np.asarray(hgb._baseline_prediction, dtype=np.float64).reshape(-1)
    emit = _Emitter(scope, container, operator.inputs[0])
    if emit.dtype is not np.float64:
        raise ArtifactError("HistGradientBoostingRegressor export expects double inputs")

    def tensor(name: str, data: list[float] | np.ndarray) -> Any:
        return numpy_helper.from_array(np.asarray(data, dtype=np.float64), name)

    # TreeEnsembleRegressor (ai.onnx.ml 3) outputs float whatever its input: cast back.
    summed = scope.get_unique_variable_name("hgb_sum")
    container.add_node(
        "TreeEnsembleRegressor", [operator.inputs[0].full_name],
        [summed], op_domain="ai.onnx.ml", op_version=3,
        name=scope.get_unique_operator_name("TreeEnsembleRegressor"),
        n_targets=1, aggregate_function="SUM", post_transform="NONE",
        nodes_treeids=nodes_t, nodes_nodeids=nodes_n, nodes_featureids=feature,
        nodes_modes=modes, nodes_values_as_tensor=tensor("values", values),
        nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids,
        nodes_missing_value_tracks_true=missing_true,
        target_treeids=leaf_t, target_nodeids=leaf_n, target_ids=[0] * len(leaf_t),
        target_weights_as_tensor=tensor("weights", weights),
        base_values_as_tensor=tensor("base", baseline),
    )
    emit.node("Cast", [summed], outputs=[operator.outputs[0].full_name], to=emit.proto)
