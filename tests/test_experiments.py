from __future__ import annotations

from medcast.experiments import exp_table

# Rows as dvc.api.exp_show gives them: flat, numbers as floats, missing values None, a name
# shared by two files prefixed with the file ("reports/metrics.json:model" below).
ROWS = [
    {"Experiment": None, "rev": "workspace", "typ": "baseline", "Created": None, "parent": None,
     "State": None, "Executor": None, "dataset.name": "diabetes",
     "reports/metrics.json:model": "ridge", "test.r2": 0.45, "test.rmse": 53.0, "cv.r2": 0.48,
     "test.mae": 42.0, "cv.r2_std": 0.04, "dataset": "diabetes", "tune.n_trials": 3.0,
     "params.yaml:model": "x", "cv.folds": 5.0, "cv.repeats": 2.0},
    {"Experiment": None, "rev": "main", "typ": "baseline", "Created": "Nov 22, 2026",
     "parent": None, "State": None, "Executor": None, "reports/metrics.json:model": None,
     "test.r2": None, "dataset.name": None, "dataset": None, "tune.n_trials": None},
    {"Experiment": "ins", "rev": "def4567", "typ": "branch_base", "Created": "04:00 AM",
     "parent": None, "State": None, "Executor": None, "dataset.name": "insurance",
     "reports/metrics.json:model": "gradient_boosting", "test.r2": 0.88, "cv.r2": 0.86,
     "dataset": "insurance", "tune.n_trials": 40.0},
]


def test_exp_table_flattens_workspace_and_experiments():
    table = exp_table(ROWS).set_index("experiment")
    assert list(table.index) == ["workspace", "ins"]  # main has neither params nor metrics
    assert table.loc["workspace", "selected"] == "ridge"
    assert table.loc["workspace", "test_r2"] == 0.45
    assert table.loc["workspace", "n_trials"] == 3
    assert table.loc["ins", "dataset"] == "insurance"
    assert table.loc["ins", "baseline"] == "main"
    assert table.loc["ins", "cv_r2"] == 0.86
    # params are not scores, also where their section shares the scores' prefix (cv.folds)
    assert not {"cv_folds", "cv_repeats"} & set(table.columns)


def test_exp_table_of_nothing_is_empty():
    assert exp_table([]).empty
