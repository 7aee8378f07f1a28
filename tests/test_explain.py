"""medcast.explain: the export's background is a seeded sample of the training split in its own
order; the service's explanations (medcast.shapley on the graph) agree with `shap` on the native
model for every kind of candidate, with categories and missing values; they add up to the
prediction; a graph or a background that is not the model's fails the check with one message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from devtools.factories import messy_clinical_frame, messy_clinical_spec
from medcast import explain, models, shapley
from medcast.datasets import validate
from medcast.errors import ArtifactError
from medcast.onnx.export import to_onnx
from medcast.preprocess import split
from tests.conftest import tiny

# Every kind the registry can select: linear, spline, trees, boosting (native NaN), kNN, kernel.
# The MLP (Keras) has its own test: importing TensorFlow costs 13 s.
KINDS = ("ridge", "spline_ridge", "decision_tree", "random_forest", "gradient_boosting",
         "hist_boosting", "knn", "svr")


@pytest.fixture(scope="module")
def messy():
    """A clinical table with missing numbers and a missing category (30 % each), its split as
    read_split gives it (a missing category None), its schema and the tiny params."""
    ds = messy_clinical_spec()
    frame = messy_clinical_frame(300, seed=4)
    p = tiny()
    train, test, schema = split(validate(frame.astype(object).where(frame.notna(), ""), ds),
                                ds, p.preprocess)
    for part in (train, test):
        for c in schema.categorical:
            part[c] = part[c].astype(object).where(part[c].notna(), None)
    return p, schema, train, test


def _fitted(name: str, messy):
    p, schema, train, _ = messy
    est = models.build(name, p.models[name].defaults, schema, seed=0)
    est.fit(train[schema.names], train[schema.target])
    return est, to_onnx(est, schema).SerializeToString()


def _rows(messy, n: int = 12) -> pd.DataFrame:
    """Test rows with and without missing values."""
    _, schema, _, test = messy
    X = test[schema.names]
    gaps = X[X.isna().any(axis=1)].head(n // 2)
    return pd.concat([X.dropna().head(n - len(gaps)), gaps]).sort_index()


def _run(est, graph, messy, n_bg: int = 15, coalitions: int = 150, **kw):
    _, schema, train, _ = messy
    bg = explain.background(train[schema.names], n_bg, seed=3)
    return explain.explain_and_check(graph, est, schema, _rows(messy), bg, coalitions, 3,
                                     float(train[schema.target].std()), **kw)


def test_the_background_is_a_seeded_sample_of_the_training_rows_in_their_order(messy):
    _, schema, train, _ = messy
    X = train[schema.names]
    bg = explain.background(X, 40, seed=7)
    assert len(bg) == 40 and bg.index.is_unique and bg.index.isin(X.index).all()
    assert (np.diff(X.index.get_indexer(bg.index)) > 0).all()  # training order
    assert bg.index.equals(explain.background(X, 40, seed=7).index)
    assert not bg.index.equals(explain.background(X, 40, seed=8).index)
    assert len(explain.background(X, 10_000, seed=7)) == len(X)  # never more than there are


def test_card_rows_are_json_values_in_card_order_with_null_where_missing(messy):
    _, schema, train, _ = messy
    rows = explain.card_rows(train[schema.names], schema)
    kinds = {f.name: f.type for f in schema.features}
    for row in rows:
        assert len(row) == len(schema.names)
        for value, name in zip(row, schema.names, strict=True):
            expected = str if kinds[name] == "category" else float
            assert value is None or type(value) is expected
    assert any(v is None for row in rows for v in row)
    _, graph = _fitted("ridge", messy)
    from medcast.onnx.cut import CutGraph
    from medcast.onnx.runtime import inference_session

    features = [(f.name, f.type) for f in schema.features]
    columns = CutGraph.of(graph, features, inference_session).columns(rows)  # as served
    cat = schema.names.index(schema.categorical[0])
    assert columns[cat].dtype == object and "" in set(columns[cat])
    num = schema.names.index(schema.nullable[0])
    assert np.isnan(columns[num].astype(np.float64)).any()


@pytest.mark.parametrize("name", KINDS)
def test_served_explanations_agree_with_shap_and_add_up_to_the_prediction(name, messy):
    est, graph = _fitted(name, messy)
    out = _run(est, graph, messy)
    check = out.card.check
    assert check is not None and check.n == 12
    assert check.max_abs_diff <= check.tolerance
    assert check.reference.startswith("shap ") and "ExactExplainer" in check.reference
    assert out.card.method == "exact"  # 5 features: 2^5 = 32 ≤ 150 coalitions
    table = out.table
    _, schema, _, _ = messy
    total = table[schema.names].sum(axis=1) + table["base_value"]
    np.testing.assert_allclose(total, table["prediction"], rtol=1e-4, atol=1e-9)
    # the prediction is the graph's for that patient
    from medcast.onnx.runtime import inference_session, predict_onnx

    np.testing.assert_allclose(table["prediction"], predict_onnx(inference_session(graph),
                                                                 _rows(messy)), rtol=1e-6)
    if name == "knn":  # imputed medians and integer ages: coalition rows tie at the k-th point
        assert check.n_tied and "k-th neighbour" in explain.describe(out.card, 5)


def test_a_sampling_plan_records_how_often_its_margin_holds(messy):
    est, graph = _fitted("random_forest", messy)
    out = _run(est, graph, messy, coalitions=20)  # 2^5 > 20: antithetic permutation sampling
    assert out.card.method == "sampling"
    check = out.card.check
    assert check is not None and check.margin_coverage is not None
    assert 0.5 <= check.margin_coverage <= 1.0
    assert "95 % margin" in explain.describe(out.card, 5)
    _, schema, _, _ = messy
    table = out.table
    np.testing.assert_allclose(table[schema.names].sum(axis=1) + table["base_value"],
                               table["prediction"], rtol=1e-4)


def test_above_twelve_features_each_row_is_checked_exactly_on_a_subset(messy, monkeypatch):
    """The game of more features than EXACT_MAX_FEATURES (lowered to 3 here) is checked on a
    seeded subset per row, every feature in some row's, the rest held at the patient's values."""
    monkeypatch.setattr(explain, "EXACT_MAX_FEATURES", 3)
    subsets = explain.compared_features(5, 12, seed=1)
    assert all(len(s) == 3 for s in subsets)
    assert set(np.concatenate(subsets)) == set(range(5))
    est, graph = _fitted("ridge", messy)
    out = _run(est, graph, messy, coalitions=20)
    check = out.card.check
    assert check is not None and check.max_abs_diff <= check.tolerance
    assert "3 of the 5 features" in check.reference and check.margin_coverage is None
    assert "not measured" in explain.describe(out.card, 5)


def test_a_graph_wrong_only_off_the_data_fails_the_check_with_one_message(messy):
    """The native model 5 % off where both nullable numbers are missing: a pattern coalition
    rows make from patients and background rows (an imputation bug the parity rows may miss)."""
    est, graph = _fitted("ridge", messy)
    _, schema, _, _ = messy
    both = [n for n in schema.nullable if n in schema.numeric]

    class OffTheData:
        def predict(self, X: pd.DataFrame) -> np.ndarray:
            out = est.predict(X)
            return np.where(X[both].isna().all(axis=1), out * 1.05, out)

    with pytest.raises(ArtifactError) as err:
        _run(OffTheData(), graph, messy)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("explanations differ from shap ")
    assert "from the graph" in message and "× the target's standard deviation" in message


def test_a_graph_that_is_not_the_models_fails_the_check(messy):
    """The graph of the same pipeline fitted to a target 2 % larger: every contribution is
    2 % off, the stage stops and names the row and feature."""
    est, _ = _fitted("ridge", messy)
    p, schema, train, _ = messy
    other = models.build("ridge", p.models["ridge"].defaults, schema, seed=0)
    other.fit(train[schema.names], train[schema.target] * 1.02)
    with pytest.raises(ArtifactError, match=r"test row index \d+, (feature '[^']+'|the base "
                                            r"value): .* from the graph"):
        _run(est, to_onnx(other, schema).SerializeToString(), messy)


def test_a_background_that_is_not_the_cards_training_rows_fails_the_check(messy):
    est, graph = _fitted("ridge", messy)
    _, schema, train, _ = messy
    other = explain.background(train[schema.names], 15, seed=99)
    with pytest.raises(ArtifactError, match="the card's background"):
        _run(est, graph, messy, graph_background=explain.card_rows(other, schema))


def test_codes_give_shap_numbers_and_the_native_model_its_dtypes_back(messy):
    _, schema, train, test = messy
    X = test[schema.names]
    codes = explain.Codes.of(schema, X)
    matrix = codes.encode(X)
    assert matrix.dtype == np.float64 and np.isnan(matrix).any()
    back = codes.frame(matrix)
    assert list(back.dtypes) == list(X.dtypes)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), X.reset_index(drop=True),
                                  check_dtype=False)


def test_mean_abs_ranks_features_by_their_average_contribution():
    table = pd.DataFrame({"a": [1.0, -3.0], "b": [0.5, 0.5], "base_value": [10.0, 10.0],
                          "prediction": [11.5, 7.5], "value:a": [1, 2], "value:b": [3, 4]})
    ranked = explain.mean_abs(table)
    assert list(ranked.index) == ["a", "b"] and ranked["a"] == 2.0


@pytest.mark.slow
def test_the_keras_mlp_agrees_with_shap(messy):
    est, graph = _fitted("mlp", messy)
    out = _run(est, graph, messy, n_bg=10)
    check = out.card.check
    assert check is not None and check.max_abs_diff <= check.tolerance


def test_the_exact_plan_is_medcast_shapley_s_own():
    """The check's exact mode is shapley.plan with a budget of 2^m (no separate algorithm)."""
    assert shapley.plan(5, 2**5, 0).method == "exact"
    assert shapley.plan(5, 2**5 - 1, 0).method == "sampling"


def test_the_served_explanations_are_the_services_own_to_the_bit(messy):
    """reports/explanations.csv holds what `POST /predict?explain=true` answers: the service's
    explainer (serve.explain), loaded from the same card entry, gives the same numbers."""
    from types import SimpleNamespace

    from medcast.card import Feature
    from serve.explain import load_explainer
    from serve.model import _options  # the service's sessions: one thread each

    est, graph = _fitted("random_forest", messy)
    out = _run(est, graph, messy, coalitions=20)  # sampling: the orders' seed matters too
    _, schema, _, _ = messy
    card = SimpleNamespace(features=[Feature(f.name, f.type, None, None, None, None, None,
                                             list(f.categories or ()) or None)
                                     for f in schema.features], explainer=out.card)
    rows = explain.card_rows(_rows(messy), schema)
    service = load_explainer(graph, card, _options(), rows[0],
                             float(out.table["prediction"][0]))
    assert service is not None
    for i, row in enumerate(rows):
        answer = service.explain(row)
        assert [answer.contributions[n] for n in schema.names] == list(out.table.loc[i, schema.names])
        assert answer.base_value == out.table["base_value"][i]


def test_a_low_margin_coverage_is_a_warning_and_a_good_one_is_not():
    from medcast.card import ExplainerCard, ExplainerCheck

    def card(coverage):
        check = ExplainerCheck("shap", 10, 0.0, 1.0, margin_coverage=coverage)
        return ExplainerCard([[1.0]], 300, 0, "sampling", check)

    assert explain.coverage_warning(card(0.95)) is None
    assert explain.coverage_warning(card(None)) is None
    warning = explain.coverage_warning(card(0.8))
    assert warning is not None and "80.0%" in warning and "explain_coalitions" in warning


def test_masked_rows_counts_every_coalition_of_each_rows_features_on_every_background_row():
    free = [np.arange(10), np.arange(3), np.array([0, 5])]
    assert explain.masked_rows(free, 25) == (1024 + 8 + 4) * 25


@pytest.mark.parametrize(("masked", "compiled"), [(explain.JIT_MIN_MASKED_ROWS - 1, False),
                                                  (explain.JIT_MIN_MASKED_ROWS, True)])
def test_shap_s_numba_loops_are_compiled_only_for_a_large_check(masked, compiled):
    """In a fresh process (shap not yet imported): below the threshold shap's masking loops are
    plain Python functions, from it numba's dispatchers; numba's own setting is left as it
    was, so nothing imported later changes."""
    import subprocess
    import sys

    code = ("from medcast import explain\n"
            f"shap = explain.import_shap({masked})\n"
            "from numba.core import config\n"
            "from numba.core.dispatcher import Dispatcher\n"
            "from shap.utils import _masked_model\n"
            "print(isinstance(_masked_model._build_fixed_single_output, Dispatcher), config.DISABLE_JIT)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.split() == [str(compiled), "0"]
