from __future__ import annotations

import dataclasses

import pytest

from devtools.factories import insurance_frame
from medcast.datasets import validate
from medcast.errors import ConfigError
from medcast.features import infer_schema, split_xy
from medcast.study import trial_records
from medcast.tune import run_study
from tests.conftest import tiny


def _setup(tmp_path, *overrides):
    p = tiny("dataset=insurance", f"tune.storage=sqlite:///{tmp_path}/optuna.db", *overrides)
    frame = validate(insurance_frame(120, seed=2).astype(str), p.dataset)
    schema = infer_schema(frame, p.dataset)
    return p, schema, *split_xy(frame, schema)


def test_study_is_seeded_and_rerun_replaces_it(tmp_path):
    p, schema, X, y = _setup(tmp_path, "tune.n_trials=6")
    first = run_study(p, "knn", schema, X, y)
    second = run_study(p, "knn", schema, X, y)  # same name: replaced, not appended
    assert len(second.trials) == 6
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert first.best_value == second.best_value
    assert {"n_neighbors", "weights"} == set(second.best_params)
    records = trial_records(second)
    assert all(r["value"] is None or r["state"] == "COMPLETE" for r in records)


def test_model_without_search_space_runs_one_trial(tmp_path):
    p, schema, X, y = _setup(tmp_path)
    assert len(run_study(p, "linear", schema, X, y).trials) == 1


def test_bad_search_space_value_is_a_config_error(tmp_path):
    p, schema, X, y = _setup(tmp_path, "tune.n_trials=8")
    knn = p.models["knn"]
    bad = dataclasses.replace(knn, search_space={**knn.search_space,
                                                 "weights": {"choices": ["uniform", "bogus"]}})
    p = dataclasses.replace(p, models={**p.models, "knn": bad})
    with pytest.raises(ConfigError, match="conf/model/knn.yaml"):
        run_study(p, "knn", schema, X, y)


def test_unreachable_storage_is_a_config_error(tmp_path):
    p, schema, X, y = _setup(tmp_path, "tune.storage=nosuchdb://x")
    with pytest.raises(ConfigError, match="tune.storage: cannot open"):
        run_study(p, "ridge", schema, X, y)


def test_first_trial_scores_the_defaults_that_lie_in_the_space(tmp_path):
    from medcast.tune import default_point

    p, schema, X, y = _setup(tmp_path, "tune.n_trials=3")
    study = run_study(p, "knn", schema, X, y)
    assert study.trials[0].params == {"n_neighbors": 15, "weights": "distance"}  # conf/model/knn.yaml defaults
    space = {"a": {"low": 1, "high": 5}, "b": {"choices": ["x", "y"]}, "c": {"low": 0.1, "high": 1}}
    assert default_point({"a": 9, "b": "y", "c": 0.5, "d": 1}, space) == {"b": "y", "c": 0.5}


def test_storage_passwords_never_reach_messages(tmp_path):
    p, schema, X, y = _setup(tmp_path, "tune.storage='nosuchdb://ann:s3cret@db.example.org/x'")
    with pytest.raises(ConfigError) as info:
        run_study(p, "ridge", schema, X, y)
    assert "s3cret" not in str(info.value) and "ann:***@db.example.org" in str(info.value)


def test_above_halving_above_trials_run_on_the_subsample_and_the_best_are_confirmed(tmp_path):
    """Trials are scored on train's stratified subsample; the best halving_keep completed
    trials are cross-validated again on all rows, and the best of them there wins."""
    from medcast.metrics import cross_validate, summarize
    from medcast.models import large
    from medcast.tune import confirm, screening_set

    p, schema, X, y = _setup(tmp_path, "tune.n_trials=5", "cv.n_jobs=1",
                             "cv.large.halving_above=60")
    X_sub, y_sub = screening_set(p, X, y)
    assert len(X_sub) == 60 and list(y_sub) == list(y.iloc[large.stratified_subsample(y, 60, 42)])
    study = run_study(p, "knn", schema, X, y)
    first = study.trials[0]  # the defaults, scored on the subsample
    on_sub = cross_validate(large.build(large.plan("knn", p.models["knn"].defaults, 60,
                                                   p.cv.large), schema, 42),
                            X_sub, y_sub, 5, 42, repeats=p.cv.repeats)
    assert first.value == summarize(on_sub)["rmse"]
    best, folds, records = confirm(p, "knn", schema, X, y, study)
    done, seen = [], set()
    for t in sorted((t for t in study.trials if t.value is not None), key=lambda t: t.value):
        if str(sorted(t.params.items())) not in seen:  # a point drawn twice is confirmed once
            seen.add(str(sorted(t.params.items())))
            done.append(t)
    # the best two, and the defaults (trial 0) so that tuning never ends worse than them
    expected = done[:2] + ([first] if first not in done[:2] else [])
    assert [r["number"] for r in records] == [t.number for t in expected]
    assert [r["screening_value"] for r in records] == [t.value for t in expected]
    on_all = {t.number: cross_validate(
        large.build(large.plan("knn", {**p.models["knn"].defaults, **t.params}, len(X),
                               p.cv.large), schema, 42), X, y, 5, 42, repeats=p.cv.repeats)
              for t in expected}
    assert [r["value"] for r in records] == [summarize(on_all[t.number])["rmse"]
                                             for t in expected]
    assert first.number in [r["number"] for r in records]
    assert best.number == min(records, key=lambda r: r["value"])["number"]
    assert folds == on_all[best.number]


def test_below_halving_above_the_best_trial_is_the_studys(tmp_path):
    from medcast.tune import confirm, screening_set

    p, schema, X, y = _setup(tmp_path, "tune.n_trials=3", "cv.n_jobs=1")
    assert screening_set(p, X, y)[0] is X
    study = run_study(p, "knn", schema, X, y)
    best, folds, records = confirm(p, "knn", schema, X, y, study)
    assert (best.number, folds, records) == (study.best_trial.number,
                                             study.best_trial.user_attrs["folds"], [])


def test_a_point_drawn_twice_is_confirmed_once(tmp_path):
    from medcast.tune import confirm

    p, schema, X, y = _setup(tmp_path, "tune.n_trials=3", "cv.n_jobs=1",
                             "cv.large.halving_above=60")
    one_point = {"n_neighbors": {"choices": [5]}, "weights": {"choices": ["uniform"]}}
    p = dataclasses.replace(p, models={**p.models, "knn": dataclasses.replace(
        p.models["knn"], search_space=one_point)})
    study = run_study(p, "knn", schema, X, y)
    assert len({str(t.params) for t in study.trials}) == 1 and len(study.trials) == 3
    best, _, records = confirm(p, "knn", schema, X, y, study)
    assert [r["number"] for r in records] == [best.number] == [0]


@pytest.fixture(scope="module")
def forests(tmp_path_factory):
    """A forest study whose space is stumps or trees 12 deep, the defaults stumps: the best
    trial (deep trees) and its refit, with both refits' ONNX sizes."""
    from medcast.metrics import summarize
    from medcast.serving_cost import measure
    from medcast.tune import Tuned, refit

    tmp_path = tmp_path_factory.mktemp("forests")
    p, schema, X, y = _setup(tmp_path, "tune.n_trials=4", "cv.n_jobs=1")
    forest = dataclasses.replace(p.models["random_forest"],
                                 defaults={**p.models["random_forest"].defaults,
                                           "n_estimators": 20, "max_depth": 1},
                                 search_space={"max_depth": {"choices": [1, 12]}})
    p = dataclasses.replace(p, models={**p.models, "random_forest": forest})
    study = run_study(p, "random_forest", schema, X, y)
    best = study.best_trial
    assert best.params == {"max_depth": 12} and best.number != 0
    hp = {**forest.defaults, **best.params}
    tuned = Tuned(best, best.user_attrs["folds"], hp, *refit(p, "random_forest", hp, schema, X, y,
                                                             0))
    small = refit(p, "random_forest", forest.defaults, schema, X, y, 0)[0]
    sizes = [measure(m, schema, X.iloc[:1]).onnx_mb for m in (small, tuned.estimator)]
    assert sizes[0] < sizes[1] and summarize(tuned.folds)["rmse"] == best.value
    return p, schema, X, y, study, tuned, sizes


def _budget(p, max_mb):
    from medcast.params import ServingBudget

    return dataclasses.replace(p, train=dataclasses.replace(
        p.train, serving_budget=ServingBudget(max_mb, None)))


def test_a_tuned_model_over_the_serving_budget_is_replaced_by_the_defaults(forests, caplog):
    from medcast.tune import within_budget

    p, schema, X, y, study, tuned, (small, large_mb) = forests
    limit = round((small + large_mb) / 2, 4)
    with caplog.at_level("WARNING", logger="medcast.tune"):
        kept, record = within_budget(_budget(p, limit), "random_forest", schema, X, y, study,
                                     tuned, 0)
    assert kept.trial.number == 0 and kept.hp["max_depth"] == 1
    assert kept.folds == study.trials[0].user_attrs["folds"]  # the defaults' own, all rows
    assert record == {"serving_budget": {
        "best_trial": tuned.trial.number, "kept": 0,
        "over": record["serving_budget"]["over"]}}
    assert record["serving_budget"]["over"].endswith(f"train.serving_budget.max_mb {limit:g}")
    assert f"the best trial {tuned.trial.number} is over train.serving_budget" in caplog.text


def test_a_tuned_model_within_the_budget_or_without_one_is_kept(forests):
    from medcast.tune import within_budget

    p, schema, X, y, study, tuned, (_, large_mb) = forests
    for budget in (_budget(p, large_mb * 2), _budget(p, None)):
        assert within_budget(budget, "random_forest", schema, X, y, study, tuned, 0) == (tuned, {})


def test_a_forced_model_over_the_budget_with_its_defaults_is_kept_with_a_warning(forests, caplog):
    from medcast.tune import within_budget

    p, schema, X, y, study, tuned, (small, _) = forests
    with caplog.at_level("WARNING", logger="medcast.tune"):
        kept = within_budget(_budget(p, small / 2), "random_forest", schema, X, y, study, tuned, 0)
    assert kept == (tuned, {}) and "as are the defaults" in caplog.text


def test_the_defaults_folds_on_all_rows_when_trials_ran_on_a_subsample(tmp_path):
    from medcast.metrics import cross_validate
    from medcast.models import large
    from medcast.tune import defaults_folds

    p, schema, X, y = _setup(tmp_path, "tune.n_trials=3", "cv.n_jobs=1",
                             "cv.large.halving_above=60")
    study = run_study(p, "knn", schema, X, y)
    first, folds = defaults_folds(p, "knn", schema, X, y, study)
    plan = large.plan("knn", p.models["knn"].defaults, len(X), p.cv.large, p.cv.repeats)
    assert first.number == 0 and folds == cross_validate(
        large.build(plan, schema, 42), X, y, 5, 42, repeats=plan.repeats)
    assert folds != first.user_attrs["folds"]  # the subsample's were not reused


def test_without_the_defaults_trial_the_budget_fallback_is_a_clear_error(tmp_path):
    """The defaults' trial always runs first and is never pruned; if a worker failed it anyway,
    the fallback for a tuned model over the budget says so instead of a StopIteration."""
    import optuna

    from medcast.errors import ArtifactError
    from medcast.study import TICKET
    from medcast.tune import defaults_folds

    p, schema, X, y = _setup(tmp_path)
    study = optuna.create_study(study_name="s")
    study.enqueue_trial({}, user_attrs={TICKET: 0})

    def fails(trial):
        raise ValueError("a worker's fit failed")

    study.optimize(fails, n_trials=1, catch=(ValueError,))
    assert study.trials[0].state.name == "FAIL"
    with pytest.raises(ArtifactError, match=r"study s: the defaults' trial \(the first\) did not "
                                            "complete"):
        defaults_folds(p, "knn", schema, X, y, study)
