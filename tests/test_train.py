from __future__ import annotations

import pytest

from devtools.factories import insurance_frame
from medcast.datasets import validate
from medcast.errors import ConfigError
from medcast.features import infer_schema, split_xy
from medcast.train import (
    evaluate_candidate,
    evaluate_candidates,
    history_frame,
    leaderboard,
    select,
)
from tests.conftest import tiny


@pytest.fixture(scope="module")
def data():
    p = tiny("dataset=insurance")
    frame = validate(insurance_frame(150, seed=1).astype(str), p.dataset)
    schema = infer_schema(frame, p.dataset)
    X, y = split_xy(frame.iloc[:120], schema)
    Xt, yt = split_xy(frame.iloc[120:], schema)
    return p, schema, X, y, Xt, yt


def test_candidate_gets_cv_train_and_test_scores(data):
    p, schema, X, y, Xt, yt = data
    r = evaluate_candidate("ridge", p.models["ridge"].defaults, p.train, schema, X, y, Xt, yt)
    assert len(r.folds) == p.train.cv_folds
    assert set(r.cv) >= {"r2", "r2_std", "rmse", "rmse_std", "mae", "mae_std"}
    assert r.test["r2"] > 0.5  # the generated charges are mostly explained by the features
    assert r.history == {}


def test_select_best_cv_rmse_unless_forced(data):
    p, schema, X, y, Xt, yt = data
    results = [evaluate_candidate(n, p.models[n].defaults, p.train, schema, X, y, Xt, yt)
               for n in ("linear", "decision_tree")]
    best = min(results, key=lambda r: r.cv["rmse"])
    assert select(results, None).model == best.model
    assert select(results, "decision_tree").model == "decision_tree"
    board = leaderboard(results)
    assert list(board["rank"]) == [1, 2]
    assert board.iloc[0]["model"] == best.model


def test_mlp_history_is_reported_in_target_units(data):
    p, schema, X, y, Xt, yt = data
    r = evaluate_candidate("mlp", p.models["mlp"].defaults, p.train, schema, X, y, Xt, yt)
    hist = history_frame(r.history)
    assert list(hist.columns) == ["epoch", "mae", "val_mae", "learning_rate"]
    assert 1 <= len(hist) <= p.models["mlp"].defaults["epochs"]
    assert hist["mae"].iloc[0] > 1000  # USD, not standard units


def test_history_frame_without_mlp_is_empty_with_columns():
    assert list(history_frame({}).columns) == ["epoch", "mae", "val_mae", "learning_rate"]


def test_leaderboard_holds_no_wall_clock_time(data):
    """A DVC output must be the same bytes for the same inputs: fit times go to MLflow only."""
    p, schema, X, y, Xt, yt = data
    results = [evaluate_candidate("ridge", {}, p.train, schema, X, y, Xt, yt)]
    assert results[0].seconds > 0  # measured (logged to MLflow), ...
    board = leaderboard(results)  # ... but not written
    assert not [c for c in board.columns if "second" in c or "time" in c]
    twin = leaderboard([evaluate_candidate("ridge", {}, p.train, schema, X, y, Xt, yt)])
    assert board.to_csv(index=False) == twin.to_csv(index=False)


def test_mlp_cross_validation_prints_no_tensorflow_noise(tmp_path):
    """`python -m medcast.train` with the MLP (TensorFlow with its own log settings: none):
    no E0000/W0000 lines (TensorFlow's known-harmless tf.data messages), no start-up notices;
    the stage's own log is all there."""
    import os
    import re
    import shutil
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT, tiny_params, venv_env
    from tests.support.repo_copy import tiny_conf

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    tiny_conf(tmp_path / "conf", {"model.mlp.epochs": "3"})
    params = tiny_params("train.candidates=[ridge,mlp]", "train.cv_folds=2")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in venv_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    outputs = []
    for stage in ("preprocess", "train"):
        out = subprocess.run([sys.executable, "-m", f"medcast.{stage}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout + out.stderr)
    log = outputs[1]
    assert "[2/2] mlp" in log and "selected" in log
    noise = [line for line in log.splitlines()
             if re.match(r"[EWI]\d{4} ", line) or "absl::InitializeLog" in line]
    assert noise == []
    assert os.path.getsize(tmp_path / "reports/history.csv") > 40  # the MLP really trained


def test_scores_do_not_depend_on_the_number_of_processes(data):
    """Folds and candidates run in worker processes; each task is seeded and cloned, so one
    process and two give the same numbers (the MLP included: one TensorFlow thread each)."""
    from dataclasses import replace

    p, schema, X, y, Xt, yt = data
    names = ["mlp", "ridge", "random_forest", "svr"]
    hps = {n: p.models[n].defaults for n in names}
    runs = [list(evaluate_candidates(names, hps, replace(p.train, n_jobs=jobs), schema, X, y,
                                     Xt, yt)) for jobs in (1, 2)]
    for one, two in zip(*runs, strict=True):
        assert one.model == two.model
        assert (one.folds, one.train, one.test, one.history) == \
               (two.folds, two.train, two.test, two.history)
    assert [r.model for r in runs[1]] == names  # listed order, though the MLP ran first


def test_large_data_policy_is_recorded_in_the_leaderboard(data):
    """Thresholds below the table's rows engage the policy: what ran, and why, per candidate;
    a skipped candidate is listed last without scores and is never selected."""
    from dataclasses import replace

    from medcast.config import LargeConfig

    p, schema, X, y, Xt, yt = data
    policy = LargeConfig(max_rows={"svr": 50}, skip_above={"knn": 100}, hist_boosting_above=100,
                         mlp_max_steps=2)
    cfg = replace(p.train, n_jobs=1, large=policy)
    names = ["svr", "knn", "gradient_boosting", "mlp", "ridge"]
    results = list(evaluate_candidates(names, {n: p.models[n].defaults for n in names}, cfg,
                                       schema, X, y, Xt, yt))
    by = {r.model: r for r in results}
    assert by["ridge"].fidelity == "full" and by["ridge"].note == ""
    assert by["svr"].fidelity == "subsampled" and "50 of 120 rows" in by["svr"].note
    assert by["knn"].fidelity == "skipped" and by["knn"].folds == []
    assert by["gradient_boosting"].fidelity == "approximated"
    assert "HistGradientBoosting" in by["gradient_boosting"].note
    assert by["mlp"].fidelity == "approximated" and "batch 16 → 48" in by["mlp"].note
    board = leaderboard(results)
    assert board.iloc[-1]["model"] == "knn" and board.iloc[-1]["fidelity"] == "skipped"
    assert list(board["fidelity"].iloc[:-1]) == [by[m].fidelity for m in board["model"].iloc[:-1]]
    assert select(results, None).model != "knn"
    with pytest.raises(ConfigError, match="skipped"):
        select(results, "knn")
