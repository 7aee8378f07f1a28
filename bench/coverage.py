"""Calibration of medcast's conformal intervals (medcast.intervals) over repeated 80/20 splits:
prints test coverage (mean, spread) of the chosen, adaptive and constant variants, mean widths,
and coverage per smoker group on insurance.

    python -m bench.coverage [--seeds 20] [--level 0.9] [--insurance PATH]

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
CV_FOLDS = 5
DEFAULT_SEED = 42


def load(name: str, path: Path | None) -> tuple[Any, pd.DataFrame]:
    ds = dataset_config(name, ROOT)
    raw = load_raw(ds, ROOT) if path is None else pd.read_csv(path, dtype=str,
                                                               keep_default_na=False)
    return ds, validate(raw, ds)


def one_split(ds: Any, frame: pd.DataFrame, model: str, defaults: dict[str, Any], seed: int,
              level: float) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=0.2, random_state=seed)
    schema = infer_schema(train, ds)
    X, y = split_xy(train, schema)
    Xt, yt = split_xy(test, schema)
    estimator = models.build(model, defaults, schema, seed)
    oof = intervals.oof_predictions(estimator, X, y, CV_FOLDS, seed)
    predicted = estimator.fit(X, y).predict(Xt)
    variants = intervals.fit_both(X, y, oof, schema, level, CV_FOLDS, seed)
    chosen = intervals.choose(variants)
    out: dict[str, Any] = {"method": chosen.method}
    for label, variant in (("chosen", chosen), *variants.items()):
        lower, upper = variant.bounds(Xt, predicted)
        groups = intervals.coverage_by_group(yt, lower, upper, Xt, predicted, schema)
        out[label] = {"coverage": float(intervals.covered(yt, lower, upper).mean()),
                      "width": float(np.mean(upper - lower)),
                      "groups": {k: v["coverage"] for k, v in groups.items()},
                      "group_widths": {k: v["mean_width"] for k, v in groups.items()}}
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="splits (seeds 42, 0, 1, …)")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--insurance", help="path of the real insurance.csv")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the served model call's cost with and without intervals")
    args = ap.parse_args()
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
        runs = [one_split(ds, frame, model, configs[model].defaults, s, level) for s in seeds]
        seconds = time.perf_counter() - start
        default = runs[0]
        print(f"\n{name} ({model}, conf defaults; {len(seeds)} splits 80/20, {seconds:.0f} s), "
              f"level {level:.0%}")
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
        checks += [(f"{name}: default-split coverage within ±5 points of {level:.0%}",
                    default_gap <= 0.05),
                   (f"{name}: mean coverage over {len(runs)} splits within ±2 points",
                    mean_gap <= 0.02)]
        if name == "insurance":
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
    print()
    for label, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}")


if __name__ == "__main__":
    main()
