"""Stage plot: figures in reports/figures/ (feature importance, MLP training history, predicted
vs actual, residuals, prediction intervals and their coverage per group, CV scores per
candidate) and reports/report.md, the study at a glance."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from medcast.config import load_params
from medcast.errors import cli
from medcast.features import FeatureSchema, encoded_name, load_schema, read_split
from medcast.metrics import split_scores
from medcast.models.io import find_mlp, load_meta, load_model

log = logging.getLogger("medcast.plot")

PNG_META = {"Software": None}  # no version stamp: identical inputs give identical files


def permutation_table(estimator: Any, X: pd.DataFrame, y: pd.Series, repeats: int,
                      seed: int) -> pd.DataFrame:
    """Drop in test R² when each raw feature is shuffled (works for any model)."""
    from sklearn.inspection import permutation_importance

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


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def report_markdown(schema: FeatureSchema, metrics: dict[str, Any], board: pd.DataFrame,
                    tuning: dict[str, Any], figures: dict[str, str],
                    intervals: dict[str, Any] | None = None) -> str:
    """reports/report.md: leaderboard, tuned model, figures (paths relative to reports/)."""
    cols = ["rank", "model", "cv_r2", "cv_r2_std", "cv_rmse", "cv_rmse_std",
            "cv_mae", "test_r2", "test_rmse"]
    scores = split_scores(metrics)
    test, cv = scores["test"], scores["cv"]
    lines = [
        f"# medcast study: {schema.dataset} → {schema.target}",
        "",
        f"Target: {schema.target_unit}. Train rows {metrics['n_train']}, test rows "
        f"{metrics['n_test']}; rows without a target dropped (never imputed): "
        f"{metrics.get('n_dropped_missing_target', 0)}.",
        "",
        *_missing_lines(schema),
        "## Candidates (train stage, 5-fold CV on the training set, default hyperparameters)",
        "",
        markdown_table(board[[c for c in cols if c in board.columns]]),
        "",
        f"## Tuned model: `{metrics['model']}`",
        "",
        f"Optuna: {tuning['n_trials']} trials, best #{tuning['best_trial']}, "
        f"parameters `{json.dumps(tuning['best_params'])}`.",
        "",
        "| split | R² | RMSE | MAE | interval coverage | mean interval width |",
        "|---|---|---|---|---|---|",
        f"| CV (mean ± std) | {cv['r2']:.3f} ± {cv['r2_std']:.3f} | "
        f"{cv['rmse']:.4g} ± {cv['rmse_std']:.3g} | {cv['mae']:.4g} ± "
        f"{cv['mae_std']:.3g} | | |",
        f"| test | {test['r2']:.3f} | {test['rmse']:.4g} | {test['mae']:.4g} | "
        f"{_coverage(metrics)} |",
        "",
        *_interval_lines(metrics, intervals),
        "## Figures",
        "",
    ]
    for title, rel in figures.items():
        lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    return "\n".join(lines)


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


@cli
def main() -> None:
    params = load_params()
    paths, cfg = params.paths, params.plot
    schema = load_schema(Path(paths.schema))
    X, y = read_split(Path(paths.test), schema)
    model_dir = Path(paths.model_dir)
    meta = load_meta(model_dir)
    estimator = load_model(model_dir)
    metrics = json.loads(Path(paths.metrics).read_text())
    pred = pd.read_csv(paths.predictions)
    figures = Path(paths.figures)
    figures.mkdir(parents=True, exist_ok=True)

    perm = permutation_table(estimator, X, y, cfg.permutation_repeats, cfg.seed)
    perm.to_csv(paths.importance, index=False)
    plot_importance(perm, mlp_weight_table(estimator), meta["model"],
                    figures / "feature_importance.png")
    plot_history(pd.read_csv(paths.history), schema.target, figures / "training_history.png")
    plot_predicted_vs_actual(pred, schema.target, metrics["test.r2"],
                             figures / "predicted_vs_actual.png")
    plot_residuals(pred, schema.target, figures / "residuals.png")
    plot_cv_scores(pd.read_csv(paths.cv_scores), figures / "cv_scores.png")
    intervals = json.loads(Path(paths.intervals).read_text())
    plot_intervals(pred, intervals["coverage_by_group"], metrics["interval.level"], schema.target,
                   figures / "intervals.png")

    reports = Path(paths.report).parent
    titles = {
        "Candidates: validation RMSE per fold": "cv_scores.png",
        "Feature importance": "feature_importance.png",
        "MLP training history": "training_history.png",
        "Predicted vs actual (test set)": "predicted_vs_actual.png",
        "Residuals (test set)": "residuals.png",
        "Prediction intervals and coverage per group (test set)": "intervals.png",
    }
    rel = {t: str((figures / f).relative_to(reports)) if figures.is_relative_to(reports)
           else str(figures / f) for t, f in titles.items()}
    board = pd.read_csv(paths.leaderboard_csv)
    tuning = json.loads(Path(paths.tuning).read_text())
    Path(paths.report).write_text(report_markdown(schema, metrics, board, tuning, rel,
                                                  intervals))
    log.info("figures in %s, report in %s", figures, paths.report)


if __name__ == "__main__":
    main()
