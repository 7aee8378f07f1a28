"""The examples of the README and the documentation (docs/), from real runs, rewritten between
`<!-- readme_examples:NAME -->` and `<!-- /readme_examples:NAME -->` in every file that has
that block (a block may appear in several files; each is computed once):

* `predict`: serves the pipeline's current model (models/model.onnx + models/model.json,
  md5-checked against dvc.lock, as `make serve` does), sends the first patient of the test
  split to POST /predict (the request id is random, so it is shown as "…");
* `explain`: the same patient to POST /predict?explain=true, the answer as `python3 -m
  json.tool` prints it;
* `init` and `init-yaml`: `python -m medcast.datasets init` on a generated messy clinical table
  (devtools.factories), its summary and the conf/dataset/trial.yaml it writes;
* `exp-show` and `exp-diff`: `dvc exp show` in a 120-column terminal and `dvc exp diff` of the
  first two experiments, as they are in the repository (run the two-dataset queue of
  docs/experiments.md first);
* `how-sure`: an excerpt of the section "How sure is the result?" of the repository's
  reports/report.md (the plot stage writes it): the no-signal warning when there is one, the
  signal, selection, bootstrap validation table, calibration, stability and sample-size
  paragraphs, quoted as they are (the criteria and subgroup tables stay in the report).

    python -m scripts.readme_examples [--repo .] [--check] [FILE ...]

FILE: the Markdown files to fill (default: README.md and every docs/**/*.md of this checkout);
`--readme FILE` is the same as one FILE. --check writes nothing and exits 1 when a file shows
something else than the run gives, naming the file.
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


def explain_block(request: dict[str, Any], answer: dict[str, Any]) -> str:
    """The explained prediction: the curl command and the answer, indented."""
    shown = {**answer, "request_id": "…"}
    return "\n".join([
        "```bash",
        f"curl -s 'localhost:{PORT}/predict?explain=true' -H 'content-type: application/json' \\",
        f"  -d '{json.dumps(request, ensure_ascii=False)}' | python3 -m json.tool",
        json.dumps(shown, ensure_ascii=False, indent=4),
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


HOW_SURE = "## How sure is the result?"
# The paragraphs of that section the excerpt keeps (by their first words), and those whose
# following table it keeps too; the rest (sample-size criteria, subgroups) stays in the report.
KEPT = ("**Signal:**", "**Selection:**", "**Internal validation**", "Budget rule:",
        "**Calibration**", "**Stability**", "**Sample size**")
KEPT_TABLES = ("**Internal validation**",)
NO_SIGNAL = "> **No candidate beats the mean:**"
TUNED = "## Tuned model: "


def how_sure_excerpt(report: str) -> str:
    """The `how-sure` block from reports/report.md's text: a quote of its first line's study,
    the no-signal warning (if any) and the kept paragraphs of "How sure is the result?"."""
    lines = report.splitlines()
    if HOW_SURE not in lines:
        raise RuntimeError(f"reports/report.md has no section '{HOW_SURE}': run `make repro` "
                           "with the current code")
    start = lines.index(HOW_SURE) + 1
    stop = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    paragraphs, current = [], []
    for line in [*lines[start:stop], ""]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    kept: list[list[str]] = [[line for line in lines[:start] if line.startswith(NO_SIGNAL)]]
    keep_table = False
    for paragraph in paragraphs:
        if paragraph[0].startswith("|"):
            if keep_table:
                kept.append(paragraph)
            continue
        keep_table = paragraph[0].startswith(KEPT_TABLES)
        if paragraph[0].startswith(KEPT):
            kept.append(paragraph)
    study = lines[0].removeprefix("# medcast study: ") if lines else ""
    model = next((line.removeprefix(TUNED) for line in lines if line.startswith(TUNED)), "")
    about = ", ".join(x for x in (study, f"selected and tuned: {model}" if model else "") if x)
    quoted = "\n>\n".join("\n".join(f"> {line}" for line in p) for p in kept if p)
    return (f"From `reports/report.md` ({about}), as the last `make repro` wrote it:\n\n"
            f"{quoted}")


def how_sure_block(repo: Path) -> str:
    report = repo / "reports/report.md"
    if not report.exists():
        raise RuntimeError(f"{report} missing: run `make repro` first")
    return how_sure_excerpt(report.read_text(encoding="utf-8"))


def replace_block(readme: str, name: str, new: str) -> str:
    begin, end = f"<!-- readme_examples:{name} -->", f"<!-- /readme_examples:{name} -->"
    start, stop = readme.find(begin), readme.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no block between {begin} and {end}")
    return readme[:start + len(begin)] + "\n" + new + "\n" + readme[stop:]


def has_block(readme: str, name: str) -> bool:
    return f"<!-- readme_examples:{name} -->" in readme


def default_files() -> list[Path]:
    """README.md and every Markdown page of docs/ (sorted), in this checkout."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def compute(names: set[str], repo: Path) -> dict[str, str]:
    """The blocks `names` asks for, each computed once; raises RuntimeError/ServiceError."""
    blocks: dict[str, str] = {}
    if names & {"predict", "explain"}:
        blocks.update(served_blocks(repo))
    if names & {"init", "init-yaml"}:
        blocks.update(init_blocks())
    if names & {"exp-show", "exp-diff"}:
        blocks.update(experiment_blocks(repo))
    if "how-sure" in names:
        blocks["how-sure"] = how_sure_block(repo)
    return blocks


BLOCKS = ("predict", "explain", "init", "init-yaml", "exp-show", "exp-diff", "how-sure")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE",
                        help="Markdown files to fill (default: README.md and docs/**/*.md)")
    parser.add_argument("--repo", type=Path, default=ROOT,
                        help="the repository whose model, experiments and report to show")
    parser.add_argument("--readme", type=Path, action="append", default=[],
                        help="one more FILE (the same as giving it as an argument)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)

    files = [*args.files, *args.readme] or default_files()
    texts = {path: path.read_text(encoding="utf-8") for path in files}
    wanted = {path: [n for n in BLOCKS if has_block(text, n)] for path, text in texts.items()}
    try:
        blocks = compute({n for names in wanted.values() for n in names}, args.repo.resolve())
    except (RuntimeError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stale = []
    for path, text in texts.items():
        updated = text
        try:
            for name in wanted[path]:
                updated = replace_block(updated, name, blocks[name])
        except ValueError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        if not wanted[path] or updated == text:
            if wanted[path]:
                print(f"{path}: the examples match ({', '.join(wanted[path])})")
            continue
        if args.check:
            stale.append(path)
            print(f"{path}: the example is stale; run `python -m scripts.readme_examples`",
                  file=sys.stderr)
        else:
            path.write_text(updated, encoding="utf-8")
            print(f"{path}: examples written ({', '.join(wanted[path])})")
    return 1 if stale else 0


def served_blocks(repo: Path) -> dict[str, str]:
    """Serve `repo`'s model, send the first test patient, plain and explained; raises
    RuntimeError/ServiceError."""
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
            answers = {path: httpx.post(f"{service.url}{path}", json=request, timeout=10)
                       for path in ("/predict", "/predict?explain=true")}
            service.stop()
    for path, answer in answers.items():
        if answer.status_code != 200:
            raise RuntimeError(f"POST {path} answered {answer.status_code}: {answer.text}")
    return {"predict": block(request, answers["/predict"].json()),
            "explain": explain_block(request, answers["/predict?explain=true"].json())}


if __name__ == "__main__":
    sys.exit(main())
