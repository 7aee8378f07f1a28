from __future__ import annotations

import pytest

from medcast import models
from medcast.params import ServingBudget
from medcast.serving_cost import ServingCost, measure, over_budget, significant
from tests.support.study import insurance_study


@pytest.fixture(scope="module")
def data():
    p, schema, (X, y), _ = insurance_study(500, 3, 400)
    return p, schema, X, y


def _fitted(name, p, schema, X, y):
    return models.build(name, p.models[name].defaults, schema, p.cv.seed).fit(X, y)


def test_measure_gives_a_size_and_a_latency(data):
    p, schema, X, y = data
    cost = measure(_fitted("ridge", p, schema, X, y), schema, X.iloc[[0]])
    assert 0 < cost.onnx_mb < 0.1  # a few coefficients and the decimal-recovery nodes
    assert cost.ms > 0


def test_a_knn_graph_holds_its_training_rows(data):
    """The kNN's graph grows with its training rows by what it stores per row: the
    standardised features and the target, as doubles (the fitted estimator's own arrays)."""
    p, schema, X, y = data
    small = _fitted("knn", p, schema, X.iloc[:100], y.iloc[:100])
    large = _fitted("knn", p, schema, X, y)
    grown = measure(large, schema, X.iloc[[0]]).onnx_mb - measure(small, schema,
                                                                  X.iloc[[0]]).onnx_mb
    knn = large.named_steps["model"].regressor_
    per_row = (knn._fit_X.shape[1] + 1) * knn._fit_X.itemsize  # features + target
    assert grown * 1e6 == pytest.approx(300 * per_row, rel=0.01)


def test_an_unexportable_pipeline_raises_an_artifact_error(data):
    from sklearn.pipeline import Pipeline

    from medcast.errors import ArtifactError

    p, schema, X, y = data

    class Opaque:  # no ONNX converter knows it
        def fit(self, X, y):
            return self

        def predict(self, X):
            return X[:, 0]

    with pytest.raises(ArtifactError, match="cannot export"):
        measure(Pipeline([("model", Opaque())]), schema, X.iloc[[0]])


@pytest.mark.parametrize(
    ("cost", "budget", "reason"),
    [
        (ServingCost(111.2, 34.0), ServingBudget(50, 5),
         "ONNX graph 111 MB > train.serving_budget.max_mb 50; single-row latency over "
         "train.serving_budget.max_ms 5 ms"),
        (ServingCost(0.4, 7.3), ServingBudget(50, 5),
         "single-row latency over train.serving_budget.max_ms 5 ms"),
        (ServingCost(61.0, 0.2), ServingBudget(50, None),
         "ONNX graph 61 MB > train.serving_budget.max_mb 50"),
        (ServingCost(61.0, 7.3), ServingBudget(None, None), None),
        (ServingCost(50.0, 5.0), ServingBudget(50, 5), None),  # at the limit is within it
    ],
)
def test_over_budget_names_each_limit_exceeded_never_the_measured_latency(cost, budget, reason):
    assert over_budget(cost, budget) == reason


def test_significant_keeps_three_digits():
    assert [significant(v) for v in (111.249, 0.0123456, 5.0)] == [111.0, 0.0123, 5.0]
