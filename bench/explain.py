"""Benchmark of per-patient explanations (`POST /predict?explain=true`, serve/explain.py) over
loopback: latency at one connection with and without `explain`, interleaved in rounds (the
medians are compared), and what one explanation evaluates.

Serves the workspace's model (`--model-dir`, its md5s in ./dvc.lock, as `make serve` does) in
one worker process with a SQLite log in a temp dir, and sends varied valid patients
(bench.serve.bodies_from_card) from a second process at 1 connection.

    python -m bench.explain [--model-dir models] [--seconds 3] [--rounds 3]

Whether `explain=false` costs anything more than before is `python -m bench.serve --against
REV`'s question (REV: a revision without explanations): both services, same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.serve import ROOT, bodies_from_card, run_load
from devtools.service import service_env, start
from medcast import shapley

TARGETS = {"explain_p50_ms": 5.0, "explain_p99_ms": 15.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    card = json.loads((ROOT / args.model_dir / "model.json").read_text())
    explainer = card.get("explainer")
    if explainer is None:
        print(f"{args.model_dir}/model.json has no explainer: run `make repro` first")
        return 1
    m = len(card["features"])
    n_bg = len(explainer["background"])
    plan = shapley.plan(m, explainer["coalitions"], explainer["seed"], n_bg)
    print(f"{card['dataset']} {card['model']}: {m} features, {plan.method}, {n_bg} background "
          f"rows, {plan.rows(n_bg):,} graph rows per explanation")
    bodies = bodies_from_card(card, 64)
    with tempfile.TemporaryDirectory() as tmp:
        env = service_env(base=None, MEDCAST_MODEL_DIR=args.model_dir, MEDCAST_WORKERS="1",
                          MEDCAST_RATE_LIMIT="off",
                          MEDCAST_DATABASE_URL=f"sqlite:///{Path(tmp) / 'log.db'}")
        service = start(env, cwd=ROOT, log=Path(tmp) / "serve.log", timeout=60)
        try:
            results: dict[str, list[dict[str, float]]] = {"plain": [], "explain": []}
            for _ in range(args.rounds):
                for name, path in (("plain", "/predict"), ("explain", "/predict?explain=true")):
                    out = run_load(service.port, 1, args.seconds, "raw", path, bodies)
                    bad = {k: v for k, v in out["statuses"].items() if k != 200}
                    if bad:
                        print(f"{path}: non-200 answers {bad}; see {service.log}")
                        return 1
                    results[name].append(out)
        finally:
            service.stop()
    print(f"{'1 connection':<24}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}   (median of "
          f"{args.rounds} rounds of {args.seconds:g} s)")
    summary = {}
    for name, runs in results.items():
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        rps = statistics.median(r["n"] / r["elapsed"] for r in runs)
        summary[name] = (p50, p99)
        print(f"{'/predict' + ('?explain=true' if name == 'explain' else ''):<24}"
              f"{p50:>9.2f}{p99:>9.2f}{rps:>9.0f}")
    p50, p99 = summary["explain"]
    print(f"explain p50 {p50:.2f} ms (target ≤ {TARGETS['explain_p50_ms']:g}), p99 {p99:.2f} ms "
          f"(target ≤ {TARGETS['explain_p99_ms']:g}); an explanation adds "
          f"{p50 - summary['plain'][0]:.2f} ms at the median")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
