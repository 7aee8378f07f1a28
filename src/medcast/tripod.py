"""reports/tripod.md: the TRIPOD+AI checklist (Collins et al., "TRIPOD+AI statement: updated
guidance for reporting clinical prediction models that use regression or machine learning
methods", BMJ 2024;385:e078378) filled from the run, written by the plot stage.

Every item the run knows is filled from its outputs (the dataset description, params.yaml, the
schema, the leaderboard and selection, reports/validation.json, the model card); every item
only the study's author can write (setting, eligibility, ethics, funding, interpretation, …)
is marked `AUTHOR:` with what it asks for. The file is a draft of the reporting, not a claim
that the study is complete. Pure functions: facts in, Markdown out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from medcast.datasets.spec import DatasetConfig
from medcast.features import FeatureSchema

CITATION = "Collins GS et al. TRIPOD+AI statement. BMJ 2024;385:e078378"


@dataclass(frozen=True)
class RunFacts:
    """What the run knows, gathered by the plot stage."""

    dataset: DatasetConfig
    schema: FeatureSchema
    raw: str  # where the table came from: file and md5, or the bundled table and its version
    # The study design from params.yaml: cv folds and repeats, test_size, interval_groups.
    design: dict[str, Any]
    metrics: dict[str, Any]
    validation: dict[str, Any]
    tuning: dict[str, Any]
    card: dict[str, Any]
    n_candidates: int
    # Candidates not selectable because serving them would cost too much (the leaderboard's
    # `serving` reason, train.serving_budget): "model (reason)".
    not_servable: tuple[str, ...] = ()


def _author(what: str) -> str:
    return f"AUTHOR: {what}"


def _items(f: RunFacts) -> list[tuple[str, str, str]]:
    """(item, topic, text) for the 27 TRIPOD+AI items (1 to 27c), in the checklist's order."""
    return [*_opening(f), *_methods(f), *_results(f)]


def _opening(f: RunFacts) -> list[tuple[str, str, str]]:
    """Title, abstract, introduction; data, participants, outcome and predictors (1–9c)."""
    ds, s, m = f.dataset, f.schema, f.metrics
    return [
        ("1", "Title", _author(f"title naming the development of a model predicting "
                               f"{s.target} ({s.target_unit}) in the target population, by "
                               f"{m['model']}")),
        ("2", "Abstract", _author("structured abstract (TRIPOD+AI for Abstracts)")),
        ("3a", "Background", _author("clinical context, rationale, existing models")),
        ("3b", "Target population and intended use", _author(
            "where in the care pathway, for whom, used by whom")),
        ("3c", "Health inequalities", _author("known inequalities between groups")),
        ("4", "Objectives", f"Development and internal validation of a model predicting "
                            f"`{s.target}` from {len(s.features)} predictors."),
        ("5a", "Data source", f"{ds.description or _author('describe the source')} Table: "
                              f"{f.raw}."),
        ("5b", "Dates", _author("start and end of data collection, end of follow-up")),
        ("6a", "Setting", _author("care setting, number and location of centres")),
        ("6b", "Eligibility", _author("inclusion and exclusion criteria")),
        ("6c", "Treatments", _author("treatments received, if relevant")),
        ("7", "Data preparation", "Raw values validated against declared types and ranges "
              "(conf/dataset); rows without an outcome dropped "
              f"({s.n_dropped_missing_target}); preprocessing (imputation, scaling, encoding) "
              "fitted inside every model on training folds only."),
        ("8a", "Outcome", f"`{s.target}`: {s.target_unit}. " + _author(
            "how and when it was assessed")),
        ("8b", "Outcome assessors", _author("qualifications of assessors, if subjective")),
        ("8c", "Blinding of outcome", _author("blinding of outcome assessment")),
        ("9a", "Choice of predictors", ", ".join(f"`{x.name}`" for x in s.features)
         + ". " + _author("why these were chosen")),
        ("9b", "Predictor definitions", "; ".join(
            f"`{x.name}` {x.type}" + (f" ({x.unit})" if x.unit else "") for x in s.features)
         + ". " + _author("how and when measured")),
        ("9c", "Predictor assessors", _author("qualifications of assessors, if subjective")),
    ]


def _methods(f: RunFacts) -> list[tuple[str, str, str]]:
    """Sample size, missing data, analysis, fairness, output, open science (10–19)."""
    s, m, v, d = f.schema, f.metrics, f.validation, f.design
    boot = v["bootstrap"]
    missing = [x for x in s.features if x.nullable]
    groups = sorted({g["feature"] for g in v["subgroups"]})
    return [
        ("10", "Sample size", _sample_size(v["sample_size"])),
        ("11", "Missing data", "Features with missing values: " + (", ".join(
            f"`{x.name}` ({x.missing_rate:.0%} of training rows)" for x in missing) or "none")
         + ". Imputed inside each model (median and missing indicator for numbers, a "
           "'(missing)' level for categories), fitted on training folds only; missing outcomes "
           "dropped, never imputed."),
        ("12a", "Use of the data", f"{m['n_train']} rows for development, {m['n_test']} held "
                f"out for testing (split seeded, test share {d['test_size']}); "
                f"{d['folds']}-fold cross-validation repeated {d['repeats']} times on the "
                "development rows for comparing models and tuning; the test rows used once, "
                "on the selected model."),
        ("12b", "Handling of predictors", "Numeric predictors standardised (splines, "
                "interactions or cut-off indicators where a candidate declares them); "
                "categories one-hot encoded; target standardised inside each model."),
        ("12c", "Model type and building", f"{f.n_candidates} candidate model families and a "
                f"null model (the training mean) compared on the same folds; "
                + (f"not selectable, over the serving budget (ONNX graph size, single-row "
                   f"latency): {'; '.join(f.not_servable)}; " if f.not_servable else "")
                + f"selection rule `{v['selection']['rule']}` ({v['selection']['reason']}); "
                f"the selected "
                f"`{m['model']}` tuned by Optuna ({f.tuning['n_trials']} trial(s)); internal "
                f"validation by {boot['n_boot']} bootstrap refits (Harrell's optimism "
                "correction)."),
        ("12d", "Heterogeneity across clusters", _author("clusters (centres) and how handled")),
        ("12e", "Performance measures", "R², RMSE, MAE; calibration slope and intercept "
                "(observed on predicted) with a decile calibration plot and LOWESS curve; "
                "conformal prediction-interval coverage; paired CV differences with the "
                "corrected resampled t-test (Nadeau & Bengio 2003); prediction instability "
                "(Riley & Collins 2023)."),
        ("12f", "Model updating", "None (development study)."),
        ("12g", "How predictions are computed", "The model and its interval as one ONNX "
                f"graph (`models/model.onnx`, md5 {f.card.get('onnx_md5')}), served over REST."),
        ("13", "Class imbalance", "Not applicable (continuous outcome)."),
        ("14", "Fairness", "Performance and interval coverage reported per level of "
         + (", ".join(f"`{g}`" for g in groups) or "no subgroup column") + "; "
         + (f"group-conditional (Mondrian) intervals for {d['interval_groups']}."
            if d.get("interval_groups") else "marginal conformal intervals.")
         + " " + _author("other fairness considerations")),
        ("15", "Model output", f"A prediction of `{s.target}` in {s.target_unit} with a "
                               f"{m.get('interval.level', 0.9):.0%} prediction interval."),
        ("16", "Training versus evaluation", "Test rows drawn at random from the same table "
               "(internal validation only); " + _author("external evaluation data, if any")),
        ("17", "Ethical approval", _author("ethics committee and consent")),
        ("18a", "Funding", _author("sources of funding and their role")),
        ("18b", "Conflicts of interest", _author("declarations")),
        ("18c", "Protocol", _author("where the protocol can be found")),
        ("18d", "Registration", _author("registry and number")),
        ("18e", "Data sharing", _author("data availability; the table's md5 is in item 5a")),
        ("18f", "Code sharing", "This repository: `dvc repro` rebuilds every number here from "
                                "params.yaml and the data (dvc.lock pins each artifact)."),
        ("19", "Patient and public involvement", _author("involvement")),
    ]


def _results(f: RunFacts) -> list[tuple[str, str, str]]:
    """Participants, model, performance; interpretation and usability (20a–27c)."""
    s, m, v, d = f.schema, f.metrics, f.validation, f.design
    size, boot, test = v["sample_size"], v["bootstrap"], v["test"]
    return [
        ("20a", "Participant flow", f"{m['n_train'] + m['n_test']} rows with an outcome "
                f"({s.n_dropped_missing_target} without one dropped): {m['n_train']} "
                f"development, {m['n_test']} test."),
        ("20b", "Participant characteristics", "Observed ranges per predictor in "
                "data/processed/schema.json and the model card. " + _author(
                    "characteristics overall and by key groups (notebook 01)")),
        ("20c", "Development versus evaluation data", "Same population (random split)."),
        ("21", "Numbers in each analysis", f"Development {m['n_train']} (each CV fold fits on "
               f"about {m['n_train'] * (d['folds'] - 1) // d['folds']}), test {m['n_test']}."),
        ("22", "Full model", f"`{m['model']}` with hyperparameters "
               f"`{json.dumps(f.card.get('params', {}))}`; the fitted pipeline in models/tuned "
               f"and the ONNX graph (md5 {f.card.get('onnx_md5')}) in this repository."),
        ("23a", "Model performance", _performance(test, boot, v)),
        ("23b", "Heterogeneity", _author("across clusters, if examined")),
        ("24", "Model updating results", "None."),
        ("25", "Interpretation", v["signal"]["message"][:1].upper() + v["signal"]["message"][1:]
         + ". " + _author("interpretation against objectives and previous studies")),
        ("26", "Limitations", ("Internal validation only. "
                               + ("" if size["enough"] else "Fewer rows than the sample-size "
                                  "criteria ask for. ")) + _author("other limitations")),
        ("27a", "Poor-quality or missing inputs", "Missing predictor values are imputed as in "
                "training; out-of-range values are refused by the service (422)."),
        ("27b", "User interaction and expertise", _author("who enters inputs, expertise needed")),
        ("27c", "Future research", _author("external validation, next steps")),
    ]


def _sample_size(size: dict[str, Any]) -> str:
    crit = "; ".join(f"{c['criterion']}. {c['name']}: {c['n']}" for c in size["criteria"])
    verdict = "enough" if size["enough"] else "FEWER than required"
    return (f"Riley et al. (BMJ 2020) criteria for a continuous outcome, for "
            f"{size['parameters']} predictor parameters and an anticipated R² of "
            f"{size['anticipated_r2']:.3f} (the cross-validated R²): {crit}. Required "
            f"{size['required']}, available {size['available']}: {verdict}.")


def _performance(test: dict[str, Any], boot: dict[str, Any], v: dict[str, Any]) -> str:
    parts = [f"{k} {t['value']:.4g} (95% CI {t['low']:.4g} to {t['high']:.4g})"
             for k, t in test.items()]
    corrected = boot["table"]["r2"]["corrected"]
    return (f"Test set: {', '.join(parts)}. Optimism-corrected R² {corrected:.3f}; "
            f"calibration slope corrected {v['calibration']['corrected']['slope']:.3f}. "
            f"Per subgroup: report.md. Prediction instability MAPE {v['stability']['mape']:.4g}.")


def tripod_markdown(facts: RunFacts) -> str:
    """reports/tripod.md."""
    lines = [f"# TRIPOD+AI checklist: {facts.schema.dataset} → {facts.schema.target}", "",
             f"Filled from this run ({CITATION}). Items marked **AUTHOR** are for the study's "
             "author: the run cannot know them.", "",
             "| item | topic | reported |", "|---|---|---|"]
    for item, topic, text in _items(facts):
        shown = text.replace("AUTHOR:", "**AUTHOR**:").replace("|", "\\|")
        lines.append(f"| {item} | {topic} | {shown} |")
    return "\n".join(lines) + "\n"
