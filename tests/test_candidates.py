"""medcast.candidates: which candidates can be selected, the selection among them within
train.serving_budget, and the leaderboard written from their results."""

from __future__ import annotations

import pytest

from medcast.candidates import choose, eligible, fold_table, leaderboard
from medcast.errors import ConfigError
from medcast.train import evaluate_candidate, evaluate_candidates
from tests.support.study import train_rows


@pytest.fixture(scope="module")
def data():
    """A tiny insurance study's training rows (tests.support.study.train_rows)."""
    return train_rows()


def test_leaderboard_ranks_by_cv_rmse(data):
    p, schema, X, y = data
    results = [evaluate_candidate(n, p.models[n].defaults, p.cv, schema, X, y)
               for n in ("linear", "decision_tree")]
    best = min(results, key=lambda r: r.cv["rmse"])
    board = leaderboard(results)
    assert list(board["rank"]) == [1, 2]
    assert board.iloc[0]["model"] == best.model


def test_leaderboard_holds_no_wall_clock_time(data):
    """A DVC output must be the same bytes for the same inputs: fit times and serving latencies
    go to MLflow only."""
    from medcast.params import ServingBudget

    p, schema, X, y = data

    def run():
        return list(evaluate_candidates(["ridge"], {"ridge": {}}, p.cv, schema, X, y,
                                        budget=ServingBudget()))

    results = run()
    assert results[0].seconds > 0 and results[0].cost.ms > 0  # measured (logged to MLflow), ...
    board = leaderboard(results)  # ... but not written
    assert not [c for c in board.columns if "second" in c or "time" in c or c.endswith("_ms")]
    assert board.loc[0, "serving"] == "within budget" and board.loc[0, "onnx_mb"] > 0
    twin = leaderboard(run())
    assert board.to_csv(index=False) == twin.to_csv(index=False)


SERVED = ["random_forest", "svr"]  # on these 120 rows the forest is better and its graph larger


@pytest.fixture(scope="module")
def costed(data):
    """The two candidates' results with a serving budget between their graphs' sizes, and
    their sizes (measured under a budget that excludes nothing)."""
    from dataclasses import replace

    from medcast.params import ServingBudget

    p, schema, X, y = data
    names = ["mean", *SERVED]
    hps = {n: {} if n == "mean" else p.models[n].defaults for n in names}
    cfg = replace(p.cv, n_jobs=1)

    def run(budget):
        return list(evaluate_candidates(names, hps, cfg, schema, X, y, budget=budget))

    sizes = {r.model: r.cost.onnx_mb for r in run(ServingBudget(1e3, None)) if r.cost}
    assert sizes["random_forest"] > sizes["svr"] and set(sizes) == set(SERVED)  # mean: never
    limit = round((sizes["random_forest"] + sizes["svr"]) / 2, 4)
    return run(ServingBudget(limit, None)), limit, run(ServingBudget(None, None))


def _choose(results, rule="best", forced=None, budget=None):
    from medcast.params import ServingBudget
    from medcast.selection import fold_sizes

    return choose(results, fold_table(results, 5), rule, forced, budget or ServingBudget(),
                  *fold_sizes(120, 5))


def test_a_candidate_over_the_serving_budget_is_not_selected_and_the_leaderboard_says_why(
        costed):
    """The forest has the better CV RMSE; with its graph over max_mb the rule picks the SVR, the
    forest's row says why (the size, never a time) and its comparison is with the SVR."""
    results, limit, unbudgeted = costed
    assert _choose(unbudgeted).model == "random_forest"  # without a budget
    chosen = _choose(results)
    assert chosen.model == "svr" and eligible(results) == ["svr"]
    board = leaderboard(results, chosen).set_index("model")
    forest = board.loc["random_forest"]
    assert forest["serving"] == (f"ONNX graph {forest['onnx_mb']:g} MB > "
                                 f"train.serving_budget.max_mb {limit:g}")
    assert board.loc["svr", "serving"] == "within budget" and board.loc["svr", "onnx_mb"] < limit
    assert board.loc["mean", "serving"] == ""  # the null model is never measured
    assert forest["vs_best"] < 0 and not forest["selected"]  # better than the best servable
    plain = leaderboard(unbudgeted, _choose(unbudgeted)).set_index("model")
    assert set(plain["serving"]) == {""} and plain["onnx_mb"].isna().all()


def test_every_candidate_over_the_serving_budget_stops_train_naming_each_reason(data):
    from dataclasses import replace

    from medcast.params import ServingBudget

    p, schema, X, y = data
    budget = ServingBudget(1e-4, None)
    results = list(evaluate_candidates(["mean", *SERVED], {"mean": {}, **{
        n: p.models[n].defaults for n in SERVED}}, replace(p.cv, n_jobs=1), schema, X, y,
        budget=budget))
    with pytest.raises(ConfigError) as err:
        _choose(results, budget=budget)
    message = str(err.value)
    assert "every candidate is over train.serving_budget" in message
    for name in SERVED:
        assert f"{name}: ONNX graph" in message and "max_mb 0.0001" in message
    assert "set a limit to null" in message
    forced = _choose(results, forced="svr", budget=budget)  # forcing one still selects it
    assert forced.model == "svr" and "over the serving budget" in forced.reason


def test_a_forced_candidate_over_the_serving_budget_is_selected_with_a_warning(costed, caplog):
    results, limit, _ = costed
    with caplog.at_level("WARNING", logger="medcast.train"):
        chosen = _choose(results, forced="random_forest")
    over = next(r.over_budget for r in results if r.model == "random_forest")
    assert chosen.model == "random_forest"
    assert chosen.reason == f"forced by train.select (over the serving budget: {over})"
    assert f"train.select forces random_forest, over the serving budget: {over}" in caplog.text
    assert "vs_best" in chosen.comparisons["random_forest"]  # compared with the best servable
