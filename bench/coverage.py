"""Calibration of medcast's conformal intervals (medcast.intervals) over repeated 80/20 splits:
prints test coverage (mean, spread) of the chosen, adaptive and constant variants, mean widths,
and coverage per smoker group on insurance; with --groups, also Mondrian (group-conditional)
intervals (evaluate.interval_groups; medcast.mondrian) beside the pooled ones, per group level.

    python -m bench.coverage [--seeds 20] [--level 0.9] [--insurance PATH]
                             [--groups [DATASET=]COL[,COL] ...]

Issue 23's table (each group's mean coverage within 3 points of nominal, 20 splits):
    python -m bench.coverage --groups diabetes=sex --groups insurance=smoker --insurance PATH

Cheap models with their conf/model defaults (no tuning): ridge on diabetes, the polynomial
elastic net (insurance's selected candidate) on insurance; 5-fold OOF residuals as in the
`evaluate` stage. The insurance table is read where it lies (never copied).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.quality import find_insurance
from medcast import intervals, models
from medcast.config import load_models
from medcast.datasets import dataset_config, load_raw, validate
from medcast.features import infer_schema, split_xy

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"diabetes": "ridge", "insurance": "poly_elastic_net"}
CV_FOLDS = 20  # evaluate.interval_folds' default
DEFAULT_SEED = 42
# Issue 23: with Mondrian intervals, each group's mean coverage within this of the level.
GROUP_TOLERANCE = 0.03


def load(name: str, path: Path | None) -> tuple[Any, pd.DataFrame]:
    ds = dataset_config(name, ROOT)
    raw = load_raw(ds, ROOT) if path is None else pd.read_csv(path, dtype=str,
                                                               keep_default_na=False)
    return ds, validate(raw, ds)


def one_split(ds: Any, frame: pd.DataFrame, model: str, defaults: dict[str, Any], seed: int,
              level: float, groups: tuple[str, ...] = (), folds: int = CV_FOLDS
              ) -> dict[str, Any]:
    """Test coverage and width of the chosen, adaptive and constant variants (overall, per
    group) on one seeded split; with `groups` also of the Mondrian ones ("mondrian",
    "mondrian adaptive", "mondrian constant"), per cell too."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=0.2, random_state=seed)
    schema = infer_schema(train, ds)
    X, y = split_xy(train, schema)
    Xt, yt = split_xy(test, schema)
    estimator = models.build(model, defaults, schema, seed)
    oof = intervals.oof_predictions(estimator, X, y, folds, seed)
    predicted = estimator.fit(X, y).predict(Xt)
    variants = intervals.fit_both(X, y, oof, schema, level, folds, seed)
    chosen = intervals.choose(variants)
    out: dict[str, Any] = {"method": chosen.method}
    todo = [("chosen", chosen), *variants.items()]
    if groups:
        mondrian = intervals.fit_both(X, y, oof, schema, level, folds, seed, groups)
        out["mondrian method"] = intervals.choose(mondrian).method
        out["cells"] = intervals.choose(mondrian).cells.labels()
        todo += [("mondrian", intervals.choose(mondrian)),
                 *((f"mondrian {k}", v) for k, v in mondrian.items())]
    for label, variant in todo:
        lower, upper = variant.bounds(Xt, predicted)
        by_group = intervals.coverage_by_group(yt, lower, upper, Xt, predicted, schema)
        if groups:  # the same cells for the pooled variants, to set them side by side
            cells = mondrian[variant.method].cells
            by_group |= intervals.coverage_by_cell(cells, yt, lower, upper, Xt)
        out[label] = {"coverage": float(intervals.covered(yt, lower, upper).mean()),
                      "width": float(np.mean(upper - lower)),
                      "groups": {k: v["coverage"] for k, v in by_group.items()},
                      "group_widths": {k: v["mean_width"] for k, v in by_group.items()}}
        out["group_n"] = {k: v["n"] for k, v in by_group.items()}
    if groups:
        out["mondrian constant groups"] = out["mondrian constant"]["groups"]
        out["refit"] = refit_reference(X, y, Xt, yt, estimator, predicted, schema, level, groups)
    return out


def refit_reference(X: pd.DataFrame, y: pd.Series, Xt: pd.DataFrame, yt: pd.Series,
                    estimator: Any, predicted: Any, schema: Any, level: float,
                    groups: tuple[str, ...]) -> dict[str, float]:
    """Test coverage per cell of constant-width Mondrian intervals whose q comes from the
    served (refitted) model's own training residuals instead of OOF ones. Those rows were
    fitted, so this q is too small: the coverage gap to the OOF-calibrated intervals is an upper
    bound on what calibrating on residuals of models fitted on (K−1)/K of the rows adds."""
    own = np.abs(np.asarray(y, dtype=float) - estimator.predict(X))
    q, cells, _ = intervals.calibrate_scores(own, X, schema, groups, level)
    half = cells.table(q)[cells.codes(Xt)]
    pred = np.asarray(predicted, dtype=float)
    by_cell = intervals.coverage_by_cell(cells, yt, pred - half, pred + half, Xt)
    return {k: v["coverage"] for k, v in by_cell.items()}


def serving_cost(repeats: int = 3, calls: int = 2000) -> None:
    """What the interval adds to the served model call: ONNX Runtime on medcast's export of a
    ridge pipeline (generated insurance-like table), one row and a 1,000-row batch, without
    intervals and with adaptive ones (the difficulty subgraph), alternated, median of
    `repeats`."""
    import onnxruntime as ort

    from devtools.factories import insurance_frame
    from devtools.tiny_model import feature_schema
    from medcast.features import typed
    from medcast.onnx.bounds import with_intervals
    from medcast.onnx.contract import INTERVAL_OUTPUTS, OUTPUT_NAME
    from medcast.onnx.export import to_onnx
    from medcast.onnx.runtime import onnx_inputs

    frame = insurance_frame(400, 0)
    schema = feature_schema(frame)
    X, y = typed(frame, schema), frame[schema.target].astype(float)
    pipe = models.build("ridge", {"alpha": 1.0}, schema, 0)
    oof = intervals.oof_predictions(pipe, X, y, CV_FOLDS, 0)
    adaptive = intervals.fit_both(X, y, oof, schema, 0.9, CV_FOLDS, 0)["adaptive"]
    plain = to_onnx(pipe.fit(X, y), schema)
    graphs = {"none": (plain, [OUTPUT_NAME]),
              "adaptive": (with_intervals(plain, adaptive, schema),
                           [OUTPUT_NAME, *INTERVAL_OUTPUTS])}
    one, batch = onnx_inputs(X.head(1), schema), onnx_inputs(X.sample(1000, replace=True,
                                                                     random_state=0), schema)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {kind: (ort.InferenceSession(g.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"]), outputs)
                for kind, (g, outputs) in graphs.items()}
    timings: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for kind, (session, outputs) in sessions.items():
            for label, data, n in (("one row", one, calls), ("1,000 rows", batch, calls // 100)):
                start = time.perf_counter()
                for _ in range(n):
                    session.run(outputs, data)
                timings.setdefault((kind, label), []).append((time.perf_counter() - start) / n)
    print("\nserved model call (ONNX Runtime, 1 thread, ridge exported by medcast, generated "
          f"insurance table; median of {repeats}):")
    for label in ("one row", "1,000 rows"):
        without = statistics.median(timings[("none", label)]) * 1e6
        with_ = statistics.median(timings[("adaptive", label)]) * 1e6
        print(f"  {label:10}  without intervals {without:8.1f} µs   with adaptive intervals "
              f"{with_:8.1f} µs  (+{with_ - without:.1f} µs)")


def spread(values: list[float]) -> str:
    return (f"mean {100 * statistics.mean(values):5.1f} %  sd {100 * statistics.pstdev(values):4.1f}"
            f"  min {100 * min(values):5.1f}  max {100 * max(values):5.1f}")


def report_study(name: str, runs: list[dict[str, Any]], level: float) -> list[tuple[str, bool]]:
    """Today's summary of one dataset's splits (pooled intervals); its checks."""
    default = runs[0]
    print(f"  default split (seed {DEFAULT_SEED}): method {default['method']}, coverage "
          f"{100 * default['chosen']['coverage']:.1f} %, mean width "
          f"adaptive {default['adaptive']['width']:.4g} vs constant "
          f"{default['constant']['width']:.4g}")
    for label in ("chosen", "adaptive", "constant"):
        cover = [r[label]["coverage"] for r in runs]
        width = statistics.mean(r[label]["width"] for r in runs)
        print(f"  {label:9} coverage {spread(cover)}   mean width {width:.4g}")
    methods = [r["method"] for r in runs]
    print(f"  chosen method: adaptive in {methods.count('adaptive')} of {len(runs)} splits")
    default_gap = abs(default["chosen"]["coverage"] - level)
    mean_gap = abs(statistics.mean(r["chosen"]["coverage"] for r in runs) - level)
    checks = [(f"{name}: default-split coverage within ±5 points of {level:.0%}",
               default_gap <= 0.05),
              (f"{name}: mean coverage over {len(runs)} splits within ±2 points",
               mean_gap <= 0.02)]
    if name != "insurance":
        return checks
    for group in ("smoker=no", "smoker=yes"):
        print(f"  {group:10}", end="")
        for label in ("chosen", "adaptive", "constant"):
            values = [r[label]["groups"][group] for r in runs]
            print(f"  {label} mean {100 * statistics.mean(values):5.1f} % "
                  f"(min {100 * min(values):5.1f})", end="")
        print(f"  default split {100 * default['chosen']['groups'][group]:.1f} %")
        widths = {label: statistics.mean(r[label]["group_widths"][group] for r in runs)
                  for label in ("adaptive", "constant")}
        print(f"  {'':10}  mean width adaptive {widths['adaptive']:.4g} vs constant "
              f"{widths['constant']:.4g}")
        checks.append((f"insurance {group}: default-split coverage ≥ 80 %",
                       default["chosen"]["groups"][group] >= 0.8))
    return checks


def group_stats(runs: list[dict[str, Any]], label: str, key: str) -> str:
    """mean, sd, min, max of a cell's test coverage (%) over the splits, and its mean width."""
    cover = [100 * r[label]["groups"][key] for r in runs if key in r[label]["groups"]]
    width = statistics.mean(r[label]["group_widths"][key] for r in runs
                            if key in r[label]["groups"])
    return (f"{statistics.mean(cover):6.1f} {statistics.pstdev(cover):5.1f} {min(cover):6.1f} "
            f"{max(cover):6.1f} {width:9.4g}")


def report_groups(name: str, runs: list[dict[str, Any]], groups: tuple[str, ...],
                  level: float) -> list[tuple[str, bool]]:
    """Issue 23's table: per level (crossed cell) of `groups`, test coverage over the splits,
    pooled and Mondrian intervals side by side (each the variant medcast would choose); a check
    per level that the Mondrian mean coverage is within GROUP_TOLERANCE of the level."""
    keys = list(dict.fromkeys(k for r in runs for k in r["cells"]))
    keys = [k for k in keys if any(k in r["mondrian"]["groups"] for r in runs)]
    methods = [r["mondrian method"] for r in runs]
    print(f"\n  {name}: coverage per group, interval_groups {list(groups)} (Mondrian: adaptive "
          f"chosen in {methods.count('adaptive')} of {len(runs)} splits); coverage in %")
    stats = "  mean    sd    min    max     width"
    print(f"  {'dataset':9} {'group':22} {'test n':>6} | pooled{stats} | Mondrian{stats} | "
          f"target ±{100 * GROUP_TOLERANCE:.0f}")
    checks = []
    for key in keys:
        n = statistics.mean(r["group_n"][key] for r in runs if key in r["group_n"])
        mean = statistics.mean(r["mondrian"]["groups"][key] for r in runs
                               if key in r["mondrian"]["groups"])
        ok = abs(mean - level) <= GROUP_TOLERANCE
        print(f"  {name:9} {key:22} {n:6.1f} |       {group_stats(runs, 'chosen', key)} | "
              f"        {group_stats(runs, 'mondrian', key)} | {'PASS' if ok else 'FAIL'}")
        checks.append((f"{name} {key}: Mondrian mean coverage over {len(runs)} splits within "
                       f"±{100 * GROUP_TOLERANCE:.0f} points of {level:.0%}", ok))
    print("  constant-width Mondrian, mean coverage with q from OOF residuals vs from the served "
          "model's own training residuals (optimistic: the gap is at most what calibrating on "
          "models fitted on (K−1)/K of the rows adds):")
    for key in keys:
        oof, own = (statistics.mean(100 * r[label][key] for r in runs if key in r[label])
                    for label in ("mondrian constant groups", "refit"))
        print(f"    {key:22} {oof:5.1f} % vs {own:5.1f} %")
    return checks


def parse_groups(specs: list[str], names: list[str]) -> dict[str, tuple[str, ...]]:
    """--groups [DATASET=]COL[,COL] (repeatable; without DATASET= for every dataset)."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        dataset, has_name, columns = spec.rpartition("=")
        if has_name and dataset not in MODELS:
            raise SystemExit(f"--groups {spec}: unknown dataset '{dataset}' (known: "
                             f"{', '.join(MODELS)})")
        for name in [dataset] if has_name else names:
            out[name] = tuple(c.strip() for c in columns.split(",") if c.strip())
    for name, columns in out.items():
        ds = dataset_config(name, ROOT)
        categorical = [c for c in ds.features if ds.columns[c].type == "category"]
        wrong = [c for c in columns if c not in categorical]
        if wrong or not columns:
            raise SystemExit(f"--groups: {wrong or 'nothing'} for {name}: name its categorical "
                             f"features ({', '.join(categorical)})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="splits (seeds 42, 0, 1, …)")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--insurance", help="path of the real insurance.csv")
    ap.add_argument("--groups", action="append", default=[], metavar="[DATASET=]COL[,COL]",
                    help="also Mondrian intervals over these categorical features (crossed), "
                         "side by side with pooled ones; repeat per dataset")
    ap.add_argument("--folds", type=int, default=CV_FOLDS,
                    help="folds of the out-of-fold residuals (evaluate.interval_folds)")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the served model call's cost with and without intervals")
    args = ap.parse_args()
    groups = parse_groups(args.groups, list(MODELS))
    serving_cost()
    if args.cost_only:
        return
    configs = load_models(ROOT)
    seeds = [DEFAULT_SEED, *[s for s in range(args.seeds + 1) if s != DEFAULT_SEED]][: args.seeds]
    studies: list[tuple[str, Path | None]] = [("diabetes", None)]
    insurance = find_insurance(args.insurance)
    if insurance:
        studies.append(("insurance", insurance))
    else:
        print("insurance: skipped (no insurance.csv found; pass --insurance PATH)")
    checks: list[tuple[str, bool]] = []
    level = args.level
    for name, path in studies:
        ds, frame = load(name, path)
        model = MODELS[name]
        start = time.perf_counter()
        runs = [one_split(ds, frame, model, configs[model].defaults, s, level,
                          groups.get(name, ()), args.folds) for s in seeds]
        seconds = time.perf_counter() - start
        print(f"\n{name} ({model}, conf defaults; {len(seeds)} splits 80/20, {seconds:.0f} s), "
              f"level {level:.0%}")
        checks += report_study(name, runs, level)
        if name in groups:
            checks += report_groups(name, runs, groups[name], level)
    print()
    for label, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}")


if __name__ == "__main__":
    main()
