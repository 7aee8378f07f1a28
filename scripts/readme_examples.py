"""The README's examples, from real runs, rewritten between `<!-- readme_examples:NAME -->` and
`<!-- /readme_examples:NAME -->` (only the blocks the README has):

* `predict`: serves the pipeline's current model (models/model.onnx + models/model.json,
  md5-checked against dvc.lock, as `make serve` does), sends the first patient of the test
  split to POST /predict (the request id is random, so it is shown as "…");
* `init` and `init-yaml`: `python -m medcast.datasets init` on a generated messy clinical table
  (devtools.factories), its summary and the conf/dataset/trial.yaml it writes;
* `exp-show` and `exp-diff`: `dvc exp show` in a 120-column terminal and `dvc exp diff` of the
  first two experiments, as they are in the repository (run the README's two-dataset queue
  first).

    python -m scripts.readme_examples [--repo .] [--readme README.md] [--check]

--check writes nothing and exits 1 when the README shows something else than the model answers.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devtools.service import ROOT, ServiceError, running, service_env

INIT = ["exports/trial.csv", "--name", "trial", "--target", "outcome", "--id", "record id"]
PORT = 8000  # what the README shows: `make serve`'s default MEDCAST_PORT


def example_request(card: dict[str, Any], test_split: Path) -> dict[str, Any]:
    """The first row of the test split, with the card's features in the card's order (null
    where a nullable feature is missing)."""
    import pandas as pd

    row = pd.read_parquet(test_split, columns=[f["name"] for f in card["features"]]).iloc[0]
    request: dict[str, Any] = {}
    for feature in card["features"]:
        value = row[feature["name"]]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            request[feature["name"]] = None
        elif feature["type"] == "category":
            request[feature["name"]] = str(value)
        else:
            value = float(value)
            request[feature["name"]] = int(value) if value.is_integer() else value
    return request


def block(request: dict[str, Any], answer: dict[str, Any]) -> str:
    """The README's fenced example, between the markers."""
    shown = {**answer, "request_id": "…"}  # random per request: not shown
    return "\n".join([
        "```bash",
        f"make serve &             # http://127.0.0.1:{PORT}; another port: MEDCAST_PORT=8001 make serve",
        f"curl -s localhost:{PORT}/predict -H 'content-type: application/json' \\",
        f"  -d '{json.dumps(request, ensure_ascii=False)}'",
        f"# {json.dumps(shown, ensure_ascii=False, separators=(',', ':'))}",
        "```",
    ])


def init_blocks() -> dict[str, str]:
    """`init` on a generated table: the command with its summary, and the YAML it writes."""
    from devtools.factories import write_messy_clinical_csv

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "conf", root / "conf")
        write_messy_clinical_csv(root / "exports/trial.csv", n=300, seed=0)
        out = subprocess.run([sys.executable, "-m", "medcast.datasets", "init", *INIT], cwd=root,
                             capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"init failed: {out.stderr}")
        drafted = (root / "conf/dataset/trial.yaml").read_text()
    shown = " ".join(f'"{a}"' if " " in a else a for a in INIT)
    return {"init": f"```text\n$ python -m medcast.datasets init {shown}\n{out.stdout}```",
            "init-yaml": f"```yaml\n{drafted}```"}


def experiment_blocks(repo: Path) -> dict[str, str]:
    """`dvc exp show` as a 120-column terminal shows it, and `dvc exp diff` of the first two
    experiments of HEAD. In a terminal DVC renders the whole table and pipes it through
    `less -RS` (long lines chopped, scroll sideways): the first 120 columns of each line."""
    import os

    def dvc(*args: str) -> str:
        out = subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=repo,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "COLUMNS": "120"})
        if out.returncode:
            raise RuntimeError(f"dvc {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    names = dvc("exp", "list", "--name-only").split()
    if len(names) < 2:
        raise RuntimeError("fewer than two experiments on HEAD: run the README's queue first "
                           "(dvc exp run --queue -S 'dataset=diabetes,insurance'; dvc queue start)")
    a, b = sorted(names)[:2]
    show = "\n".join(line[:120].rstrip() for line in dvc("exp", "show").splitlines())
    # reports/intervals.json's per-group rows (dozens) are left out of the README: the header,
    # metrics.json's rows and the params
    diff = "\n".join(line for line in dvc("exp", "diff", a, b).splitlines()
                      if not line.startswith("reports/intervals.json"))
    return {"exp-show": f"```text\n$ dvc exp show\n{show.rstrip()}\n```",
            "exp-diff": f"```text\n$ dvc exp diff {a} {b}    # reports/intervals.json's rows left out\n"
                        f"{diff.rstrip()}\n```"}


def replace_block(readme: str, name: str, new: str) -> str:
    begin, end = f"<!-- readme_examples:{name} -->", f"<!-- /readme_examples:{name} -->"
    start, stop = readme.find(begin), readme.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no block between {begin} and {end}")
    return readme[:start + len(begin)] + "\n" + new + "\n" + readme[stop:]


def has_block(readme: str, name: str) -> bool:
    return f"<!-- readme_examples:{name} -->" in readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository whose model to serve")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)

    readme = args.readme.read_text()
    blocks: dict[str, str] = {}
    if has_block(readme, "predict"):
        try:
            blocks["predict"] = predict_block(args.repo.resolve())
        except (RuntimeError, ServiceError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if has_block(readme, "init"):
        blocks.update(init_blocks())
    if has_block(readme, "exp-show"):
        try:
            blocks.update(experiment_blocks(args.repo.resolve()))
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    updated = readme
    try:
        for name, text in blocks.items():
            updated = replace_block(updated, name, text)
    except ValueError as exc:
        print(f"error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if updated != readme:
            print(f"{args.readme}: the example is stale; run `python -m scripts.readme_examples`",
                  file=sys.stderr)
            return 1
        print(f"{args.readme}: the examples match ({', '.join(blocks)})")
        return 0
    args.readme.write_text(updated)
    print(f"{args.readme}: examples written ({', '.join(blocks)})")
    return 0


def predict_block(repo: Path) -> str:
    """Serve `repo`'s model, send the first test patient; raises RuntimeError/ServiceError."""
    import httpx

    needed = [repo / p for p in ("dvc.lock", "models/model.onnx", "models/model.json",
                                 "data/processed/test.parquet")]
    if missing := [str(p) for p in needed if not p.exists()]:
        raise RuntimeError(f"{', '.join(missing)} missing: run `make repro` first")
    card = json.loads((repo / "models/model.json").read_text())
    request = example_request(card, repo / "data/processed/test.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        env = service_env(MEDCAST_REPO=str(repo), MEDCAST_LOG_LEVEL="WARNING",
                          MEDCAST_DATABASE_URL=f"sqlite:///{Path(tmp) / 'log.db'}")
        with running(env, cwd=Path(tmp), log=Path(tmp) / "serve.log", timeout=60) as service:
            answer = httpx.post(f"{service.url}/predict", json=request, timeout=10)
            service.stop()
    if answer.status_code != 200:
        raise RuntimeError(f"POST /predict answered {answer.status_code}: {answer.text}")
    return block(request, answer.json())


if __name__ == "__main__":
    sys.exit(main())
