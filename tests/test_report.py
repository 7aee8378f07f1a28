"""medcast.report: report.md says first when no candidate beats the mean, shows how sure the
result is, and never shows a non-selected candidate's test scores."""

from __future__ import annotations

from medcast.report import candidate_table, report_markdown
from tests.conftest import tiny
from tests.support.study import METRICS, TUNING, VALIDATION, board, no_signal


def _schema():
    from devtools.factories import insurance_frame
    from medcast.datasets import validate
    from medcast.features import infer_schema

    p = tiny("dataset=insurance")
    return infer_schema(validate(insurance_frame(50, seed=0).astype(str), p.dataset), p.dataset)


def test_no_signal_is_the_first_thing_the_report_says():
    text = report_markdown(_schema(), METRICS, board(), TUNING, {}, None, no_signal(VALIDATION))
    first = text.splitlines()[2]
    assert first.startswith("> **No candidate beats the mean:** the best, ridge, does not")
    with_signal = report_markdown(_schema(), METRICS, board(), TUNING, {}, None, VALIDATION)
    assert "No candidate beats the mean" not in with_signal


def test_how_sure_shows_the_bootstrap_table_calibration_sample_size_and_subgroups():
    text = report_markdown(_schema(), METRICS, board(), TUNING, {"Calibration": "figures/c.png"},
                           None, VALIDATION, "5-fold × 2")
    for needle in ("## How sure is the result?", "200 bootstrap refits", "| R² | 0.75 | 0.02 | 0.73 |",
                   "optimism-corrected slope 0.970", "MAPE", "at least 245 training rows; 1070 "
                   "available — enough", "| smoker=yes | 58 |", "5-fold × 2 CV",
                   "| test | 0.750 [0.700, 0.800] |", "![Calibration](figures/c.png)"):
        assert needle in text, needle


def test_the_candidate_table_has_differences_and_no_test_scores():
    table = candidate_table(board())
    head = table.splitlines()[0]
    assert "test" not in head.lower()
    assert "**ridge** (selected)" in table
    assert "+5900 [+5300, +6500]" in table  # the mean against the best


def test_the_candidate_table_says_why_a_candidate_over_the_serving_budget_is_not_selectable():
    import pandas as pd

    table = board()
    table["serving"] = ["within budget", ""]
    extra = {**table.iloc[0].to_dict(), "rank": 3, "model": "knn", "selected": False,
             "fidelity_note": "fitted on 50000 of 1070400 rows",
             "serving": "ONNX graph 111 MB > train.serving_budget.max_mb 50"}
    text = candidate_table(pd.concat([table, pd.DataFrame([extra])], ignore_index=True))
    knn = next(line for line in text.splitlines() if "| knn |" in line)
    assert knn.endswith("| fitted on 50000 of 1070400 rows; not selectable: ONNX graph 111 MB > "
                        "train.serving_budget.max_mb 50 |")
    assert "within budget" not in text  # a servable candidate's row carries no note


def test_which_features_matter_sets_mean_shap_beside_permutation_importance_and_says_why():
    import pandas as pd

    from medcast.report import importance_lines

    perm = pd.DataFrame({"feature": ["age", "smoker"], "importance": [0.05, 0.6],
                         "std": [0.01, 0.04]})
    explanations = pd.DataFrame({"age": [1000.0, -3000.0], "smoker": [20000.0, -6000.0],
                                 "base_value": [13000.0] * 2, "prediction": [34000.0, 4000.0],
                                 "value:age": [60, 20], "value:smoker": ["yes", "no"]})
    explainer = {"background": [[1.0, "no"]] * 50, "method": "exact", "coalitions": 150,
                 "seed": 42, "check": {"reference": "shap 0.51.0 ExactExplainer, "
                                                    "maskers.Independent", "n": 2,
                                       "max_abs_diff": 1e-6, "tolerance": 12.1}}
    lines = importance_lines(perm, explanations, explainer, "charges")
    text = "\n".join(lines)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == "| feature | mean absolute contribution (charges) | permutation importance (Δ test R²) |"
    assert table[1].startswith("| smoker | 1.3e+04 | 0.6 ± 0.04 |")  # largest contribution first
    for needle in ("drop in the test R²", "population-level", "individual predictions",
                   "background's mean prediction", "Lundberg & Lee", "Janzing",
                   "Štrumbelj & Kononenko", "against 50 training rows", "exactly, over every "
                   "coalition", "largest difference 1e-06 (limit 12.1"):
        assert needle in text, needle
    report = report_markdown(_schema(), METRICS, board(), TUNING, {}, None, VALIDATION,
                             importance=lines)
    assert report.index("## Which features matter") < report.index("## Figures")
    assert "seeded sample" not in text  # every test row
    sampled = "\n".join(importance_lines(perm, explanations, explainer, "charges",
                                         sampled=(10000, 267600)))
    assert ("permutation importance was computed on a seeded sample of 10,000 of the 267,600 "
            "test rows (plot.permutation_max_rows)") in sampled


def test_intervals_calibrated_within_a_sample_state_the_budget_rule():
    intervals = {"method": "adaptive", "training_worst_group_gap": {"adaptive": 0.01},
                 "coverage_by_group": {"smoker=yes": {"n": 58, "coverage": 0.9,
                                                      "mean_width": 1.0}}}
    metrics = {**METRICS, "interval.level": 0.9, "interval.coverage": 0.91,
               "interval.mean_width": 1.0}
    plain = report_markdown(_schema(), metrics, board(), TUNING, {}, intervals, VALIDATION)
    assert "## Prediction intervals" in plain and "interval_max_rows" not in plain
    rule = "calibrated within a seeded sample of 100,000 of the 1,070,400 training rows " \
           "(evaluate.interval_max_rows): …"
    sampled = report_markdown(_schema(), metrics, board(), TUNING, {}, {
        **intervals, "calibration_sample": {"rows": 100000, "training_rows": 1070400,
                                            "rule": rule}}, VALIDATION)
    assert f"Budget rule: {rule}." in sampled
