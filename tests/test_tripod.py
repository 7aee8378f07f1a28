"""medcast.tripod: every TRIPOD+AI item appears once, in order; what the run knows is filled
from it, what only the author knows is marked for the author."""

from __future__ import annotations

import re

from medcast.tripod import RunFacts, tripod_markdown
from tests.conftest import tiny
from tests.support.study import CARD, METRICS, TUNING, VALIDATION, no_signal

ITEMS = ["1", "2", "3a", "3b", "3c", "4", "5a", "5b", "6a", "6b", "6c", "7", "8a", "8b", "8c",
         "9a", "9b", "9c", "10", "11", "12a", "12b", "12c", "12d", "12e", "12f", "12g", "13",
         "14", "15", "16", "17", "18a", "18b", "18c", "18d", "18e", "18f", "19", "20a", "20b",
         "20c", "21", "22", "23a", "23b", "24", "25", "26", "27a", "27b", "27c"]


def facts(validation=VALIDATION, groups=()):
    from devtools.factories import insurance_frame
    from medcast.datasets import validate
    from medcast.features import infer_schema

    p = tiny("dataset=insurance")
    schema = infer_schema(validate(insurance_frame(50, seed=0).astype(str), p.dataset), p.dataset)
    return RunFacts(dataset=p.dataset, schema=schema, raw="`data/raw/x.csv` (md5 abc)",
                    design={"folds": 5, "repeats": 2, "test_size": 0.2,
                            "interval_groups": list(groups)},
                    metrics=METRICS, validation=validation, tuning=TUNING, card=CARD,
                    n_candidates=13)


def rows(text: str) -> dict[str, str]:
    return {m[1]: m[3] for m in re.finditer(r"^\| (\w+) \| ([^|]+) \| (.*) \|$", text, re.M)}


def test_every_item_once_in_the_checklists_order():
    text = tripod_markdown(facts())
    found = re.findall(r"^\| (\w+) \|", text, re.M)[1:]  # after the header
    assert found == ITEMS


def test_the_run_fills_what_it_knows_and_marks_the_rest_for_the_author():
    by = rows(tripod_markdown(facts()))
    assert "md5 abc" in by["5a"] and "**AUTHOR**" in by["5b"]
    assert "Required 245, available 1070: enough" in by["10"]
    assert "5-fold cross-validation repeated 2 times" in by["12a"]
    assert "0" * 32 in by["12g"] and "0" * 32 in by["22"]
    assert "r2 0.75 (95% CI 0.7 to 0.8)" in by["23a"]
    assert "`smoker`" in by["14"] and "marginal conformal" in by["14"]
    assert all("**AUTHOR**" in by[i] for i in ("17", "18a", "19", "27c"))
    assert "**AUTHOR**" not in by["12e"] and "**AUTHOR**" not in by["21"]


def test_no_signal_and_mondrian_intervals_reach_the_checklist():
    by = rows(tripod_markdown(facts(no_signal(VALIDATION), groups=["smoker"])))
    assert by["25"].startswith("No candidate beats the mean")
    assert "group-conditional (Mondrian) intervals for ['smoker']" in by["14"]


def test_candidates_over_the_serving_budget_are_named_in_model_building():
    from dataclasses import replace

    from medcast.plot import not_servable
    from tests.support.study import board

    table = board()
    table["serving"] = ["within budget", float("nan")]  # as read from the CSV
    assert not_servable(table) == ()
    assert "serving budget" not in rows(tripod_markdown(facts()))["12c"]
    table.loc[1, "serving"] = "ONNX graph 111 MB > train.serving_budget.max_mb 50"
    named = not_servable(table)
    assert named == ("mean (ONNX graph 111 MB > train.serving_budget.max_mb 50)",)
    by = rows(tripod_markdown(replace(facts(), not_servable=named)))
    assert "over the serving budget (ONNX graph size, single-row latency): mean (ONNX" in by["12c"]
    assert not_servable(board()) == ()  # a leaderboard from before the budget
