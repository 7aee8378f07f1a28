"""medcast.validation: the pieces evaluate assembles into reports/validation.json."""

from __future__ import annotations

import numpy as np
import pytest

from medcast import models, validation
from medcast.bootstrap import optimism_table, refit_task, resamples
from tests.support.study import insurance_study


@pytest.fixture(scope="module")
def insurance():
    p, schema, (X, y), (Xt, yt) = insurance_study(200, 4, 150)
    return p, schema, X, y, Xt, yt


def test_an_expensive_candidate_refits_a_tenth_as_often_and_says_so():
    assert validation.n_boot_for("ridge", 200) == (200, "")
    n, note = validation.n_boot_for("mlp", 200)
    assert n == 20 and "mlp is expensive to refit: 20 bootstrap refits" in note
    assert validation.n_boot_for("mlp", 50)[0] == validation.MIN_BOOT
    assert validation.n_boot_for("mlp", 15) == (15, "")  # never more than asked


def test_internal_validation_is_harrells_table_of_the_same_refits(insurance):
    p, schema, X, y, Xt, _ = insurance
    pipe = models.build("ridge", {"alpha": 1.0}, schema, 0).fit(X, y)
    boot = validation.internal_validation(pipe, X, y, Xt, "ridge", 12, 7, 2, None)
    direct = [refit_task(pipe, X, y, rows, Xt) for rows in resamples(len(X), 12, 7)]
    from medcast.bootstrap import performance

    expected = optimism_table(performance(y, pipe.predict(X)), direct)
    assert boot.optimism.equals(expected)  # two processes give the bits of one
    assert boot.test_preds.shape == (12, len(Xt)) and boot.note == ""
    assert np.array_equal(boot.test_preds[3], direct[3]["test_pred"])



def test_a_bounded_bootstrap_refits_on_the_sample_and_its_optimism_is_conservative():
    """Linear regression on 3 signal and 27 noise features: its optimism in R² shrinks with the
    rows (about 2p/n of the unexplained share), so refits within 300 of 3,000 rows find a
    larger optimism and a lower corrected R² than refits on every row; every refit fits 300
    rows, the apparent R² is the full model's, and the note says what ran."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    fitted: list[int] = []

    class Counting(LinearRegression):
        def fit(self, X, y, sample_weight=None):
            fitted.append(len(X))
            return super().fit(X, y, sample_weight)

    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(3000, 30)), columns=[f"x{i}" for i in range(30)])
    y = pd.Series(X["x0"] + X["x1"] - X["x2"] + rng.normal(scale=2.0, size=3000))
    model = Counting().fit(X, y)
    fitted.clear()
    full = validation.internal_validation(model, X, y, X.head(5), "linear", 20, 3, 1, None)
    bounded = validation.internal_validation(model, X, y, X.head(5), "linear", 20, 3, 1, None,
                                             max_rows=300)
    assert fitted == [3000] * 20 + [300] * 20
    r2_full, r2_bounded = full.optimism.loc["r2"], bounded.optimism.loc["r2"]
    assert r2_bounded["apparent"] == r2_full["apparent"]
    assert r2_bounded["optimism"] > 3 * r2_full["optimism"] > 0
    assert r2_bounded["corrected"] < r2_full["corrected"]
    assert full.note == "" and "seeded sample of 300 of the 3,000 training rows" in bounded.note
    same = validation.internal_validation(model, X, y, X.head(5), "linear", 20, 3, 1, None,
                                          max_rows=3000)
    assert same.optimism.equals(full.optimism)  # at or above the rows: unbounded

def test_predictor_parameters_count_the_encoded_columns(insurance):
    p, schema, X, y, *_ = insurance
    ridge = models.build("ridge", {}, schema, 0).fit(X, y)
    encoded = ridge[:-1].transform(X).shape[1]
    assert validation.predictor_parameters(ridge, X) == encoded
    poly = models.build("poly_elastic_net", {"degree": 2}, schema, 0).fit(X, y)
    assert validation.predictor_parameters(poly, X) == encoded * (encoded + 3) // 2


def test_sample_size_reports_the_criteria_and_floors_a_non_positive_r2(insurance):
    p, schema, X, y, *_ = insurance
    ridge = models.build("ridge", {}, schema, 0).fit(X, y)
    size = validation.sample_size(ridge, X, y, 0.7)
    assert size["available"] == len(X) and size["anticipated_r2"] == 0.7
    assert size["required"] == max(c["n"] for c in size["criteria"])
    assert size["enough"] == (len(X) >= size["required"]) and not size["r2_floored"]
    none = validation.sample_size(ridge, X, y, -0.2)
    assert none["anticipated_r2"] == validation.R2_FLOOR and none["r2_floored"]
    assert none["required"] > 1000 and not none["enough"]


def test_subgroups_are_small_categorical_columns_unless_the_dataset_says_otherwise(insurance):
    from dataclasses import replace

    p, schema, *_ = insurance
    assert validation.subgroup_columns(schema, p.dataset) == ["sex", "smoker", "region"]
    columns = dict(p.dataset.columns)
    columns["region"] = replace(columns["region"], subgroup=False)
    assert validation.subgroup_columns(schema, replace(p.dataset, columns=columns)) == \
        ["sex", "smoker"]


def test_instability_frame_draws_at_most_its_patients():
    pred = np.arange(500.0)
    boot = np.vstack([pred + b for b in range(3)])
    frame = validation.instability_frame(pred, boot, 0)
    assert len(frame) == 3 * validation.INSTABILITY_PATIENTS
    one = frame[frame["patient"] == frame["patient"].iloc[0]]
    assert list(one["bootstrap"] - one["predicted"]) == [0.0, 1.0, 2.0]
