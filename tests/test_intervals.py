"""Conformal intervals (medcast.intervals): the quantile, calibration on heteroscedastic data
(adaptive width chosen, groups covered), reports, and the ONNX graph's lower/upper outputs
matching the pipeline's bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcast import intervals, models
from medcast.errors import ArtifactError
from medcast.features import Feature, FeatureSchema, typed
from medcast.metrics import fold_indices
from medcast.onnx.bounds import bound_differences, check_interval_parity, with_intervals
from medcast.onnx.contract import INTERVAL_OUTPUTS, OUTPUT_NAME
from medcast.onnx.export import check_signature, to_onnx
from medcast.onnx.parity import check_parity
from medcast.onnx.runtime import inference_session

LEVEL = 0.9
SCHEMA = FeatureSchema("synthetic", "y", "units", (
    Feature("x", "float", None, -10, 10),
    Feature("group", "category", None, categories=("calm", "wild")),
))


def heteroscedastic(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """y = 2x + noise, the noise 8 times larger in group "wild" (a fifth of the rows), as
    smokers' costs are in insurance."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n).round(3)
    wild = rng.random(n) < 0.2
    y = 2 * x + rng.normal(0, 1, n) * np.where(wild, 8.0, 1.0)
    X = typed(pd.DataFrame({"x": x, "group": np.where(wild, "wild", "calm")}), SCHEMA)
    return X, pd.Series(y, name="y")


@pytest.fixture(scope="module")
def fitted():
    X, y = heteroscedastic(600, seed=0)
    estimator = models.build("ridge", {"alpha": 1.0}, SCHEMA, 0)
    oof = intervals.oof_predictions(estimator, X, y, 5, 0)
    variants = intervals.fit_both(X, y, oof, SCHEMA, LEVEL, 5, 0)
    return estimator.fit(X, y), variants


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 11, dtype=float)  # n = 10: ⌈11 · 0.9⌉ = 10th smallest
    assert intervals.conformal_quantile(scores, 0.9) == 10.0
    assert intervals.conformal_quantile(scores, 0.5) == 6.0  # ⌈5.5⌉ = 6
    with pytest.raises(ValueError, match="between 0 and 1"):
        intervals.conformal_quantile(scores, 1.0)
    with pytest.raises(ValueError, match="no residuals"):
        intervals.conformal_quantile([], 0.9)


def test_adaptive_width_is_chosen_and_covers_both_groups_on_new_data(fitted):
    estimator, variants = fitted
    chosen = intervals.choose(variants)
    assert chosen.method == "adaptive"
    assert chosen.worst_gap["adaptive"] < chosen.worst_gap["constant"]
    X, y = heteroscedastic(4000, seed=1)
    predicted = estimator.predict(X)
    groups = {}
    for name, variant in variants.items():
        lower, upper = variant.bounds(X, predicted)
        assert abs(intervals.covered(y, lower, upper).mean() - LEVEL) < 0.03, name
        groups[name] = intervals.coverage_by_group(y, lower, upper, X, predicted, SCHEMA)
    # Constant width over-covers the calm rows and under-covers the wild ones; adaptive does not.
    assert groups["constant"]["group=wild"]["coverage"] < 0.75
    for group in ("group=calm", "group=wild"):
        assert abs(groups["adaptive"][group]["coverage"] - LEVEL) < 0.05, group
    assert (groups["adaptive"]["group=wild"]["mean_width"]
            > 3 * groups["adaptive"]["group=calm"]["mean_width"])


def test_groups_are_categories_and_prediction_quartiles():
    X = typed(pd.DataFrame({"x": [1.0, 2, 3, 4, 5, 6, 7, 8],
                            "group": ["calm"] * 6 + ["wild", None]}), SCHEMA)
    masks = intervals.group_masks(X, X["x"].to_numpy(), SCHEMA)
    assert list(masks) == ["group=calm", "group=wild", "group=(missing)", "prediction Q1",
                           "prediction Q2", "prediction Q3", "prediction Q4"]
    assert [int(masks[f"prediction Q{k}"].sum()) for k in range(1, 5)] == [2, 2, 2, 2]


def test_interval_report_has_flat_dotted_keys(fitted):
    _, variants = fitted
    y = np.array([1.0, 2.0, 3.0])
    report = intervals.interval_report(variants["constant"], y, y - 1, y + [1, 1, -2])
    assert report == {"interval.level": LEVEL,
                      "interval.coverage": pytest.approx(2 / 3, abs=1e-6),  # the last: upper < y
                      "interval.mean_width": pytest.approx(1.0),  # (2 + 2 − 1) / 3
                      "interval.method": "constant"}


@pytest.mark.parametrize("method", ["adaptive", "constant"])
def test_graph_lower_upper_equal_the_pipelines_bounds(fitted, method):
    estimator, variants = fitted
    graph = with_intervals(to_onnx(estimator, SCHEMA), variants[method], SCHEMA)
    check_signature(graph, SCHEMA)
    assert [o.name for o in graph.graph.output] == [OUTPUT_NAME, *INTERVAL_OUTPUTS]
    # the difficulty subgraph reads the model's own decimal inputs (no second conversion)
    assert not [n.name for n in graph.graph.node if n.name.startswith("difficulty_medcast_in_")]
    X, _ = heteroscedastic(200, seed=2)
    check_parity(estimator, graph, X)
    lower, upper = variants[method].bounds(X, estimator.predict(X))
    result = check_interval_parity(inference_session(graph), X, lower, upper, rtol=1e-4)
    assert result["max_rel_diff"] <= 1e-4
    # evaluate's path: the prediction and both bounds from one graph run
    both = check_parity(estimator, graph, X, bounds=variants[method].bounds)
    assert both["interval_max_rel_diff"] == result["max_rel_diff"]
    with pytest.raises(ArtifactError, match="interval bound 'lower' differs"):
        check_interval_parity(graph, X, lower - 1.0, upper)


def test_a_bound_near_zero_is_measured_against_its_interval():
    """float32 trees: the lower bound −41.1725 came out as −41.165 beside an upper bound of
    ~20,000 (measured on a resampled insurance table): 3.7e-7 of the interval, not 1.7e-4 of
    the bound. A real error stays an error."""
    lower = np.array([-41.1725, 5000.0, 7000.0])
    upper = np.array([20000.0, 15000.0, 16000.0])
    rel_lo, rel_hi = bound_differences((lower, upper), (lower + [0.0075, 0, 0], upper))
    assert rel_lo.max() < 1e-6 and rel_hi.max() == 0.0
    rel_lo, _ = bound_differences((lower, upper), (lower + [10.0, 0, 0], upper))
    assert rel_lo.max() > 1e-4
    nan_lo, _ = bound_differences((lower, upper), (lower + [np.nan, 0, 0], upper))
    assert np.isinf(nan_lo[0])


def test_out_of_fold_fits_are_capped_as_tunes_folds_were():
    """With cv.large.max_rows (a subsampled SVR or forest), each fold's model fits on the
    rows tune's folds fitted on; below the cap the predictions are unchanged."""
    from sklearn.base import clone

    from medcast.metrics import capped

    X, y = heteroscedastic(300, seed=1)
    estimator = models.build("knn", {"n_neighbors": 5}, SCHEMA, 0)
    plain = intervals.oof_predictions(estimator, X, y, 5, 0)
    assert np.array_equal(plain, intervals.oof_predictions(estimator, X, y, 5, 0, max_rows=240))
    capped_oof = intervals.oof_predictions(estimator, X, y, 5, 0, max_rows=100)
    expected = np.empty(len(X))
    for k, (fit, val) in enumerate(fold_indices(len(X), 5, 0)):
        rows = capped(fit, 100, 0, k)
        expected[val] = clone(estimator).fit(X.iloc[rows], y.iloc[rows]).predict(X.iloc[val])
    assert np.array_equal(capped_oof, expected) and not np.array_equal(capped_oof, plain)
