from __future__ import annotations

import pytest

from medcast.candidates import check_forced, eligible, leaderboard
from medcast.errors import ConfigError
from medcast.train import evaluate_candidate, evaluate_candidates, history_frame
from tests.support.study import train_rows


@pytest.fixture(scope="module")
def data():
    """A tiny insurance study's training rows (tests.support.study.train_rows)."""
    return train_rows()


def test_candidate_gets_cv_and_train_scores_and_never_test_scores(data):
    from dataclasses import replace

    p, schema, X, y = data
    r = evaluate_candidate("ridge", p.models["ridge"].defaults, replace(p.cv, repeats=2), schema,
                           X, y)
    assert len(r.folds) == p.cv.folds * 2  # every fold of both repeats
    assert set(r.cv) >= {"r2", "r2_std", "rmse", "rmse_std", "mae", "mae_std"}
    assert r.train["r2"] > 0.5  # the generated charges are mostly explained by the features
    assert not hasattr(r, "test") and r.history == {}


@pytest.mark.slow
def test_mlp_history_is_reported_in_target_units(data):
    p, schema, X, y = data
    r = evaluate_candidate("mlp", p.models["mlp"].defaults, p.cv, schema, X, y)
    hist = history_frame(r.history)
    assert list(hist.columns) == ["epoch", "mae", "val_mae", "learning_rate"]
    assert 1 <= len(hist) <= p.models["mlp"].defaults["epochs"]
    assert hist["mae"].iloc[0] > 1000  # USD, not standard units


def test_history_frame_without_mlp_is_empty_with_columns():
    assert list(history_frame({}).columns) == ["epoch", "mae", "val_mae", "learning_rate"]


@pytest.mark.slow
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
    params = tiny_params("train.candidates=[ridge,mlp]", "cv.folds=2")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in venv_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    outputs = []
    for stage in ("preprocess", "train"):
        out = subprocess.run([sys.executable, "-m", f"medcast.{stage}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout + out.stderr)
    log = outputs[1]
    assert "[3/3] mlp" in log and "selected" in log and "Warning" not in log
    noise = [line for line in log.splitlines()
             if re.match(r"[EWI]\d{4} ", line) or "absl::InitializeLog" in line]
    assert noise == []
    assert os.path.getsize(tmp_path / "reports/history.csv") > 40  # the MLP really trained


@pytest.mark.slow
def test_scores_do_not_depend_on_the_number_of_processes(data):
    """Folds and candidates run in worker processes; each task is seeded and cloned, so one
    process and two give the same numbers (the MLP included: one TensorFlow thread each)."""
    from dataclasses import replace

    p, schema, X, y = data
    names = ["mlp", "ridge", "random_forest", "svr"]
    hps = {n: p.models[n].defaults for n in names}
    runs = [list(evaluate_candidates(names, hps, replace(p.cv, n_jobs=jobs), schema, X, y))
            for jobs in (1, 2)]
    for one, two in zip(*runs, strict=True):
        assert one.model == two.model
        assert (one.folds, one.train, one.history) == (two.folds, two.train, two.history)
    assert [r.model for r in runs[1]] == names  # listed order, though the MLP ran first


def test_large_data_policy_is_recorded_in_the_leaderboard(data):
    """Thresholds below the table's rows engage the policy: what ran, and why, per candidate;
    a skipped candidate is listed last without scores and is never selected."""
    from dataclasses import replace

    from medcast.params import LargeConfig

    p, schema, X, y = data
    policy = LargeConfig(max_rows={"svr": 50}, skip_above={"knn": 100}, hist_boosting_above=100,
                         mlp_max_steps=2)
    cfg = replace(p.cv, n_jobs=1, large=policy)
    names = ["svr", "knn", "gradient_boosting", "mlp", "ridge"]
    results = list(evaluate_candidates(names, {n: p.models[n].defaults for n in names}, cfg,
                                       schema, X, y))
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
    assert "knn" not in eligible(results)
    with pytest.raises(ConfigError, match="skipped"):
        check_forced(results, "knn")


def _halving(p, above, **changes):
    from dataclasses import replace

    return replace(p.cv, n_jobs=1, **changes,
                   large=replace(p.cv.large, halving_above=above, halving_keep=2))


HALVING_NAMES = ["linear", "knn", "decision_tree", "ridge", "lasso"]


def test_successive_halving_confirms_only_the_best_on_all_rows(data, caplog):
    """Above halving_above rows every candidate is ranked on a stratified subsample; the best
    halving_keep then run exactly as without halving (same folds, same scores), the others are
    listed as screened, after them, without train/test scores, and are never selected. Each
    rung logs its candidates as they finish."""
    import math
    from dataclasses import replace

    from medcast.models.large import stratified_subsample

    p, schema, X, y = data
    hps = {n: p.models[n].defaults for n in HALVING_NAMES}
    with caplog.at_level("INFO", logger="medcast.train"):
        halved = {r.model: r for r in evaluate_candidates(HALVING_NAMES, hps, _halving(p, 60),
                                                          schema, X, y)}
    for m in HALVING_NAMES:
        assert f"{m:<17} screened on 60 of 120 rows: CV RMSE" in caplog.text
    assert sum("confirmed on all 120 rows: CV RMSE" in line
               for line in caplog.text.splitlines()) == 2
    full = {r.model: r for r in evaluate_candidates(HALVING_NAMES, hps, replace(p.cv, n_jobs=1),
                                                    schema, X, y)}
    sub = stratified_subsample(y, 60, p.cv.seed)
    on_sub = {r.model: r.cv["rmse"] for r in evaluate_candidates(
        HALVING_NAMES, hps, replace(p.cv, n_jobs=1), schema, X.iloc[sub].reset_index(drop=True),
        y.iloc[sub].reset_index(drop=True))}
    best_two = sorted(on_sub, key=on_sub.get)[:2]
    confirmed = [m for m, r in halved.items() if r.fidelity != "screened"]
    assert sorted(confirmed) == sorted(best_two)
    for m in confirmed:
        assert (halved[m].folds, halved[m].train) == (full[m].folds, full[m].train)
        assert "on a stratified 60-row subsample of 120 rows" in halved[m].note
        assert halved[m].note.endswith("confirmed on all rows")
    for m in set(HALVING_NAMES) - set(confirmed):
        r = halved[m]
        assert r.fidelity == "screened" and r.train == {}
        assert r.cv["rmse"] == on_sub[m] and "not in the top 2" in r.note
    assert sorted(eligible(list(halved.values()))) == sorted(confirmed)
    board = leaderboard(list(halved.values()))
    assert list(board["model"][:2]) == sorted(confirmed, key=lambda m: full[m].cv["rmse"])
    assert set(board["fidelity"][2:]) == {"screened"}
    assert all(math.isnan(v) for v in board["train_r2"][2:])
    assert sorted(board["model"]) == sorted(HALVING_NAMES)


def test_a_forced_candidate_is_confirmed_even_if_screened_out(data):
    p, schema, X, y = data
    hps = {n: p.models[n].defaults for n in HALVING_NAMES}
    results = list(evaluate_candidates(HALVING_NAMES, hps, _halving(p, 60), schema, X, y))
    worst = max((r for r in results if r.fidelity == "screened"), key=lambda r: r.cv["rmse"])
    forced = list(evaluate_candidates(HALVING_NAMES, hps, _halving(p, 60), schema, X, y,
                                      forced=worst.model))
    assert sum(r.fidelity != "screened" for r in forced) == 3
    assert next(r for r in forced if r.model == worst.model).train  # ran on all rows


def test_halving_at_or_above_the_tables_rows_changes_nothing(data):
    from dataclasses import replace

    p, schema, X, y = data
    names = ["ridge", "knn"]
    hps = {n: p.models[n].defaults for n in names}
    plain = list(evaluate_candidates(names, hps, replace(p.cv, n_jobs=1), schema, X, y))
    at = list(evaluate_candidates(names, hps, _halving(p, len(X)), schema, X, y))
    assert [(r.folds, r.train, r.fidelity, r.note) for r in plain] == \
           [(r.folds, r.train, r.fidelity, r.note) for r in at]


def test_each_candidate_is_reported_as_it_finishes_and_yielded_in_order(data):
    """on_result hears of every candidate once, as it finishes (in whatever order); the
    generator still yields in the candidates' order."""
    from dataclasses import replace

    p, schema, X, y = data
    names = ["mlp", "ridge", "linear"]
    heard: list[str] = []
    runs = list(evaluate_candidates(names, {n: p.models[n].defaults for n in names},
                                    replace(p.cv, n_jobs=2), schema, X, y,
                                    on_result=lambda r: heard.append(r.model)))
    assert [r.model for r in runs] == names and sorted(heard) == sorted(names)


def test_an_unexportable_candidate_is_excluded_with_the_reason(data, monkeypatch):
    from dataclasses import replace

    from medcast import train
    from medcast.errors import ArtifactError
    from medcast.params import ServingBudget

    def refuse(pipeline, schema, row):
        raise ArtifactError("cannot export Pipeline(… SVR) to ONNX: no converter\nmore")

    monkeypatch.setattr(train, "measure", refuse)
    p, schema, X, y = data
    (r,) = evaluate_candidates(["svr"], {"svr": p.models["svr"].defaults},
                               replace(p.cv, n_jobs=1), schema, X, y,
                               budget=ServingBudget())
    assert r.cost is None and eligible([r]) == []
    assert r.over_budget == ("not exportable to ONNX: cannot export Pipeline(… SVR) to ONNX: "
                             "no converter")


def test_halving_confirms_the_next_best_in_place_of_one_over_the_serving_budget(data,
                                                                              monkeypatch):
    """The subsample's best candidate is over the budget (its graph made 1 GB here): its final
    fit, run first, says so, so it is not cross-validated on all rows; the third best is
    confirmed in its place, so two servable candidates are compared."""
    import re
    from dataclasses import replace

    from medcast import models, train
    from medcast.params import ServingBudget

    p, schema, X, y = data
    hps = {n: p.models[n].defaults for n in HALVING_NAMES}
    plain = list(evaluate_candidates(HALVING_NAMES, hps, _halving(p, 60), schema, X, y,
                                     budget=ServingBudget()))
    plain_by = {r.model: r for r in plain}
    rank = {r.model: int(re.search(r"ranked (\d) of", r.note)[1]) for r in plain}
    first, second, third = sorted(rank, key=rank.get)[:3]
    heavy = models.regressor_class(models.get(first))
    real = train.measure

    def measure(pipeline, schema, row):
        cost = real(pipeline, schema, row)
        is_first = type(pipeline.named_steps["model"].regressor_) is heavy
        return replace(cost, onnx_mb=1e3) if is_first else cost

    monkeypatch.setattr(train, "measure", measure)
    results = {r.model: r for r in evaluate_candidates(HALVING_NAMES, hps, _halving(p, 60),
                                                       schema, X, y, budget=ServingBudget())}
    confirmed = sorted(m for m, r in results.items() if r.fidelity != "screened")
    assert confirmed == sorted([second, third])
    heavy_row = results[first]
    assert heavy_row.over_budget == "ONNX graph 1000 MB > train.serving_budget.max_mb 50"
    assert heavy_row.cost.onnx_mb == 1e3 and heavy_row.train == {}
    assert heavy_row.folds != plain_by[first].folds  # the subsample's, not all rows'
    assert heavy_row.note.endswith("over train.serving_budget when fitted on all rows, so not "
                                   "cross-validated there")
    assert results[third].note.endswith("confirmed on all rows in place of a candidate over "
                                        "train.serving_budget")
    assert sorted(eligible(list(results.values()))) == sorted([second, third])


def test_under_halving_every_candidate_over_the_budget_is_one_error_naming_each(data):
    """Final fits first: none is cross-validated on all rows, and the error is the budget's,
    not "skipped"."""
    from medcast.candidates import choose, fold_table
    from medcast.params import ServingBudget
    from medcast.selection import fold_sizes

    p, schema, X, y = data
    budget = ServingBudget(1e-4, None)
    hps = {n: p.models[n].defaults for n in HALVING_NAMES}
    results = list(evaluate_candidates(["mean", *HALVING_NAMES], {"mean": {}, **hps},
                                       _halving(p, 60), schema, X, y, budget=budget))
    assert {r.fidelity for r in results if r.model != "mean"} == {"screened"}
    with pytest.raises(ConfigError) as err:
        choose(results, fold_table(results, 5), "best", None, budget, *fold_sizes(120, 5))
    assert "every candidate is over train.serving_budget" in str(err.value)
    for name in HALVING_NAMES:
        assert f"{name}: ONNX graph" in str(err.value)

