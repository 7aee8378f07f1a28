"""The README's example request and answer, from a real run: serves the pipeline's current model
(models/model.onnx + models/model.json, md5-checked against dvc.lock, as `make serve` does),
sends the first patient of the test split to POST /predict and rewrites the README block
between `<!-- readme_examples:predict -->` and `<!-- /readme_examples:predict -->`. The request
id is random, so it is shown as "…".

    python -m scripts.readme_examples [--repo .] [--readme README.md] [--check]

--check writes nothing and exits 1 when the README shows something else than the model answers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from devtools.service import ROOT, ServiceError, running, service_env

BEGIN = "<!-- readme_examples:predict -->"
END = "<!-- /readme_examples:predict -->"
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
        BEGIN,
        "```bash",
        f"make serve &             # http://127.0.0.1:{PORT}; another port: MEDCAST_PORT=8001 make serve",
        f"curl -s localhost:{PORT}/predict -H 'content-type: application/json' \\",
        f"  -d '{json.dumps(request, ensure_ascii=False)}'",
        f"# {json.dumps(shown, ensure_ascii=False, separators=(',', ':'))}",
        "```",
        END,
    ])


def replace_block(readme: str, new: str) -> str:
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no block between {BEGIN} and {END}")
    return readme[:start] + new + readme[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository whose model to serve")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)

    import httpx

    repo = args.repo.resolve()
    needed = [repo / p for p in ("dvc.lock", "models/model.onnx", "models/model.json",
                                 "data/processed/test.parquet")]
    if missing := [str(p) for p in needed if not p.exists()]:
        print(f"error: {', '.join(missing)} missing: run `make repro` first", file=sys.stderr)
        return 2
    card = json.loads((repo / "models/model.json").read_text())
    request = example_request(card, repo / "data/processed/test.parquet")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = service_env(MEDCAST_REPO=str(repo), MEDCAST_LOG_LEVEL="WARNING",
                              MEDCAST_DATABASE_URL=f"sqlite:///{Path(tmp) / 'log.db'}")
            with running(env, cwd=Path(tmp), log=Path(tmp) / "serve.log", timeout=60) as service:
                answer = httpx.post(f"{service.url}/predict", json=request, timeout=10)
                service.stop()
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        print(f"error: POST /predict answered {answer.status_code}: {answer.text}", file=sys.stderr)
        return 1
    readme = args.readme.read_text()
    try:
        updated = replace_block(readme, block(request, answer.json()))
    except ValueError as exc:
        print(f"error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if updated != readme:
            print(f"{args.readme}: the example is stale; run `python -m scripts.readme_examples`",
                  file=sys.stderr)
            return 1
        print(f"{args.readme}: the example matches the model ({card['onnx_md5']})")
        return 0
    args.readme.write_text(updated)
    print(f"{args.readme}: example from {card['name']} ({card['model']}, md5 {card['onnx_md5']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
