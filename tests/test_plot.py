"""medcast.plot's figures (the served explanations' beeswarm among them) and the raw table's
provenance for the TRIPOD checklist."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from medcast import calibration
from medcast.plot import (
    plot_calibration,
    plot_instability,
    plot_shap_summary,
    raw_source,
    shap_explanation,
)
from tests.conftest import tiny


def test_calibration_and_instability_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.normal(100, 20, 300)
    y = pred + rng.normal(0, 10, 300)
    plot_calibration(calibration.decile_table(y, pred), calibration.smooth_curve(y, pred), 0.98,
                     "charges", tmp_path / "c.png")
    frame = pd.DataFrame({"patient": np.repeat(np.arange(10), 5), "predicted": np.repeat(pred[:10], 5),
                          "bootstrap": np.repeat(pred[:10], 5) + rng.normal(0, 1, 50)})
    plot_instability(frame, 0.8, "charges", tmp_path / "i.png")
    for name in ("c.png", "i.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_raw_source_names_the_file_and_its_md5_or_the_bundled_table(tmp_path, monkeypatch):
    diabetes = tiny().dataset
    assert "scikit-learn" in raw_source(diabetes) and "'diabetes'" in raw_source(diabetes)
    insurance = tiny("dataset=insurance").dataset
    monkeypatch.chdir(tmp_path)
    path = tmp_path / insurance.raw
    path.parent.mkdir(parents=True)
    content = b"age,sex\n1,m\n"
    path.write_bytes(content)
    assert raw_source(insurance) == f"`{insurance.raw}` (md5 {hashlib.md5(content).hexdigest()})"


def _explanations(schema, n: int = 40, seed: int = 0) -> pd.DataFrame:
    """reports/explanations.csv's columns for `schema`, with made-up numbers and a missing
    value in every feature."""
    from medcast.explain import VALUE_PREFIX

    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(0, 10, (n, len(schema.names))), columns=schema.names)
    table["base_value"] = 100.0
    table["prediction"] = 100.0 + table[schema.names].sum(axis=1)
    for f in schema.features:
        values = (rng.choice(list(f.categories), n).astype(object) if f.type == "category"
                  else rng.normal(50, 5, n))
        values[0] = None if f.type == "category" else np.nan
        table[VALUE_PREFIX + f.name] = values
    return table


def test_the_shap_summary_is_written_the_same_every_time_and_leaves_numpy_s_seed_alone(tmp_path):
    import warnings

    from tests.support.study import insurance_study

    _, schema, _, _ = insurance_study(60, seed=0, n_train=40)  # categories of 2 and of 4 levels
    table = _explanations(schema)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. "All-NaN slice": a stage log line
        plot_shap_summary(table, schema, "ridge", "exact", 42, tmp_path / "a.png")
    assert np.array_equal(np.random.get_state()[1], before)  # the beeswarm's jitter: seeded, restored
    plot_shap_summary(table, schema, "ridge", "exact", 42, tmp_path / "b.png")
    a, b = (tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b


def test_the_shap_explanation_colours_numbers_and_two_level_categories_only():
    from tests.support.study import insurance_study

    _, schema, _, _ = insurance_study(60, seed=0, n_train=40)
    table = _explanations(schema)
    e = shap_explanation(table, schema)
    assert e.values.shape == (len(table), len(schema.names))
    names = dict(zip(schema.names, e.feature_names, strict=True))
    assert names["smoker"] == "smoker (no < yes)" and names["region"] == "region (category)"
    region, smoker = schema.names.index("region"), schema.names.index("smoker")
    assert all(isinstance(v, str) for v in e.data[:, region])  # 4 levels: text, drawn grey
    assert set(e.data[1:, smoker]) <= {0.0, 1.0} and np.isnan(e.data[0, smoker])  # missing: grey


def test_permutation_importance_on_a_bounded_sample_keeps_its_value():
    """y = 3·x1 + ε (unit variances), x2 unrelated: shuffling x1 drops R² from 0.9 to −0.9, by
    1.8 (2·9/10); x2's drop is 0. On a 200-row sample of 5,000 rows the estimates hold that,
    every prediction sees at most the sample, and at or above the table's size the bound
    changes nothing (scikit-learn's permutation_importance on all rows)."""
    from sklearn.inspection import permutation_importance
    from sklearn.linear_model import LinearRegression

    from medcast.plot import permutation_table

    seen: list[int] = []

    class Counting(LinearRegression):
        def predict(self, X):
            seen.append(len(X))
            return super().predict(X)

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x1": rng.normal(size=5000), "x2": rng.normal(size=5000)})
    y = pd.Series(3 * X["x1"] + rng.normal(size=5000))
    model = Counting().fit(X, y)
    seen.clear()
    sampled = permutation_table(model, X, y, 10, 0, max_rows=200).set_index("feature")
    assert seen and max(seen) == 200
    assert abs(sampled.loc["x1", "importance"] - 1.8) < 0.4
    assert abs(sampled.loc["x2", "importance"]) < 0.05
    whole = permutation_table(model, X, y, 3, 0, max_rows=5000)
    assert whole.equals(permutation_table(model, X, y, 3, 0))
    direct = permutation_importance(model, X, y, n_repeats=3, random_state=0, scoring="r2")
    assert np.allclose(whole.set_index("feature").loc[["x1", "x2"], "importance"],
                       direct.importances_mean, atol=1e-6)
