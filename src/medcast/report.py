"""reports/report.md, the study at a glance, written by the plot stage from the run's outputs:
whether any candidate beats the mean (first, and loud when none does), how sure the result is
(reports/validation.json: medcast.validation), the candidates compared fold by fold, the tuned
model's scores with their intervals, the prediction intervals, which features matter
(permutation importance beside the served explanations' mean |Shapley contribution|), the
figures. Pure functions from the outputs' contents to Markdown."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from medcast.features import FeatureSchema
from medcast.metrics import split_scores

LABELS = {"r2": "R²", "rmse": "RMSE", "mae": "MAE", "cal_slope": "calibration slope",
          "cal_intercept": "calibration intercept"}


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float) and math.isnan(v):
            return ""
        if isinstance(v, float) and abs(v) < 1e-9:
            return "0"  # a least-squares fit's apparent intercept, 1e-14 by rounding
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _ci(low: float | None, high: float | None, digits: str = ".4g") -> str:
    if low is None or high is None:
        return ""
    return f"[{low:{digits}}, {high:{digits}}]"


def signal_lines(validation: dict[str, Any]) -> list[str]:
    """The report's first lines: a warning when no candidate beats the mean."""
    signal = validation["signal"]
    if signal["signal"]:
        return []
    detail = signal["message"].removeprefix("no candidate beats the mean: ")
    return ["> **No candidate beats the mean:** " + detail + ". Its predictions carry no "
            "information about patients beyond the average; they are exported and served only "
            "so that this can be seen.", ""]


def candidate_table(board: pd.DataFrame) -> str:
    """The leaderboard as the report shows it: CV scores and each candidate's paired RMSE
    difference to the best and to the mean, with 95 % intervals; no test scores (the test split
    is used once, on the selected model). The note says what ran (fidelity) and why a candidate
    is not selectable (over train.serving_budget)."""
    rows = []
    for r in board.to_dict(orient="records"):
        if r.get("fidelity") == "skipped":
            rows.append({"rank": r["rank"], "model": r["model"], "CV R²": "", "CV RMSE": "",
                         "Δ RMSE vs best [95% CI]": "", "Δ RMSE vs mean [95% CI]": "",
                         "note": candidate_note(r)})
            continue
        name = f"**{r['model']}** (selected)" if r.get("selected") is True else r["model"]
        rows.append({
            "rank": r["rank"], "model": name, "CV R²": f"{r['cv_r2']:.3f}",
            "CV RMSE": f"{r['cv_rmse']:.4g} ± {r['cv_rmse_std']:.3g}",
            "Δ RMSE vs best [95% CI]": _delta(r, "vs_best"),
            "Δ RMSE vs mean [95% CI]": _delta(r, "vs_null"),
            "note": candidate_note(r),
        })
    return markdown_table(pd.DataFrame(rows))


def candidate_note(row: dict[str, Any]) -> str:
    """A leaderboard row's note: its fidelity_note, and its `serving` reason when it is over
    train.serving_budget (empty cells read from the CSV are NaN)."""
    note, serving = row.get("fidelity_note"), row.get("serving")
    texts = [note] if isinstance(note, str) and note else []
    if isinstance(serving, str) and serving and serving != "within budget":
        texts.append(f"not selectable: {serving}")
    return "; ".join(texts)


def _delta(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:+.4g} {_ci(row[f'{key}_low'], row[f'{key}_high'], '+.4g')}"


def how_sure(validation: dict[str, Any], level: float) -> list[str]:
    """'How sure is the result?': signal, internal validation, calibration, stability, sample
    size and subgroups, each with its method."""
    boot, test = validation["bootstrap"], validation["test"]
    rows = [{"metric": LABELS[m], "apparent": t["apparent"], "optimism": t["optimism"],
             "corrected": t["corrected"], "test": test[m]["value"],
             "test 95% CI": _ci(test[m]["low"], test[m]["high"])}
            for m, t in boot["table"].items()]
    calib = validation["calibration"]
    lines = [
        "## How sure is the result?", "",
        f"**Signal:** {validation['signal']['message']} (paired CV folds, corrected resampled "
        "t-test, Nadeau & Bengio 2003).", "",
        f"**Selection:** Rule `{validation['selection']['rule']}`: "
        f"{validation['selection']['reason']}.", "",
        f"**Internal validation** ({boot['n_boot']} bootstrap refits of the tuned model, "
        "Harrell's optimism correction as `rms::validate`; test intervals from 2,000 bootstrap "
        "resamples of the test rows):", "",
        markdown_table(pd.DataFrame(rows)), "",
        *([f"Budget rule: {boot['rule']}.", ""] if boot.get("rule") else []),
        f"**Calibration** (observed on predicted, test set): slope {calib['test']['slope']:.3f}, "
        f"intercept {calib['test']['intercept']:.4g}, calibration-in-the-large "
        f"{calib['test']['citl']:.4g}; optimism-corrected slope "
        f"{calib['corrected']['slope']:.3f}. A slope below 1 means predictions too extreme "
        "(overfitting), above 1 too timid.", "",
        f"**Stability** (Riley & Collins 2023): the bootstrap models' predictions for a test "
        f"patient differ from the model's by {validation['stability']['mape']:.4g} on average "
        "(MAPE); each patient's 2.5–97.5 % range is in predictions.csv (boot_low, boot_high).", "",
        *sample_size_lines(validation["sample_size"]),
        *subgroup_lines(validation["subgroups"], level),
    ]
    return lines


def sample_size_lines(size: dict[str, Any]) -> list[str]:
    verdict = ("enough" if size["enough"] else
               "**fewer than required**: the model may be overfitted, its "
               "performance estimates imprecise")
    table = pd.DataFrame([{"criterion": f"{c['criterion']}. {c['name']}", "minimum n": c["n"]}
                          for c in size["criteria"]])
    floored = " (floored: the CV R² was lower)" if size["r2_floored"] else ""
    return [f"**Sample size** (Riley et al. 2019/2020, as `pmsampsize`): {size['parameters']} "
            f"predictor parameters fitted, anticipated R² {size['anticipated_r2']:.3f}"
            f"{floored}: at least {size['required']} training rows; {size['available']} "
            f"available — {verdict}.", "", markdown_table(table), ""]


def subgroup_lines(groups: list[dict[str, Any]], level: float) -> list[str]:
    if not groups:
        return []
    rows = [{"group": f"{g['feature']}={g['level']}", "n": g["n"],
             "R² [95% CI]": _point(g, "r2", ".3f"), "RMSE [95% CI]": _point(g, "rmse", ".4g"),
             "mean(observed − predicted)": _point(g, "citl", ".3g"),
             f"{level:.0%} interval coverage": _point(g, "coverage", ".1%")} for g in groups]
    return ["**Subgroups** (test set, 95 % bootstrap intervals within each level):", "",
            markdown_table(pd.DataFrame(rows)), ""]


def _point(g: dict[str, Any], key: str, digits: str) -> str:
    value = g.get(key)
    if value is None:
        return "—"
    return f"{value:{digits}} {_ci(g.get(f'{key}_low'), g.get(f'{key}_high'), digits)}".strip()


def importance_lines(perm: pd.DataFrame, explanations: pd.DataFrame,
                     explainer: dict[str, Any] | None, target: str,
                     sampled: tuple[int, int] | None = None) -> list[str]:
    """'Which features matter': reports/importance.csv's permutation importance beside the mean
    |Shapley contribution| of the served explanations (reports/explanations.csv), largest
    contribution first; how the two differ; the method and its check (the card's
    `explainer`), with its references."""
    from medcast.explain import mean_abs

    shap_mean = mean_abs(explanations)
    perm = perm.set_index("feature")
    rows = [{"feature": name, f"mean absolute contribution ({target})": float(value),
             "permutation importance (Δ test R²)": f"{perm.loc[name, 'importance']:.4g} ± "
                                                   f"{perm.loc[name, 'std']:.2g}"
             if name in perm.index else ""}
            for name, value in shap_mean.items()]
    lines = [
        "## Which features matter", "",
        markdown_table(pd.DataFrame(rows)), "",
        "The two answer different questions. Permutation importance is the drop in the test R² "
        "when a feature's values are shuffled across patients: a population-level measure of "
        "how much the model's accuracy relies on the feature. The mean absolute contribution is the "
        "average size of a feature's Shapley contribution to individual predictions, in the "
        "target's units and relative to the background's mean prediction: how far the feature "
        "moves a patient's prediction, whether or not that makes it more accurate.", "",
    ]
    if sampled is not None:
        lines += [f"The permutation importance was computed on a seeded sample of "
                  f"{sampled[0]:,} of the {sampled[1]:,} test rows (plot.permutation_max_rows).",
                  ""]
    if explainer:
        n = len(explanations)
        method = ("exactly, over every coalition of features" if explainer["method"] == "exact"
                  else "by antithetic permutation sampling (Štrumbelj & Kononenko 2014), each "
                       "contribution with a stated 95 % margin")
        lines += [
            f"The contributions are those the service answers (`POST /predict?explain=true`) "
            f"for {n} test rows: interventional Shapley values (Janzing, Minorics & Blöbaum "
            f"2020) against {len(explainer['background'])} training rows, in the SHAP framework "
            f"of Lundberg & Lee (2017), computed {method}.", "",
        ]
        check = explainer.get("check")
        if check:
            coverage = (f"; {check['margin_coverage']:.1%} of the served contributions within "
                        "their 95 % margin of the exact ones"
                        if check.get("margin_coverage") is not None else "")
            lines += [f"Checked by the export on {check['n']} test rows against "
                      f"{check['reference']} on the native model: largest difference "
                      f"{check['max_abs_diff']:.3g} (limit {check['tolerance']:.3g}, 10⁻³ × "
                      f"the target's standard deviation){coverage}.", ""]
    return [*lines, *REFERENCES, ""]


REFERENCES = [
    "References: Lundberg & Lee 2017, *A unified approach to interpreting model predictions* "
    "(NeurIPS); Janzing, Minorics & Blöbaum 2020, *Feature relevance quantification in "
    "explainable AI: a causal problem* (AISTATS; the interventional value function); Štrumbelj "
    "& Kononenko 2014, *Explaining prediction models and individual predictions with feature "
    "contributions* (Knowledge and Information Systems; permutation sampling); Breiman 2001, "
    "*Random forests* (Machine Learning; permutation importance).",
]


def report_markdown(schema: FeatureSchema, metrics: dict[str, Any], board: pd.DataFrame,
                    tuning: dict[str, Any], figures: dict[str, str],
                    intervals: dict[str, Any] | None = None,
                    validation: dict[str, Any] | None = None, folds: str = "",
                    importance: list[str] | None = None) -> str:
    """reports/report.md (figure paths relative to reports/); `importance`: importance_lines."""
    scores = split_scores(metrics)
    test, cv = scores["test"], scores["cv"]
    level = metrics.get("interval.level", 0.9)
    lines = [
        f"# medcast study: {schema.dataset} → {schema.target}", "",
        *(signal_lines(validation) if validation else []),
        f"Target: {schema.target_unit}. Train rows {metrics['n_train']}, test rows "
        f"{metrics['n_test']}; rows without a target dropped (never imputed): "
        f"{metrics.get('n_dropped_missing_target', 0)}.", "",
        *_missing_lines(schema),
        *(how_sure(validation, level) if validation else []),
        f"## Candidates (train stage, {folds or 'K-fold'} CV on the training set, default "
        "hyperparameters)", "",
        candidate_table(board), "",
        f"## Tuned model: `{metrics['model']}`", "",
        f"Optuna: {tuning['n_trials']} trials, best #{tuning['best_trial']}, "
        f"parameters `{json.dumps(tuning['best_params'])}`.", "",
        "| split | R² | RMSE | MAE | interval coverage | mean interval width |",
        "|---|---|---|---|---|---|",
        f"| CV (mean ± std) | {cv['r2']:.3f} ± {cv['r2_std']:.3f} | "
        f"{cv['rmse']:.4g} ± {cv['rmse_std']:.3g} | {cv['mae']:.4g} ± "
        f"{cv['mae_std']:.3g} | | |",
        f"| test | {_test_cell(test, validation, 'r2', '.3f')} | "
        f"{_test_cell(test, validation, 'rmse', '.4g')} | "
        f"{_test_cell(test, validation, 'mae', '.4g')} | {_coverage(metrics)} |", "",
        *_interval_lines(metrics, intervals),
        *(importance or []),
        "## Figures", "",
    ]
    for title, rel in figures.items():
        lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    return "\n".join(lines)


def _test_cell(test: dict[str, float], validation: dict[str, Any] | None, key: str,
               digits: str) -> str:
    interval = (validation or {}).get("test", {}).get(key)
    ci = f" {_ci(interval['low'], interval['high'], digits)}" if interval else ""
    return f"{test[key]:{digits}}{ci}"


def _coverage(metrics: dict[str, Any]) -> str:
    if "interval.coverage" not in metrics:
        return "— | —"
    return (f"{metrics['interval.coverage']:.1%} (nominal {metrics['interval.level']:.0%}) | "
            f"{metrics['interval.mean_width']:.4g}")


def _interval_lines(metrics: dict[str, Any], intervals: dict[str, Any] | None) -> list[str]:
    """The prediction intervals: method, and coverage per group (reports/intervals.json)."""
    if not intervals or "interval.level" not in metrics:
        return []
    level = metrics["interval.level"]
    gaps = intervals.get("training_worst_group_gap", {})
    table = pd.DataFrame([{"group": name, "test rows": g["n"], "coverage": f"{g['coverage']:.1%}",
                           "mean width": g["mean_width"]}
                          for name, g in intervals["coverage_by_group"].items()])
    return [
        "## Prediction intervals",
        "",
        f"Conformal {level:.0%} intervals from the training split's out-of-fold residuals "
        f"(`{intervals['method']}` width, chosen on the training folds, where the worst "
        "group's coverage was "
        + " and ".join(f"{100 * abs(v):.1f} points from nominal with {k} width"
                       for k, v in gaps.items())
        + f"). For {level:.0%} of new patients the true value should fall inside; measured "
        f"on the test set: {metrics['interval.coverage']:.1%}.",
        "",
        *([f"Budget rule: {intervals['calibration_sample']['rule']}.", ""]
          if "calibration_sample" in intervals else []),
        markdown_table(table),
        "",
    ]


def _missing_lines(schema: FeatureSchema) -> list[str]:
    """Which features may be missing, and how often they are in the training split."""
    nullable = [f for f in schema.features if f.nullable]
    if not nullable:
        return []
    rates = ", ".join(f"`{f.name}` {f.missing_rate:.0%}" for f in nullable)
    return [f"Missing values (imputed inside every model, fitted on training folds only): "
            f"{rates} of training rows.", ""]
