from __future__ import annotations

import pytest

from medcast.config import parse_params
from medcast.datasets import validate
from medcast.features import infer_schema, split_xy
from medcast.train import evaluate_candidate, history_frame, leaderboard, select
from tests.conftest import tiny_params
from tests.factories import insurance_frame


@pytest.fixture(scope="module")
def data():
    p = parse_params(tiny_params("dataset=insurance"))
    frame = validate(insurance_frame(150, seed=1).astype(str), p.dataset)
    schema = infer_schema(frame, p.dataset)
    X, y = split_xy(frame.iloc[:120], schema)
    Xt, yt = split_xy(frame.iloc[120:], schema)
    return p, schema, X, y, Xt, yt


def test_candidate_gets_cv_train_and_test_scores(data):
    p, schema, X, y, Xt, yt = data
    r = evaluate_candidate("ridge", p.train, schema, X, y, Xt, yt)
    assert len(r.folds) == p.train.cv_folds
    assert set(r.cv) >= {"r2_mean", "r2_std", "rmse_mean", "rmse_std", "mae_mean", "mae_std"}
    assert r.test["r2"] > 0.5  # the generated charges are mostly explained by the features
    assert r.history == {}


def test_select_best_cv_rmse_unless_forced(data):
    p, schema, X, y, Xt, yt = data
    results = [evaluate_candidate(n, p.train, schema, X, y, Xt, yt)
               for n in ("linear", "decision_tree")]
    best = min(results, key=lambda r: r.cv["rmse_mean"])
    assert select(results, None).model == best.model
    assert select(results, "decision_tree").model == "decision_tree"
    board = leaderboard(results)
    assert list(board["rank"]) == [1, 2]
    assert board.iloc[0]["model"] == best.model


def test_mlp_history_is_reported_in_target_units(data):
    p, schema, X, y, Xt, yt = data
    r = evaluate_candidate("mlp", p.train, schema, X, y, Xt, yt)
    hist = history_frame(r.history)
    assert list(hist.columns) == ["epoch", "mae", "val_mae", "learning_rate"]
    assert 1 <= len(hist) <= p.train.models["mlp"]["epochs"]
    assert hist["mae"].iloc[0] > 1000  # USD, not standard units


def test_history_frame_without_mlp_is_empty_with_columns():
    assert list(history_frame({}).columns) == ["epoch", "mae", "val_mae", "learning_rate"]


def test_leaderboard_holds_no_wall_clock_time(data):
    """A DVC output must be the same bytes for the same inputs: fit times go to MLflow only."""
    p, schema, X, y, Xt, yt = data
    results = [evaluate_candidate("ridge", p.train, schema, X, y, Xt, yt)]
    assert results[0].seconds > 0  # measured (logged to MLflow), ...
    board = leaderboard(results)  # ... but not written
    assert not [c for c in board.columns if "second" in c or "time" in c]
    twin = leaderboard([evaluate_candidate("ridge", p.train, schema, X, y, Xt, yt)])
    assert board.to_csv(index=False) == twin.to_csv(index=False)
