from __future__ import annotations

from medcast.experiments import exp_table

SHOW = [
    {"rev": "workspace", "name": None, "data": {
        "rev": "workspace", "timestamp": None,
        "params": {"params.yaml": {"data": {"dataset": {"name": "diabetes"}, "tune": {"n_trials": 3}}}},
        "metrics": {"reports/metrics.json": {"data": {
            "model": "ridge", "test": {"r2": 0.45, "rmse": 53.0, "mae": 42.0},
            "cv": {"r2": 0.48, "r2_std": 0.04}}}}}},
    {"rev": "abc123", "name": "main", "data": {"rev": "abc123", "params": {}, "metrics": {}},
     "experiments": [{"name": "ins", "revs": [{"rev": "def456", "name": "ins", "data": {
         "rev": "def456", "timestamp": "2026-11-22T04:00:00",
         "params": {"params.yaml": {"data": {"dataset": {"name": "insurance"}}}},
         "metrics": {"reports/metrics.json": {"data": {
             "model": "gradient_boosting", "test": {"r2": 0.88}, "cv": {"r2": 0.86}}}}}}]}]},
]


def test_exp_table_flattens_workspace_and_experiments():
    table = exp_table(SHOW).set_index("experiment")
    assert list(table.index) == ["workspace", "ins"]
    assert table.loc["workspace", "selected"] == "ridge"
    assert table.loc["workspace", "test_r2"] == 0.45
    assert table.loc["ins", "dataset"] == "insurance"
    assert table.loc["ins", "baseline"] == "main"
    assert table.loc["ins", "cv_r2_mean"] == 0.86


def test_exp_table_of_nothing_is_empty():
    assert exp_table([]).empty
