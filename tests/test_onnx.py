"""Export: every candidate becomes one ONNX graph, raw features → `prediction`, that ONNX Runtime
alone runs like scikit-learn, on both datasets; damaged graphs are refused with a clear error.
The contract's feed (medcast.onnx.contract.feed) marks missing values as the graph expects them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, numpy_helper

from devtools.factories import insurance_frame
from medcast import models
from medcast.datasets import load_raw, validate
from medcast.errors import ArtifactError, DataValidationError
from medcast.features import FeatureSchema
from medcast.models.io import load_model, save_model
from medcast.onnx.contract import OUTPUT_NAME
from medcast.onnx.export import check_signature, load_onnx, save_onnx, to_onnx
from medcast.onnx.parity import check_parity
from medcast.onnx.runtime import inference_session, onnx_inputs, predict_onnx
from medcast.preprocess import split
from tests.conftest import tiny

DATASETS = ("diabetes", "insurance")
RTOL = 1e-4


def _split(dataset: str) -> tuple[dict, FeatureSchema, pd.DataFrame, pd.Series, pd.DataFrame]:
    p = tiny(f"dataset={dataset}")
    raw = load_raw(p.dataset) if dataset == "diabetes" else insurance_frame(300, seed=3).astype(str)
    train, test, schema = split(validate(raw, p.dataset), p.dataset, p.preprocess)
    return p, schema, train[schema.names], train[schema.target], test[schema.names]


@pytest.fixture(scope="module", params=DATASETS)
def data(request: pytest.FixtureRequest):
    return _split(request.param)


@pytest.fixture(scope="module")
def insurance():
    return _split("insurance")


def _extremes(X: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Rows beyond the training range on every numeric feature (spline extrapolation, trees'
    outer leaves), alternating below and above."""
    out = X.head(20).copy()
    for name in schema.numeric:
        lo, hi = X[name].min(), X[name].max()
        out[name] = np.where(np.arange(len(out)) % 2, hi + 0.3 * (hi - lo), lo - 0.3 * (hi - lo))
    return out


_RUN_WITH_ORT_ONLY = """
import json, sys
import numpy as np
import onnxruntime as ort
feed = {k: np.array(v["values"], dtype=object if v["string"] else np.float32).reshape(-1, 1)
        for k, v in json.load(open(sys.argv[2])).items()}
out = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"]).run(None, feed)[0]
heavy = sorted(m for m in ("sklearn", "tensorflow", "keras", "skl2onnx", "tf2onnx", "medcast")
               if m in sys.modules)
print(json.dumps({"pred": out.ravel().tolist(), "heavy": heavy}))
"""


def _run_with_onnxruntime_only(path: Path, feed: dict[str, np.ndarray]) -> dict:
    feed_file = path.with_suffix(".json")
    feed_file.write_text(json.dumps({
        k: {"string": v.dtype == object, "values": v.ravel().tolist()} for k, v in feed.items()
    }))
    done = subprocess.run(
        [sys.executable, "-c", _RUN_WITH_ORT_ONLY, str(path), str(feed_file)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_every_candidate_exports_one_graph_matching_sklearn(data, name, tmp_path):
    p, schema, X, y, X_test = data
    est = models.build(name, p.models[name].defaults, schema, seed=0).fit(X, y)
    # Export what the evaluate stage will have: the pipeline as tune saved and load_model read
    # it (a reloaded Keras network has never been called, which export must cope with).
    save_model(est, tmp_path / "tuned", {"model": name})
    model = to_onnx(load_model(tmp_path / "tuned"), schema)

    # The contract the service relies on, read from the graph itself.
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == schema.names
    for f in schema.features:
        expected = TensorProto.STRING if f.type == "category" else TensorProto.FLOAT
        assert inputs[f.name].elem_type == expected, f.name
        assert [d.dim_value for d in inputs[f.name].shape.dim] == [0, 1]  # [N, 1]
    (output,) = model.graph.output
    assert output.name == OUTPUT_NAME
    assert output.type.tensor_type.elem_type == TensorProto.FLOAT
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx.ml"}  # no custom ops

    path = tmp_path / "model.onnx"
    save_onnx(model, path)
    loaded = load_onnx(path, schema)
    parity = check_parity(est, loaded, X_test, rtol=RTOL)
    assert parity["n"] == len(X_test)
    assert parity["max_rel_diff"] <= RTOL
    # Training rows (KNN's zero distances, thresholds next to training values) and rows beyond
    # the training range (spline extrapolation) must match as well.
    check_parity(est, loaded, X, rtol=RTOL)
    check_parity(est, loaded, _extremes(X, schema), rtol=RTOL)

    # ONNX Runtime alone, in a fresh interpreter, gives the same predictions.
    feed = onnx_inputs(X_test.head(5), schema)
    alone = _run_with_onnxruntime_only(path, feed)
    assert alone["heavy"] == []
    np.testing.assert_allclose(alone["pred"], est.predict(X_test.head(5)), rtol=RTOL)


def test_decimal_inputs_decide_tree_splits_as_in_sklearn(insurance):
    """Grid values sit on the midpoints trees split at (26.1 | 26.3 → 26.2); the float32 input
    must still go down scikit-learn's branch."""
    p, schema, X, _, _ = insurance
    train = pd.concat([X.head(1)] * 60, ignore_index=True)
    train["bmi"] = np.round(np.arange(60) * 0.2 + 20.1, 1)  # odd tenths
    y = pd.Series(np.arange(60) ** 2, dtype=float)  # a step at every training value
    est = models.build("decision_tree", {"max_depth": 8}, schema, seed=0).fit(train, y)
    probe = train.copy()
    probe["bmi"] = np.round(train["bmi"] + 0.1, 1)  # even tenths: every one a split point
    assert check_parity(est, to_onnx(est, schema), probe)["max_rel_diff"] <= RTOL


def test_float32_inputs_are_read_as_the_decimals_they_came_from():
    """The graph's entry turns float32(26.2) back into the double 26.2 for every decimal of up
    to 6 significant digits, at magnitudes 1e-15 to 1e21, and keeps longer values within
    one float32 step."""
    from onnx import helper

    from medcast.onnx.export import decimal_nodes

    rng = np.random.default_rng(0)
    digits = rng.integers(1, 7, 5000)
    mantissa = rng.integers(10 ** (digits - 1), 10**digits)
    exponent = rng.integers(-15, 22, 5000) - digits + 1
    short = np.array([float(f"{m}e{e}") for m, e in zip(mantissa, exponent, strict=True)])
    short = np.concatenate([short, -short, [0.0, 1.0, 1000.0, 123456.0, 1e-300]])
    long = rng.normal(0, 100, 1000)  # 17 significant digits

    nodes, constants = decimal_nodes(["x"], ["y"])
    graph = helper.make_graph(
        nodes, "snap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])], constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = inference_session(model)

    def run(values: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": values.astype(np.float32).reshape(-1, 1)})[0].ravel()

    np.testing.assert_array_equal(run(short)[:-1], short[:-1])  # bit-exact doubles
    assert run(short)[-1] == np.float32(1e-300)  # below float32's range: 0, as float32 has it
    # A snapped value still rounds to the same float32: within one float32 step of the original.
    np.testing.assert_allclose(run(long), long, rtol=2**-23)


@pytest.mark.parametrize("name", ["ridge", "poly_elastic_net", "decision_tree"])
def test_cutoff_indicator_at_the_threshold_follows_sklearn(insurance, name):
    """The insurance schema's "bmi>30" indicator: 30.0 itself is not above the cut-off (skl2onnx
    1.20's Binarizer says it is), just above and below are decided as scikit-learn does."""
    p, schema, X, y, X_test = insurance
    assert [f.cutoffs for f in schema.features if f.name == "bmi"] == [(30.0,)]
    est = models.build(name, p.models[name].defaults, schema, seed=0).fit(X, y)
    names = est.named_steps["preprocess"].get_feature_names_out()
    assert "bmi>30__bmi" in names
    probe = pd.concat([X_test.head(1)] * 5, ignore_index=True)
    probe["bmi"] = [29.99, 30.0, 30.01, 18.5, 45.0]
    probe["smoker"] = "yes"
    check_parity(est, to_onnx(est, schema), probe, rtol=RTOL)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_weights_and_exact_matches_follow_sklearn(insurance, weights):
    """skl2onnx 1.20 exports weights="distance" as uniform; our converter must not, and a row
    equal to training rows gets their mean, as in scikit-learn."""
    p, schema, X, y, X_test = insurance
    params = {"n_neighbors": 5, "weights": weights}
    est = models.build("knn", params, schema, seed=0).fit(pd.concat([X, X.head(10)]),
                                                         pd.concat([y, y.head(10) + 1000.0]))
    model = to_onnx(est, schema)
    probe = pd.concat([X_test, X.head(10)])
    # A tie between the k-th and the next neighbour is broken arbitrarily by scikit-learn's tree
    # search (the duplicated rows make such ties): those rows have no single right answer.
    encoded = est.named_steps["preprocess"].transform(probe)
    dist, _ = est.named_steps["model"].regressor_.kneighbors(encoded, n_neighbors=6)
    unambiguous = ~np.isclose(dist[:, 4], dist[:, 5], rtol=1e-12, atol=0)
    assert unambiguous[-10:].all() and unambiguous.sum() > 60
    check_parity(est, model, probe[unambiguous], rtol=RTOL)
    if weights == "distance":
        uniform = models.build("knn", {**params, "weights": "uniform"}, schema, seed=0)
        uniform.fit(X, y)
        assert np.abs(uniform.predict(X_test) - est.predict(X_test)).max() > 1.0


def test_onnx_inputs_gives_float32_and_string_columns(insurance):
    _, schema, X, _, _ = insurance
    feed = onnx_inputs(X.head(3).assign(charges=1.0), schema)
    assert list(feed) == schema.names
    assert feed["age"].dtype == np.float32 and feed["age"].shape == (3, 1)
    assert feed["smoker"].dtype == object and feed["smoker"].shape == (3, 1)
    assert all(isinstance(v, str) for v in feed["region"].ravel())
    with pytest.raises(DataValidationError, match=r"\['bmi'\] missing"):
        onnx_inputs(X.drop(columns="bmi"), schema)


@pytest.fixture(scope="module")
def ridge(insurance):
    p, schema, X, y, X_test = insurance
    est = models.build("ridge", p.models["ridge"].defaults, schema, seed=0).fit(X, y)
    return est, to_onnx(est, schema), schema, X_test


def test_tampered_weights_fail_parity_naming_the_row(ridge):
    est, model, _, X_test = ridge
    tampered = type(model)()
    tampered.CopyFrom(model)
    (mean,) = [t for t in tampered.graph.initializer if t.name.startswith("target_mean")]
    mean.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(mean) + 50.0, mean.name))
    message = r"differ from scikit-learn: row \d+ of 60 \(index \d+\) gives"
    with pytest.raises(ArtifactError, match=message):
        check_parity(est, tampered, X_test)


def test_saved_bytes_do_not_depend_on_opset_order(ridge, tmp_path):
    """skl2onnx lists opset domains in set order (PYTHONHASHSEED): the file must not."""
    _, model, _, _ = ridge
    shuffled = type(model)()
    shuffled.CopyFrom(model)
    reversed_ = list(shuffled.opset_import)[::-1]
    del shuffled.opset_import[:]
    shuffled.opset_import.extend(reversed_)
    save_onnx(model, tmp_path / "a.onnx")
    save_onnx(shuffled, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_corrupted_file_is_refused(ridge, tmp_path):
    est, model, schema, X_test = ridge
    path = tmp_path / "model.onnx"
    save_onnx(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="not a valid ONNX model"):
        load_onnx(path, schema)
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load"):
        check_parity(est, data[: len(data) // 2], X_test)
    with pytest.raises(ArtifactError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
    foreign = type(model)()
    foreign.CopyFrom(model)
    foreign.opset_import.add(domain="com.example.custom", version=1)
    save_onnx(foreign, path)
    with pytest.raises(ArtifactError, match="custom operator domains"):
        load_onnx(path)


def test_graph_with_another_signature_is_refused(ridge):
    _, model, schema, _ = ridge
    check_signature(model, schema)
    renamed = type(model)()
    renamed.CopyFrom(model)
    renamed.graph.input[0].name = "years"
    with pytest.raises(ArtifactError, match="do not match the schema"):
        check_signature(renamed, schema)


def test_predict_onnx_reports_missing_columns(ridge):
    _, model, _, X_test = ridge
    session = inference_session(model)
    assert predict_onnx(session, X_test).shape == (len(X_test),)
    with pytest.raises(DataValidationError, match="smoker"):
        predict_onnx(session, X_test.drop(columns="smoker"))


def test_a_knn_graph_on_many_training_rows_is_checked_in_batches(insurance, monkeypatch):
    """The brute-force kNN graph holds rows × training points × features values: parity runs it
    in batches that keep that bounded, with the same predictions as one call."""
    from medcast.onnx import runtime

    p, schema, X, y, X_test = insurance
    est = models.build("knn", p.models["knn"].defaults, schema, 0).fit(X, y)
    model = to_onnx(est, schema)
    assert runtime.batch_rows(model) > 10_000  # a small table: its test rows in one call
    monkeypatch.setattr(runtime, "BATCH_VALUES", 7 * len(X) * est[:-1].transform(X).shape[1])
    assert runtime.batch_rows(model) == runtime.batch_rows(model.SerializeToString()) == 7
    session = inference_session(model)
    one_call = predict_onnx(session, X_test)
    assert np.array_equal(predict_onnx(session, X_test, batch=7), one_call)
    assert check_parity(est, model, X_test, rtol=RTOL)["n"] == len(X_test)


def test_a_knn_tie_at_the_kth_neighbour_is_found_and_left_out_of_parity(insurance):
    """Three copies of every training row with different targets: the 2nd and 3rd nearest
    points of any row are equally far, so which one counts is a tie either side may break."""
    from medcast.onnx.parity import tied_rows

    p, schema, X, y, X_test = insurance
    est = models.build("knn", {"n_neighbors": 2, "weights": "distance"}, schema, 0)
    assert not tied_rows(est.fit(X, y), X_test).any()
    copies = pd.concat([X] * 3, ignore_index=True)
    targets = pd.concat([y, y + 1000.0, y - 1000.0], ignore_index=True)
    est = est.fit(copies, targets)
    tied = tied_rows(est, X_test)
    assert tied.all()
    result = check_parity(est, to_onnx(est, schema), X_test, rtol=RTOL, tied=tied)
    assert result["n_tied"] == len(X_test) and result["max_rel_diff"] == 0.0
    ridge = models.build("ridge", {}, schema, 0).fit(X, y)
    assert tied_rows(ridge, X_test) is None
    assert "n_tied" not in check_parity(ridge, to_onnx(ridge, schema), X_test, rtol=RTOL)


@pytest.mark.timeout(120)
def test_feed_marks_missing_values_as_the_contract_says() -> None:
    import numpy as np

    from medcast.onnx.contract import feed

    features = [("age", "int"), ("BL.Cig.Day", "float"), ("Hypertension", "category")]
    one = feed(features, [(40, None, None)])
    assert np.isnan(one["BL.Cig.Day"][0, 0]) and one["Hypertension"][0, 0] == ""
    many = feed(features, [(40, None, "Yes"), (50, 2.5, None)])
    assert many["age"].dtype == np.float32 and many["age"].shape == (2, 1)
    assert many["Hypertension"].ravel().tolist() == ["Yes", ""]
    assert np.isnan(many["BL.Cig.Day"][0, 0]) and many["BL.Cig.Day"][1, 0] == 2.5
