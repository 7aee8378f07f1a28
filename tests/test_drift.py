from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from devtools.factories import insurance_frame
from medcast.datasets import validate
from medcast.drift import PSI_MAJOR, drift_table, level, psi_categorical, psi_numeric
from medcast.features import infer_schema
from tests.conftest import tiny


def test_psi_is_near_zero_for_the_same_distribution():
    rng = np.random.default_rng(0)
    assert psi_numeric(rng.normal(size=5000), rng.normal(size=5000)) < 0.02


def test_psi_grows_with_the_shift():
    rng = np.random.default_rng(1)
    base = rng.normal(size=5000)
    small = psi_numeric(base, rng.normal(0.2, 1, 5000))
    large = psi_numeric(base, rng.normal(1.5, 1, 5000))
    assert 0.01 < small < large
    assert level(large) == "major"


def test_psi_categorical_handles_unseen_levels():
    assert psi_categorical(["a", "b"] * 50, ["a", "b"] * 50) == pytest.approx(0.0)
    assert psi_categorical(["no"] * 80 + ["yes"] * 20, ["yes"] * 100) > PSI_MAJOR


def test_psi_refuses_empty_samples():
    with pytest.raises(ValueError, match="non-empty"):
        psi_numeric([], [1.0])


def test_drift_table_flags_the_shifted_feature_only():
    p = tiny("dataset=insurance")
    train = validate(insurance_frame(800, seed=0).astype(str), p.dataset)
    served = validate(insurance_frame(800, seed=1).astype(str), p.dataset)
    served["bmi"] = served["bmi"] + 8  # a heavier population arrives
    served["smoker"] = "yes"
    table = drift_table(train, served, infer_schema(train, p.dataset)).set_index("feature")
    assert table.loc["bmi", "drift"] == "major" and table.loc["bmi", "ks_pvalue"] < 1e-6
    assert table.loc["smoker", "drift"] == "major"
    assert table.loc["age", "drift"] == "stable"
    assert np.isnan(table.loc["region", "ks_statistic"])
    assert isinstance(table, pd.DataFrame)


def test_missing_values_are_counted_apart_and_left_out_of_psi():
    from devtools.factories import messy_clinical_frame, messy_clinical_spec
    from medcast.drift import missing_rates

    ds = messy_clinical_spec()
    frame = messy_clinical_frame(600, seed=3).astype(object)
    train = validate(frame.where(frame.notna(), ""), ds)
    served = train.copy()
    served.loc[served.index[:300], "sbp"] = np.nan  # half the requests arrive without it
    schema = infer_schema(train, ds)
    rates = missing_rates(train, served, schema).set_index("feature")
    assert rates.loc["sbp", "nullable"] and not rates.loc["age", "nullable"]
    assert rates.loc["sbp", "missing_served"] > rates.loc["sbp", "missing_train"] + 0.2
    assert rates.loc["age", "missing_served"] == 0.0
    table = drift_table(train, served, schema).set_index("feature")
    assert np.isfinite(table.loc["sbp", "psi"])  # on the values present
    assert np.isfinite(table.loc["Hypertension", "psi"])  # missing is one more level
