"""medcast.study: the study's budget of tickets (the rest of the shared study is exercised by
tests/test_tune.py and tests/test_tune_distributed.py)."""

from __future__ import annotations

import pytest

from devtools.factories import insurance_frame
from medcast.datasets import validate
from medcast.features import infer_schema, split_xy
from medcast.study import n_trials
from tests.conftest import tiny


@pytest.mark.parametrize(("model", "rows", "overrides", "expected"), [
    ("mlp", 121, ("cv.large.halving_above=120",), 2),  # expensive, above: capped
    ("mlp", 120, ("cv.large.halving_above=120",), 5),  # not above the threshold
    ("mlp", 121, ("cv.large.halving_above=null",), 5),  # no large-table policy
    ("knn", 121, ("cv.large.halving_above=120",), 5),  # not expensive
    ("mlp", 121, ("cv.large.halving_above=120", "cv.large.expensive_trials=null"), 5),
    ("mlp", 121, ("cv.large.halving_above=120", "cv.large.expensive_trials=9"), 5),  # ≥ n_trials
    ("linear", 121, ("cv.large.halving_above=120",), 1),  # nothing to tune
])
def test_an_expensive_candidate_on_a_large_table_gets_expensive_trials(model, rows, overrides,
                                                                        expected):
    p = tiny("tune.n_trials=5", "cv.large.expensive_trials=2", *overrides)
    budget, reason = n_trials(p, model, rows)
    assert budget == expected
    if expected == 2:
        assert reason == ("2 of tune.n_trials=5 trials (cv.large.expensive_trials: an expensive "
                          "candidate on more than cv.large.halving_above=120 rows)")
    else:
        assert reason is None


def test_the_stage_study_enqueues_the_capped_budget_and_the_refit_says_why(tmp_path):
    from medcast.tune import refit, run_study

    p = tiny("dataset=insurance", f"tune.storage=sqlite:///{tmp_path}/optuna.db",
             "tune.n_trials=5", "cv.n_jobs=1", "cv.large.halving_above=60",
             "cv.large.expensive_trials=2")
    frame = validate(insurance_frame(120, seed=2).astype(str), p.dataset)
    schema = infer_schema(frame, p.dataset)
    X, y = split_xy(frame, schema)
    study = run_study(p, "mlp", schema, X, y)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    _, _, note = refit(p, "mlp", {**p.models["mlp"].defaults, **study.best_params}, schema, X,
                       y, 2)
    assert "2 of tune.n_trials=5 trials (cv.large.expensive_trials" in note
