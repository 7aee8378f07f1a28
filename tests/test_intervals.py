"""Conformal intervals (medcast.intervals): the quantile, calibration on heteroscedastic data
(adaptive width chosen, groups covered), reports, and the ONNX graph's lower/upper outputs
matching the pipeline's bounds; Mondrian intervals per group (medcast.mondrian): coverage in
each group, the pooled q where a cell is too small or unseen, save/load, the graph's lookup."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from medcast import intervals, models, mondrian
from medcast.errors import ArtifactError
from medcast.features import Feature, FeatureSchema, typed
from medcast.metrics import fold_indices
from medcast.onnx.bounds import bound_differences, check_interval_parity, with_intervals
from medcast.onnx.contract import INTERVAL_OUTPUTS, OUTPUT_NAME
from medcast.onnx.export import check_signature, to_onnx
from medcast.onnx.parity import check_parity
from medcast.onnx.runtime import inference_session
from tests.support.synthetic import SCHEMA, heteroscedastic

LEVEL = 0.9


def ridge_oof(X, y, schema):
    """A ridge pipeline and its 5-fold out-of-fold predictions (what evaluate calibrates on)."""
    estimator = models.build("ridge", {"alpha": 1.0}, schema, 0)
    return estimator, intervals.oof_predictions(estimator, X, y, 5, 0)


@pytest.fixture(scope="module")
def fitted():
    X, y = heteroscedastic(600, seed=0)
    estimator, oof = ridge_oof(X, y, SCHEMA)
    variants = intervals.fit_both(X, y, oof, SCHEMA, LEVEL, 5, 0)
    return estimator.fit(X, y), variants


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 11, dtype=float)  # n = 10: ⌈11 · 0.9⌉ = 10th smallest
    assert mondrian.conformal_quantile(scores, 0.9) == 10.0
    assert mondrian.conformal_quantile(scores, 0.5) == 6.0  # ⌈5.5⌉ = 6
    with pytest.raises(ValueError, match="between 0 and 1"):
        mondrian.conformal_quantile(scores, 1.0)
    with pytest.raises(ValueError, match="no residuals"):
        mondrian.conformal_quantile([], 0.9)


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


# --- Mondrian (group-conditional) intervals: evaluate.interval_groups ---------------------------

SHAPES = FeatureSchema("synthetic", "y", "units", (
    Feature("x", "float", None, -10, 10),
    Feature("group", "category", None, categories=("calm", "spiky", "rare"), nullable=True),
    Feature("site", "category", None, categories=("a", "b")),
))


def two_shapes(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """y = 2x + noise of about the same mean size in both groups but of another shape: N(0, 1)
    in "calm"; in "spiky" mostly tiny (N(0, 0.1)) with one row in five far off (N(0, 5)). The
    difficulty model, fitted to |r|, sees the same σ in both, so one q cannot serve both:
    "spiky" needs twice the width for 90 %. "rare" is declared but never drawn."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n).round(3)
    spiky = rng.random(n) < 0.5
    noise = np.where(spiky, np.where(rng.random(n) < 0.2, rng.normal(0, 5, n),
                                     rng.normal(0, 0.1, n)), rng.normal(0, 1, n))
    frame = pd.DataFrame({"x": x, "group": np.where(spiky, "spiky", "calm"),
                          "site": rng.choice(["a", "b"], n)})
    return typed(frame, SHAPES), pd.Series(2 * x + noise, name="y")


@pytest.fixture(scope="module")
def shapes():
    X, y = two_shapes(2000, seed=0)
    estimator, oof = ridge_oof(X, y, SHAPES)
    pooled = intervals.fit_both(X, y, oof, SHAPES, LEVEL, 5, 0)
    mondrian = intervals.fit_both(X, y, oof, SHAPES, LEVEL, 5, 0, ("group",))
    return estimator.fit(X, y), pooled, mondrian


def group_coverage(model, estimator, X, y) -> dict[str, float]:
    predicted = estimator.predict(X)
    lower, upper = model.bounds(X, predicted)
    groups = intervals.coverage_by_group(y, lower, upper, X, predicted, SHAPES)
    return {k: v["coverage"] for k, v in groups.items() if k.startswith("group=")}


def test_mondrian_intervals_cover_each_group_where_pooled_ones_do_not(shapes):
    estimator, pooled, mondrian = shapes
    X, y = two_shapes(20_000, seed=1)  # new patients
    for variant in ("adaptive", "constant"):  # adaptive width does not see the shape either
        assert group_coverage(pooled[variant], estimator, X, y)["group=spiky"] < 0.87, variant
    for model in (*mondrian.values(), intervals.choose(mondrian)):
        for group, coverage in group_coverage(model, estimator, X, y).items():
            assert abs(coverage - LEVEL) < 0.02, (model.method, group)
    chosen = intervals.choose(mondrian)
    assert chosen.groups == ("group",) and intervals.choose(pooled).groups == ()
    q = dict(zip(chosen.cells.labels(), chosen.cells.q, strict=True))
    assert q["group=spiky"] > 1.5 * q["group=calm"]


def test_min_cell_rows_is_where_the_conformal_quantile_becomes_finite():
    from medcast.mondrian import min_cell_rows

    assert [min_cell_rows(level) for level in (0.5, 0.8, 0.9, 0.95, 0.99)] == [1, 4, 9, 19, 99]
    for level in (0.8, 0.9, 0.95):  # n rows: rank ⌈(n+1)·level⌉ ≤ n, one fewer: not
        n = min_cell_rows(level)
        assert math.ceil((n + 1) * level) <= n < math.ceil(n * level) + 1


def test_a_small_cell_an_unseen_level_and_a_missing_value_use_the_pooled_q():
    """8 rows of "b" (one fewer than 9, the minimum at 90 %) and 9 missing values (just
    enough); "rare" is declared and unseen, "zzz" not even declared."""
    X, y = two_shapes(400, seed=3)
    X.loc[X.index[:8], "site"], X.loc[X.index[8:], "site"] = "b", "a"
    X.loc[X.index[10:19], "group"] = None
    model = intervals.fit_both(X, y, X["x"] * 2, SHAPES, LEVEL, 5, 0, ("site", "group"))["constant"]
    cells = model.cells
    assert cells.levels == (("a", "b"), ("calm", "spiky", "rare", "(missing)"))
    n = dict(zip(cells.labels(), cells.n, strict=True))
    assert n["site=a, group=(missing)"] == 9 and n["site=b, group=calm"] + n["site=b, group=spiky"] == 8
    card = model.card()
    assert set(card["pooled_cells"]) == {"site=b, group=calm", "site=b, group=spiky",
                                         "site=b, group=rare", "site=a, group=rare",
                                         "site=b, group=(missing)"}
    for label in card["pooled_cells"]:
        assert card["cell_q"][label] == round(model.q, 9)
    assert card["cell_q"]["site=a, group=(missing)"] != round(model.q, 9)
    rows = typed(pd.DataFrame({"x": [0.0] * 5, "group": ["calm", None, "rare", "zzz", "spiky"],
                               "site": ["a", "a", "a", "a", "b"]}), SHAPES)
    q = np.asarray(model.row_q(rows))
    cell_q = dict(zip(cells.labels(), cells.q, strict=True))
    assert q[0] == cell_q["site=a, group=calm"]
    assert q[1] == cell_q["site=a, group=(missing)"] != model.q
    assert q[2] == q[3] == q[4] == model.q  # unseen, undeclared, too small


def test_interval_model_with_groups_survives_save_and_load(shapes, tmp_path):
    estimator, _, mondrian = shapes
    X, _ = two_shapes(50, seed=4)
    for method, model in mondrian.items():
        intervals.save_interval_model(model, tmp_path / method)
        loaded = intervals.load_interval_model(tmp_path / method)
        assert loaded.cells == model.cells and loaded.card() == model.card()
        predicted = estimator.predict(X)
        assert np.array_equal(np.stack(loaded.bounds(X, predicted)),
                              np.stack(model.bounds(X, predicted)))


@pytest.mark.parametrize("groups", [("group",), ("group", "site")])
@pytest.mark.parametrize("method", ["adaptive", "constant"])
def test_graph_bounds_equal_the_native_ones_per_group(shapes, method, groups):
    estimator, _, _ = shapes
    X, y = two_shapes(300, seed=5)
    X.loc[X.index[:20], "group"] = None  # missing: "(missing)", a cell of its own
    model = intervals.fit_both(X, y, estimator.predict(X), SHAPES, LEVEL, 5, 0, groups)[method]
    graph = with_intervals(to_onnx(estimator, SHAPES), model, SHAPES)
    check_signature(graph, SHAPES)
    opsets = {o.domain: o.version for o in graph.opset_import}
    assert opsets[""] <= 17 and 2 <= opsets["ai.onnx.ml"] <= 3
    codes = [n for n in graph.graph.node if n.name.startswith("interval_code_")]
    assert [(n.op_type, n.input[0]) for n in codes] == [("LabelEncoder", g) for g in groups]
    new, _ = two_shapes(400, seed=6)
    new.loc[new.index[:30], "group"] = None
    new.loc[new.index[30:60], "group"] = "rare"  # declared, never seen in training: pooled q
    result = check_parity(estimator, graph, new, bounds=model.bounds)
    assert result["interval_max_rel_diff"] <= 1e-6
    native_q = np.asarray(model.row_q(new))
    assert (native_q[30:60] == model.q).all() and len(set(native_q)) >= 4
    if groups == ("group",):  # 20 missing values in calibration: a q of their own
        assert not (native_q[:30] == model.q).any()


def test_no_groups_gives_todays_interval_card_file_and_graph(fitted, tmp_path):
    """evaluate.interval_groups: [] changes nothing: one q, the same card keys and meta.json,
    a scalar q in the graph and no Mondrian nodes."""
    estimator, variants = fitted
    X, y = heteroscedastic(100, seed=7)
    oof = intervals.oof_predictions(estimator, X, y, 5, 0)
    again = intervals.fit_both(X, y, oof, SCHEMA, LEVEL, 5, 0, groups=())
    for method, model in again.items():
        assert model.cells is None and model.groups == ()
        assert list(model.card()) == ["level", "method", "q", "floor"]
        predicted = estimator.predict(X)
        lower, upper = model.bounds(X, predicted)
        assert np.array_equal(upper, predicted + model.q * model.scale(X))
        assert np.array_equal(lower, predicted - model.q * model.scale(X))
        intervals.save_interval_model(model, tmp_path / method)
        meta = json.loads((tmp_path / method / "meta.json").read_text())
        assert sorted(meta) == ["floor", "level", "method", "q", "worst_gap"]
        graph = with_intervals(to_onnx(estimator, SCHEMA), model, SCHEMA)
        assert not [n for n in graph.graph.node if n.name.startswith("interval_code_")]
        (q,) = [t for t in graph.graph.initializer if t.name == "interval_q"]
        assert list(q.dims) == []
    assert intervals.fit_intervals(X, y, oof, SCHEMA, LEVEL, 5, 0).card() == \
        intervals.choose(again).card()


def test_folds_in_processes_give_the_same_predictions_and_intervals():
    """oof_predictions and the σ folds in 2 processes (cv.n_jobs) equal the one-process run."""
    X, y = heteroscedastic(400, seed=3)
    estimator = models.build("ridge", {"alpha": 1.0}, SCHEMA, 0)
    one = intervals.oof_predictions(estimator, X, y, 5, 0)
    two = intervals.oof_predictions(estimator, X, y, 5, 0, n_jobs=2)
    assert np.allclose(one, two, rtol=1e-12, atol=1e-12)
    here = intervals.fit_intervals(X, y, one, SCHEMA, LEVEL, 5, 0).card()
    there = intervals.fit_intervals(X, y, one, SCHEMA, LEVEL, 5, 0, n_jobs=2).card()
    assert here == there
