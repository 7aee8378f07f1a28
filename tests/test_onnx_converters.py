"""Each converter in medcast/onnx/converters works around something skl2onnx lacks or gets
wrong. These tests run upstream's own conversion (in a fresh process, where medcast registered
nothing) and pass while the problem is still there: when one fails, upstream fixed it, and the
message names the medcast module to delete."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBES = r'''
import json, warnings
warnings.simplefilter("ignore")
import numpy as np
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

OPSET = {"": 17, "ai.onnx.ml": 3}
rng = np.random.default_rng(0)
X = rng.normal(size=(60, 2))
y = X @ [1.5, -2.0] + rng.normal(0, 0.1, 60)
out = {}

def run(model, x, dtype=DoubleTensorType):
    onx = convert_sklearn(model, initial_types=[("x", dtype([None, x.shape[1]]))],
                          target_opset=OPSET)
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0], dtype=float).reshape(len(x), -1)

def probe(name, fn):
    try:
        out[name] = fn()
    except Exception as err:  # the shape of upstream's failure is what we record
        out[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"

from sklearn.preprocessing import Binarizer, SplineTransformer, StandardScaler
from sklearn.neighbors import KNeighborsRegressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import Ridge
from sklearn.impute import SimpleImputer, MissingIndicator
from sklearn.ensemble import HistGradientBoostingRegressor

def binarizer():
    x = np.array([[29.0], [30.0], [31.0]])
    return {"onnx": run(Binarizer(threshold=30.0).fit(x), x).ravel().tolist(),
            "sklearn": Binarizer(threshold=30.0).fit(x).transform(x).ravel().tolist()}
probe("binarizer", binarizer)

def knn():
    model = KNeighborsRegressor(n_neighbors=5, weights="distance").fit(X, y)
    return float(np.abs(run(model, X[:20]).ravel() - model.predict(X[:20])).max())
probe("knn", knn)

probe("target", lambda: run(TransformedTargetRegressor(regressor=Ridge(),
                                                       transformer=StandardScaler()).fit(X, y), X).shape)
probe("spline", lambda: float(np.abs(run(SplineTransformer(n_knots=4).fit(X), X)
                                     - SplineTransformer(n_knots=4).fit(X).transform(X)).max()))
Xn = X.copy(); Xn[::5, 0] = np.nan
probe("imputer", lambda: float(np.abs(run(SimpleImputer(strategy="median").fit(Xn), Xn)
                                      - SimpleImputer(strategy="median").fit(Xn).transform(Xn)).max()))
probe("indicator", lambda: run(MissingIndicator(features="all").fit(Xn), Xn).shape)
def hgb():
    model = HistGradientBoostingRegressor(max_iter=10).fit(Xn, y)
    return float(np.abs(run(model, Xn.astype(np.float32), FloatTensorType).ravel()
                        - model.predict(Xn)).max())
probe("hist_boosting", hgb)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def upstream() -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBES], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fixed(module: str) -> str:
    return (f"skl2onnx now does this right: delete src/medcast/onnx/converters/{module}.py and "
            "its registration, then run tests/test_onnx.py")


def test_upstream_binarizer_still_maps_the_threshold_itself_to_one(upstream):
    result = upstream["binarizer"]
    assert result["sklearn"] == [0.0, 0.0, 1.0]
    assert result["onnx"] == [0.0, 1.0, 1.0], _fixed("binarizer")


def test_upstream_knn_still_ignores_distance_weights(upstream):
    assert isinstance(upstream["knn"], float) and upstream["knn"] > 1e-3, _fixed("knn")


def test_upstream_has_no_transformed_target_regressor_converter(upstream):
    assert isinstance(upstream["target"], str) and "MissingShapeCalculator" in upstream["target"], \
        _fixed("target")


def test_upstream_has_no_spline_converter_before_1_21(upstream):
    """skl2onnx 1.21 is due to add one; then this fails unless it differs from scikit-learn."""
    result = upstream["spline"]
    assert isinstance(result, str) or result > 1e-6, _fixed("spline")


def test_upstream_numeric_imputer_still_fails_on_doubles(upstream):
    assert isinstance(upstream["imputer"], str) and "NOT_IMPLEMENTED" in upstream["imputer"], \
        _fixed("imputer")


def test_upstream_has_no_missing_indicator_converter(upstream):
    assert isinstance(upstream["indicator"], str), _fixed("indicator")


def test_upstream_hist_boosting_still_fails_to_build_its_tree_node(upstream):
    assert isinstance(upstream["hist_boosting"], str), _fixed("hist_boosting")
