"""Stage plot: figures in reports/figures/ (CV scores per candidate, calibration, prediction
instability, feature importance, the Shapley contributions of the served explanations
(reports/explanations.csv, written by export), MLP training history, predicted vs actual,
residuals, prediction intervals and their coverage per group), reports/report.md, the study at
a glance (medcast.report), and reports/tripod.md, the TRIPOD+AI checklist filled from the run
(medcast.tripod)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcast.card import md5_hex
from medcast.config import load_params
from medcast.datasets.spec import DatasetConfig
from medcast.errors import cli
from medcast.features import FeatureSchema, encoded_name, load_schema, read_split
from medcast.metrics import capped
from medcast.models import NULL_MODEL
from medcast.models.io import find_mlp, load_meta, load_model
from medcast.report import importance_lines, report_markdown
from medcast.tripod import RunFacts, tripod_markdown

log = logging.getLogger("medcast.plot")

PNG_META = {"Software": None}  # no version stamp: identical inputs give identical files


def permutation_table(estimator: Any, X: pd.DataFrame, y: pd.Series, repeats: int,
                      seed: int, max_rows: int | None = None) -> pd.DataFrame:
    """Drop in test R² when each raw feature is shuffled (works for any model; Breiman 2001),
    on every row of X, or with `max_rows` below its length on a seeded sample of that many rows
    (drawn without replacement, kept in order; the baseline R² and every shuffle on the same
    rows, which scikit-learn's own `max_samples` does not do: it scores the baseline on all)."""
    from sklearn.inspection import permutation_importance

    keep = capped(np.arange(len(X)), max_rows, seed)
    X, y = X.iloc[keep], y.iloc[keep]
    result = permutation_importance(estimator, X, y, n_repeats=repeats, random_state=seed,
                                    scoring="r2", n_jobs=1)
    table = pd.DataFrame({"feature": X.columns, "importance": result.importances_mean,
                          "std": result.importances_std})
    return table.sort_values("importance", ascending=False).round(6).reset_index(drop=True)


def mlp_weight_table(estimator: Any) -> pd.DataFrame | None:
    """Mean |weight| of the MLP's first layer per encoded input (the seed's importance view)."""
    mlp = find_mlp(estimator)
    if mlp is None:
        return None
    names = [encoded_name(n) for n in estimator.named_steps["preprocess"].get_feature_names_out()]
    weights = mlp.first_layer_weights().mean(axis=1)
    return (pd.DataFrame({"feature": names, "mean_abs_weight": weights})
            .sort_values("mean_abs_weight", ascending=False).reset_index(drop=True))


def _figure(ncols: int = 1, width: float = 6.5) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, 4.5), squeeze=False)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)


def plot_importance(perm: pd.DataFrame, weights: pd.DataFrame | None, model: str,
                    path: Path) -> None:
    fig, axes = _figure(2 if weights is not None else 1)
    ax = axes[0][0]
    order = perm.iloc[::-1]
    ax.barh(order["feature"], order["importance"], xerr=order["std"], color="tab:blue")
    ax.set_xlabel("mean drop in test R² when shuffled")
    ax.set_title(f"Permutation importance — {model}")
    if weights is not None:
        ax = axes[0][1]
        order = weights.iloc[::-1]
        ax.barh(order["feature"], order["mean_abs_weight"], color="tab:orange")
        ax.set_xlabel("mean |weight| of first Dense layer (standardised inputs)")
        ax.set_title("MLP first-layer weights")
    _save(fig, path)


def shap_explanation(table: pd.DataFrame, schema: FeatureSchema) -> Any:
    """reports/explanations.csv as a shap.Explanation: the contributions, the base values, and
    the feature values that colour the dots. A number is its value; a category of two levels
    its level's position in the card's list (0 low, 1 high: the label names them); a missing
    value is NaN (grey). A category of more levels keeps its text, which shap draws grey (an
    order of its levels would be made up)."""
    import numpy as np
    import shap

    from medcast.explain import VALUE_PREFIX

    data = np.full((len(table), len(schema.names)), np.nan, dtype=object)
    labels = []
    for j, f in enumerate(schema.features):
        values = table[VALUE_PREFIX + f.name]
        if f.type != "category":
            data[:, j] = pd.to_numeric(values, errors="coerce")
            labels.append(f.name)
            continue
        levels = [str(c) for c in f.categories or ()]
        if len(levels) == 2:
            data[:, j] = [levels.index(str(v)) if str(v) in levels else np.nan
                          for v in values.where(values.notna(), None)]
            labels.append(f"{f.name} ({levels[0]} < {levels[1]})")
        else:
            data[:, j] = values.fillna("").astype(str).to_numpy(dtype=object)
            labels.append(f"{f.name} (category)")
    return shap.Explanation(values=table[schema.names].to_numpy(dtype=np.float64),
                            base_values=table["base_value"].to_numpy(dtype=np.float64),
                            data=data, feature_names=labels)


def plot_shap_summary(table: pd.DataFrame, schema: FeatureSchema, model: str, method: str,
                      seed: int, path: Path) -> None:
    """shap's beeswarm of the served explanations: one dot per explained test row and feature,
    at its contribution, coloured by the feature's value. The beeswarm jitters with NumPy's
    global generator: seeded here and restored after, so the same table gives the same PNG."""
    import numpy as np
    import shap

    fig, axes = _figure(1, width=7.5)
    fig.set_size_inches(7.5, 1.5 + 0.45 * len(schema.names))
    ax = axes[0][0]
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        shap.plots.beeswarm(shap_explanation(table, schema), max_display=len(schema.names),
                            ax=ax, show=False, plot_size=None, s=12)
    finally:
        np.random.set_state(state)
    ax.set_xlabel(f"contribution to the predicted {schema.target}\n(0: the background's mean "
                  "prediction)", fontsize=10)
    ax.set_title(f"Shapley contributions, {len(table)} test rows — {model} ({method})")
    _save(fig, path)


def plot_history(history: pd.DataFrame, target: str, path: Path) -> None:
    fig, axes = _figure(2)
    left, right = axes[0]
    if history.empty:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no MLP among train.candidates", ha="center", va="center")
            ax.set_axis_off()
    else:
        left.plot(history["epoch"], history["mae"], label="train MAE")
        left.plot(history["epoch"], history["val_mae"], label="validation MAE")
        left.set_xlabel("epoch")
        left.set_ylabel(f"MAE ({target})")
        left.set_title("MLP training history (defaults, whole training set)")
        left.legend()
        right.plot(history["epoch"], history["learning_rate"], color="tab:green")
        right.set_yscale("log")
        right.set_xlabel("epoch")
        right.set_ylabel("learning rate")
        right.set_title("ReduceLROnPlateau schedule")
    _save(fig, path)


def plot_predicted_vs_actual(pred: pd.DataFrame, target: str, r2: float, path: Path) -> None:
    fig, axes = _figure(1, width=5.5)
    ax = axes[0][0]
    ax.scatter(pred["actual"], pred["predicted"], s=14, alpha=0.7)
    lo = float(min(pred["actual"].min(), pred["predicted"].min()))
    hi = float(max(pred["actual"].max(), pred["predicted"].max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect prediction")
    ax.set_xlabel(f"actual {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(f"Test set: predicted vs actual (R² = {r2:.3f})")
    ax.legend()
    _save(fig, path)


def plot_residuals(pred: pd.DataFrame, target: str, path: Path) -> None:
    fig, axes = _figure(2)
    left, right = axes[0]
    left.scatter(pred["predicted"], pred["residual"], s=14, alpha=0.7)
    left.axhline(0, color="k", lw=1, ls="--")
    left.set_xlabel(f"predicted {target}")
    left.set_ylabel("residual (actual − predicted)")
    left.set_title("Residuals vs prediction")
    right.hist(pred["residual"], bins=30, color="tab:purple")
    right.set_xlabel("residual")
    right.set_ylabel("test rows")
    right.set_title("Residual distribution")
    _save(fig, path)


def plot_intervals(pred: pd.DataFrame, groups: dict[str, dict[str, float]], level: float,
                   target: str, path: Path) -> None:
    """Left: each test row's interval sorted by prediction, the actual value marked (red where
    it falls outside). Right: coverage per group against the nominal level."""
    import numpy as np

    fig, axes = _figure(2)
    left, right = axes[0]
    rows = pred.sort_values("predicted").reset_index(drop=True)
    x = np.arange(len(rows))
    inside = (rows["lower"] <= rows["actual"]) & (rows["actual"] <= rows["upper"])
    left.vlines(x, rows["lower"], rows["upper"], color="tab:blue", alpha=0.35, lw=2,
                label=f"{level:.0%} interval")
    left.plot(x, rows["predicted"], color="tab:blue", lw=1, label="prediction")
    left.scatter(x[inside], rows["actual"][inside], s=10, color="k", label="actual (inside)")
    left.scatter(x[~inside], rows["actual"][~inside], s=14, color="tab:red",
                 label="actual (outside)")
    left.set_xlabel("test rows, sorted by prediction")
    left.set_ylabel(target)
    left.set_title(f"Prediction intervals: {inside.mean():.1%} of test rows covered")
    left.legend(fontsize=8)
    names = list(groups)[::-1]
    coverage = [groups[n]["coverage"] for n in names]
    right.barh([f"{n} (n={groups[n]['n']})" for n in names], coverage, color="tab:green")
    right.axvline(level, color="k", ls="--", lw=1, label=f"nominal {level:.0%}")
    right.set_xlim(0, 1)
    right.set_xlabel("share of test rows inside their interval")
    right.set_title("Coverage per group (test set)")
    right.legend(fontsize=8)
    _save(fig, path)


def plot_cv_scores(folds: pd.DataFrame, path: Path) -> None:
    order = folds.groupby("model")["rmse"].mean().sort_values().index.tolist()
    fig, axes = _figure(1, width=8)
    ax = axes[0][0]
    ax.boxplot([folds.loc[folds["model"] == m, "rmse"] for m in order],
               orientation="horizontal")
    ax.set_yticks(range(1, len(order) + 1), order)
    ax.invert_yaxis()
    ax.set_xlabel("validation RMSE per CV fold")
    ax.set_title("Candidates, best first (train stage)")
    _save(fig, path)


def plot_calibration(deciles: pd.DataFrame, curve: pd.DataFrame, slope: float, target: str,
                     path: Path) -> None:
    """Observed against predicted on the test set: decile means with 95 % intervals, a LOWESS
    curve, the diagonal of perfect calibration (medcast.calibration)."""
    fig, axes = _figure(1, width=5.5)
    ax = axes[0][0]
    lo = float(min(deciles["mean_predicted"].min(), deciles["observed_low"].min()))
    hi = float(max(deciles["mean_predicted"].max(), deciles["observed_high"].max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect calibration")
    err = [deciles["mean_observed"] - deciles["observed_low"],
           deciles["observed_high"] - deciles["mean_observed"]]
    ax.errorbar(deciles["mean_predicted"], deciles["mean_observed"], yerr=err, fmt="o",
                color="tab:blue", capsize=3, label="deciles of prediction (95% CI)")
    ax.plot(curve["predicted"], curve["observed"], color="tab:orange", label="LOWESS")
    ax.set_xlabel(f"predicted {target}")
    ax.set_ylabel(f"observed {target}")
    ax.set_title(f"Calibration (test set): slope {slope:.2f}")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_instability(frame: pd.DataFrame, mape: float, target: str, path: Path) -> None:
    """Riley & Collins' instability plot: each test patient's prediction by the model against
    the bootstrap models' predictions for them."""
    fig, axes = _figure(1, width=5.5)
    ax = axes[0][0]
    ax.scatter(frame["predicted"], frame["bootstrap"], s=3, alpha=0.15, color="tab:purple")
    lo = float(min(frame["predicted"].min(), frame["bootstrap"].min()))
    hi = float(max(frame["predicted"].max(), frame["bootstrap"].max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"prediction of the model ({target})")
    ax.set_ylabel("predictions of the bootstrap models")
    ax.set_title(f"Prediction instability (MAPE {mape:.3g})")
    _save(fig, path)


def raw_source(dataset: DatasetConfig) -> str:
    """The raw table for the TRIPOD report: its file and md5 (DVC's hash), or the bundled
    table and the library version that ships it."""

    if dataset.source.format == "sklearn":
        import sklearn

        return f"scikit-learn {sklearn.__version__}'s bundled '{dataset.source.path}' table"
    path = Path(dataset.raw)
    md5 = md5_hex(path.read_bytes())
    return f"`{path}` (md5 {md5})"


FIGURES = {
    "Candidates: validation RMSE per fold": "cv_scores.png",
    "Calibration (test set)": "calibration.png",
    "Prediction instability (bootstrap models)": "instability.png",
    "Feature importance": "feature_importance.png",
    "Shapley contributions of the served explanations (test rows)": "shap_summary.png",
    "MLP training history": "training_history.png",
    "Predicted vs actual (test set)": "predicted_vs_actual.png",
    "Residuals (test set)": "residuals.png",
    "Prediction intervals and coverage per group (test set)": "intervals.png",
}


def _figures(params: Any, schema: FeatureSchema, metrics: dict[str, Any],
             validation: dict[str, Any], figures: Path) -> None:
    paths, cfg = params.paths, params.plot
    X, y = read_split(Path(paths.test), schema)
    model_dir = Path(paths.model_dir)
    meta, estimator = load_meta(model_dir), load_model(model_dir)
    pred = pd.read_csv(paths.predictions)
    perm = permutation_table(estimator, X, y, cfg.permutation_repeats, cfg.seed,
                             cfg.permutation_max_rows)
    if len(X) > cfg.permutation_max_rows:
        log.info("permutation importance on a seeded sample of %d of the %d test rows "
                 "(plot.permutation_max_rows)", cfg.permutation_max_rows, len(X))
    perm.to_csv(paths.importance, index=False)
    plot_importance(perm, mlp_weight_table(estimator), meta["model"],
                    figures / "feature_importance.png")
    card = json.loads(Path(paths.card).read_text())
    plot_shap_summary(pd.read_csv(paths.explanations), schema, meta["model"],
                      card["explainer"]["method"], cfg.seed, figures / "shap_summary.png")
    plot_history(pd.read_csv(paths.history), schema.target, figures / "training_history.png")
    plot_predicted_vs_actual(pred, schema.target, metrics["test.r2"],
                             figures / "predicted_vs_actual.png")
    plot_residuals(pred, schema.target, figures / "residuals.png")
    plot_cv_scores(pd.read_csv(paths.cv_scores), figures / "cv_scores.png")
    intervals = json.loads(Path(paths.intervals).read_text())
    plot_intervals(pred, intervals["coverage_by_group"], metrics["interval.level"], schema.target,
                   figures / "intervals.png")
    plot_calibration(pd.read_csv(paths.calibration), pd.read_csv(paths.calibration_curve),
                     validation["calibration"]["test"]["slope"], schema.target,
                     figures / "calibration.png")
    plot_instability(pd.read_csv(paths.instability), validation["stability"]["mape"],
                     schema.target, figures / "instability.png")


def not_servable(board: pd.DataFrame) -> tuple[str, ...]:
    """"model (reason)" of each leaderboard row over train.serving_budget."""
    if "serving" not in board:
        return ()
    over = board[board["serving"].fillna("").ne("") & board["serving"].ne("within budget")]
    return tuple(f"{m} ({why})" for m, why in zip(over["model"], over["serving"], strict=True))


def permuted_rows(n_test: int, max_rows: int) -> tuple[int, int] | None:
    """(rows in the one seeded sample the whole permutation importance is scored on, test rows)
    when it samples (n_test above plot.permutation_max_rows), else None."""
    return (max_rows, n_test) if n_test > max_rows else None


@cli
def main() -> None:
    params = load_params()
    paths = params.paths
    schema = load_schema(Path(paths.schema))
    metrics = json.loads(Path(paths.metrics).read_text())
    validation = json.loads(Path(paths.validation).read_text())
    figures = Path(paths.figures)
    figures.mkdir(parents=True, exist_ok=True)
    _figures(params, schema, metrics, validation, figures)

    reports = Path(paths.report).parent
    rel = {t: str((figures / f).relative_to(reports)) if figures.is_relative_to(reports)
           else str(figures / f) for t, f in FIGURES.items()}
    board = pd.read_csv(paths.leaderboard_csv)
    tuning = json.loads(Path(paths.tuning).read_text())
    cv = params.cv
    card = json.loads(Path(paths.card).read_text())
    Path(paths.report).write_text(report_markdown(
        schema, metrics, board, tuning, rel, json.loads(Path(paths.intervals).read_text()),
        validation, f"{cv.folds}-fold × {cv.repeats}",
        importance_lines(pd.read_csv(paths.importance), pd.read_csv(paths.explanations),
                         card.get("explainer"), schema.target,
                         permuted_rows(int(metrics["n_test"]), params.plot.permutation_max_rows))))
    facts = RunFacts(
        dataset=params.dataset, schema=schema, raw=raw_source(params.dataset),
        design={"folds": cv.folds, "repeats": cv.repeats,
                "test_size": params.preprocess.test_size,
                "interval_groups": list(getattr(params.evaluate, "interval_groups", []))},
        metrics=metrics, validation=validation, tuning=tuning,
        card=card,
        n_candidates=int((board["model"] != NULL_MODEL).sum()),
        not_servable=not_servable(board))
    Path(paths.tripod).write_text(tripod_markdown(facts))
    log.info("figures in %s, report in %s, TRIPOD+AI checklist in %s", figures, paths.report,
             paths.tripod)
    if not validation["signal"]["signal"]:
        log.warning("%s", validation["signal"]["message"])


if __name__ == "__main__":
    main()
