"""End-to-end flows on tiny params in throwaway copies: `dvc repro` and its determinism,
experiments (`dvc exp run -S`, queued runs) in DVC and MLflow, push/pull through a real S3
server, the service (also loading by revision from S3) and the notebooks."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from devtools.factories import write_insurance_csv
from devtools.service import running
from tests.conftest import venv_env
from tests.support.repo_copy import make_copy, run

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.s3_fixtures"]

# A small but complete study: linear + forest + the MLP, MLP forced so tune/evaluate use Keras.
TINY = {
    "train.candidates": "[ridge,random_forest,mlp]",
    "train.select": "mlp",
    "cv.folds": "3",
    "tune.n_trials": "2",
}
OUTPUTS = [
    "data/processed/train.parquet", "data/processed/test.parquet", "data/processed/schema.json",
    "reports/leaderboard.json", "reports/leaderboard.csv", "reports/cv_scores.csv",
    "models/selection.json", "models/tuned/pipeline.skops", "models/tuned/mlp.keras",
    "reports/metrics.json", "reports/intervals.json", "reports/predictions.csv",
    "reports/validation.json", "reports/calibration.csv", "reports/calibration_curve.csv",
    "reports/instability.csv", "models/interval/meta.json",
    "reports/report.md", "reports/tripod.md",
    "models/model.onnx", "models/model.json",
    "reports/figures/feature_importance.png", "reports/figures/training_history.png",
    "reports/figures/predicted_vs_actual.png", "reports/figures/residuals.png",
    "reports/figures/intervals.png", "reports/figures/calibration.png",
    "reports/figures/instability.png",
]


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory):
    """One tiny `dvc repro` shared by the flows that inspect its results (same xdist group)."""
    tmp = tmp_path_factory.mktemp("built")
    repo = make_copy(tmp / "repo", **TINY)
    write_insurance_csv(repo / "data/raw/insurance/insurance.csv", n=120)
    mlflow_uri = f"sqlite:///{tmp}/mlflow.db"
    run(["dvc", "repro"], repo, MLFLOW_TRACKING_URI=mlflow_uri)
    (tmp / "built.lock").write_bytes((repo / "dvc.lock").read_bytes())  # as the build wrote it
    return repo, mlflow_uri


def built_lock(repo):
    """The dvc.lock built_repo's `dvc repro` wrote (whatever a later test does to the copy)."""
    return (repo.parent / "built.lock").read_bytes()


@pytest.mark.xdist_group("built_repo")
def test_repro_builds_every_artifact_then_runs_nothing(built_repo):
    repo, mlflow_uri = built_repo
    for rel in OUTPUTS:
        assert (repo / rel).exists(), rel
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["model"] == "mlp" and metrics["dataset.name"] == "diabetes"
    assert list(metrics)[:5] == ["dataset.name", "model", "test.r2", "test.rmse", "cv.r2"]
    assert {f"{split}.{m}" for split in ("test", "cv") for m in ("r2", "rmse", "mae")} <= set(metrics)
    assert {"cv.r2_std", "cv.rmse_std", "cv.mae_std", "n_train", "n_test"} <= set(metrics)
    assert metrics["interval.level"] == 0.9 and metrics["interval.method"] in ("adaptive",
                                                                                "constant")
    assert 0.5 <= metrics["interval.coverage"] <= 1 and metrics["interval.mean_width"] > 0
    detail = json.loads((repo / "reports/intervals.json").read_text())
    assert {"sex=1", "sex=2", "prediction Q1", "prediction Q4"} <= set(detail["coverage_by_group"])
    header = (repo / "reports/predictions.csv").read_text().splitlines()[0]
    assert header.endswith(",lower,upper,boot_low,boot_high")
    report = (repo / "reports/report.md").read_text()
    assert "interval coverage" in report and "## How sure is the result?" in report
    assert list(metrics)[5:10] == ["cv.rmse", "signal", "validation.r2_corrected",
                                   "calibration.slope", "validation.slope_corrected"]
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    assert "mean" in [r["model"] for r in board]
    assert not [k for r in board for k in r if k.startswith("test_")]  # test used once

    again = run(["dvc", "repro"], repo, MLFLOW_TRACKING_URI=mlflow_uri)
    assert "Running stage" not in again.stdout
    assert "up to date" in run(["dvc", "status"], repo).stdout

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert "reports/metrics.json" in json.dumps(shown)

    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    champion = client.get_model_version_by_alias("medcast-diabetes", "champion")
    assert champion.tags["validated"] == "true"
    assert champion.tags["dvc_experiment"] == "workspace"
    exp = client.get_experiment_by_name("diabetes")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    names = {r.info.run_name for r in runs}
    assert {"cv-ridge", "cv-random_forest", "cv-mlp", "tune-mlp", "trial-0", "trial-1",
            "final-mlp"} <= names


def _lock_outs(lock: bytes) -> dict[str, str]:
    """path → md5 of every stage output recorded in a dvc.lock."""
    import yaml

    stages = yaml.safe_load(lock)["stages"]
    return {o["path"]: o["md5"] for s in stages.values() for o in s.get("outs", [])}


def _differing_outs(a: bytes, b: bytes) -> list[str]:
    outs_a, outs_b = _lock_outs(a), _lock_outs(b)
    return sorted(p for p in outs_a.keys() | outs_b.keys() if outs_a.get(p) != outs_b.get(p))


@pytest.mark.xdist_group("built_repo")
def test_repro_is_byte_identical_from_clean_copies_and_when_forced(built_repo, tmp_path):
    """Same inputs, same bytes: a second clean copy (another git commit, another
    PYTHONHASHSEED) writes the dvc.lock the shared built copy wrote, and forcing the train stage
    again after a committed `dvc repro` leaves it unchanged (the MLP's CV and fit included:
    TensorFlow runs with op determinism on one machine). Set and dict order must not reach a
    file (it once reached the ONNX opsets)."""
    built, _ = built_repo
    repo = make_copy(tmp_path / "b", **TINY)
    # Same files, another commit: an output that embedded the revision could not match.
    run(["git", "commit", "--amend", "-q", "-m", "copy b"], repo)
    heads = [run(["git", "rev-parse", "HEAD"], r).stdout.strip() for r in (built, repo)]
    assert heads[0] != heads[1]
    run(["dvc", "repro"], repo, timeout=900, MLFLOW_TRACKING_URI=f"sqlite:///{repo}.db",
        PYTHONHASHSEED="1")
    locks = [built_lock(built), (repo / "dvc.lock").read_bytes()]
    assert locks[0] == locks[1], f"outputs differ between clean copies: {_differing_outs(*locks)}"
    for rel in ("reports/metrics.json", "reports/predictions.csv", "reports/leaderboard.json"):
        assert (built / rel).read_bytes() == (repo / rel).read_bytes(), rel

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "study results"], repo)
    run(["dvc", "repro", "-f", "-s", "train"], repo, timeout=900,
        MLFLOW_TRACKING_URI=f"sqlite:///{repo}.db", PYTHONHASHSEED="3")
    forced = (repo / "dvc.lock").read_bytes()
    assert forced == locks[0], f"outputs differ after dvc repro -f: {_differing_outs(locks[0], forced)}"
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


@pytest.mark.slow
def test_experiments_on_both_datasets_reach_dvc_and_mlflow(tmp_path):
    repo = make_copy(tmp_path / "repo", **{**TINY, "train.select": "null",
                                            "train.candidates": "[ridge,knn]"})
    write_insurance_csv(repo / "data/raw/insurance/insurance.csv", n=150)
    run(["dvc", "add", "data/raw/insurance/insurance.csv"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "insurance pointer"], repo)
    # No MLFLOW_TRACKING_URI: the default store at the repository root must collect the
    # workspace run and the queued runs (which execute in temporary copies).
    mlflow_uri = f"sqlite:///{repo}/mlflow.db"
    no_uri = ("MLFLOW_TRACKING_URI",)

    run(["dvc", "exp", "run", "-n", "ins", "-S", "dataset=insurance"], repo, unset=no_uri)
    run(["dvc", "exp", "run", "--queue", "-S", "dataset=diabetes,insurance"], repo, unset=no_uri)
    start = time.monotonic()
    run(["dvc", "queue", "start", "-j", "2"], repo, unset=no_uri)  # two at once: one store
    while time.monotonic() - start < 600:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, run(["dvc", "queue", "logs", status.split()[-1]], repo,
                                       check=False).stdout

    table = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    text = json.dumps(table)
    assert '"ins"' in text
    runs = [e for row in table for e in [row, *[x for exp in row.get("experiments") or []
                                               for x in exp.get("revs") or []]]]
    datasets = [((r.get("data") or {}).get("params") or {}).get("params.yaml", {})
                .get("data", {}).get("dataset") for r in runs]
    assert datasets.count("insurance") >= 2 and "diabetes" in datasets  # params: both datasets
    assert text.count('"test.r2"') >= 3  # metrics column for every run

    # What a researcher sees in a 120-column terminal: the headline first, nothing cut.
    shown = run(["dvc", "exp", "show"], repo, COLUMNS="120").stdout.splitlines()
    header = next(line for line in shown if "Experiment" in line)
    assert "…" not in header
    for name in ("Experiment", "dataset.name", "model", "test.r2", "test.rmse", "cv.r2"):
        assert name in header[:120], (name, header[:120])
    assert " dataset " in f"{header} "  # the dataset param too
    sorted_rows = run(["dvc", "exp", "show", "--sort-by", "test.r2", "--csv"], repo).stdout
    assert "test.r2" in sorted_rows.splitlines()[0]
    diff = run(["dvc", "exp", "diff", "ins"], repo).stdout
    assert "reports/metrics.json" in diff or "test.r2" in diff or diff.strip() == ""

    from medcast.experiments import dvc_exp_show, exp_table

    rows = exp_table(dvc_exp_show(repo))  # what notebook 02 shows, read in process
    assert "ins" in set(rows["experiment"])
    assert {"diabetes", "insurance"} <= set(rows["dataset"])
    assert rows["test_r2"].notna().sum() >= 3

    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    for dataset in ("diabetes", "insurance"):
        exp = client.get_experiment_by_name(dataset)
        assert exp is not None, f"queued {dataset} run did not reach {mlflow_uri}"
        tags = {r.data.tags.get("dvc_experiment") for r in client.search_runs([exp.experiment_id])}
        assert "workspace" not in tags
    ins = client.search_runs([client.get_experiment_by_name("insurance").experiment_id],
                             filter_string="tags.dvc_experiment = 'ins'")
    assert ins, "the named experiment's runs are tagged with its name"


@pytest.mark.xdist_group("built_repo")
def test_push_then_fresh_clones_restore_and_serve_from_s3(built_repo, s3_server, s3_bucket, tmp_path):
    """The study's real artifacts round-trip through S3: a fresh clone pulls every output
    (status clean, repro runs nothing), and the service loads the model by git revision."""
    import httpx

    from devtools.s3server import ensure_bucket
    from tests.support.s3_fixtures import write_local_remote

    repo, _ = built_repo
    ensure_bucket(s3_server, s3_bucket)
    url = f"s3://{s3_bucket}/dvcstore"
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "study results"], repo)
    write_local_remote(repo, url=url, server=s3_server)
    run(["dvc", "push"], repo)
    lock = run(["git", "show", "HEAD:dvc.lock"], repo).stdout

    pulled = tmp_path / "pulled"
    run(["git", "clone", "-q", str(repo), str(pulled)], tmp_path)
    write_local_remote(pulled, url=url, server=s3_server)
    run(["dvc", "pull"], pulled)
    assert "up to date" in run(["dvc", "status"], pulled).stdout
    assert "Running stage" not in run(["dvc", "repro"], pulled).stdout
    for rel in ("models/model.onnx", "reports/metrics.json", "reports/figures/residuals.png"):
        assert (pulled / rel).read_bytes() == (repo / rel).read_bytes(), rel
    _documented_fresh_clone_recipe_restores(repo)

    served = tmp_path / "served"  # no cache, no outputs: the model can only come from S3
    run(["git", "clone", "-q", str(repo), str(served)], tmp_path)
    write_local_remote(served, url=url, server=s3_server)
    env = venv_env(MEDCAST_MODEL_REV="HEAD", MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path}/serve.db")
    with running(env, cwd=served, log=tmp_path / "serve.log", timeout=120) as service:
        card = httpx.get(f"{service.url}/model", timeout=5).json()
        assert card["onnx_md5"] in lock
        row = __import__("pandas").read_parquet(repo / "data/processed/test.parquet").iloc[0]
        answer = httpx.post(f"{service.url}/predict", json=row.drop("progression").to_dict(),
                            timeout=5)
        assert answer.status_code == 200, answer.text
        service.stop(signal.SIGTERM, timeout=30)
    assert not (served / "models" / "model.onnx").exists()


def _without_the_virtualenv() -> dict[str, str]:
    """The environment of a shell with no activated virtualenv: no venv bin, no `dvc` on PATH."""
    import os
    import shutil
    import sys
    from pathlib import Path

    venv_bin = Path(sys.executable).parent
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and Path(d).resolve() != venv_bin.resolve() and not shutil.which("dvc", path=d))
    assert shutil.which("dvc", path=path) is None
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = path
    return env


def _documented_fresh_clone_recipe_restores(repo) -> None:
    """The documentation's fresh-clone recipe (docs/sharing.md), run as written (bash, no
    activated virtualenv) in a repository whose outputs are committed and pushed: the copy is
    complete and clean."""
    import os
    import re
    import sys
    from pathlib import Path

    from tests.conftest import ROOT

    page = (ROOT / "docs/sharing.md").read_text()
    recipe = re.search(r"<!-- recipe:fresh-clone -->\n```bash\n(.*?)```\n<!-- /recipe:fresh-clone -->",
                       page, re.S)
    assert recipe, "docs/sharing.md: the fresh-clone recipe block is missing"
    venv = repo / ".venv"  # the recipe borrows the checkout's virtualenv, as in a real checkout
    venv.symlink_to(Path(sys.prefix), target_is_directory=True)
    try:
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe.group(1)], cwd=repo,
                             env=_without_the_virtualenv(), capture_output=True, text=True,
                             timeout=300)
    finally:
        venv.unlink()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Data and pipelines are up to date." in out.stdout, out.stdout + out.stderr
    copy = repo.parent / "medcast-copy"
    for rel in ("models/model.onnx", "models/tuned/pipeline.skops", "reports/metrics.json"):
        assert (copy / rel).read_bytes() == (repo / rel).read_bytes(), rel
    assert os.stat(copy / ".dvc" / "config.local").st_mode & 0o077 == 0


@pytest.mark.xdist_group("built_repo")
def test_readme_examples_script_writes_what_the_served_model_answers(built_repo, tmp_path):
    """scripts/readme_examples.py serves the built model, writes the README block from its
    answer, and `--check` then passes; a stale figure fails it."""
    import sys

    from tests.conftest import ROOT

    repo, _ = built_repo
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n<!-- readme_examples:predict -->\nold\n"
                      "<!-- /readme_examples:predict -->\nafter\n"
                      "<!-- readme_examples:explain -->\n<!-- /readme_examples:explain -->\n")
    script = [sys.executable, "-m", "scripts.readme_examples", "--repo", str(repo),
              "--readme", str(readme)]
    out = subprocess.run(script, capture_output=True, text=True, timeout=120, env=venv_env(),
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = readme.read_text()
    card = json.loads((repo / "models/model.json").read_text())
    answer = json.loads(text.split("\n# ", 1)[1].split("\n", 1)[0])
    assert answer["model_version"] == card["onnx_md5"]
    assert isinstance(answer["prediction"], float) and answer["request_id"] == "…"
    assert "curl -s localhost:8000/predict" in text and "MEDCAST_PORT" in text
    assert text.startswith("# t\n\n<!-- readme_examples:predict -->\n```bash\n")
    assert "<!-- /readme_examples:predict -->\nafter\n" in text and "\nold\n" not in text
    explained = text.split("<!-- readme_examples:explain -->\n", 1)[1]
    assert "curl -s 'localhost:8000/predict?explain=true'" in explained
    shown = json.loads(explained.split("json.tool\n", 1)[1].split("\n```", 1)[0])
    e = shown["explanation"]
    assert shown["prediction"] == answer["prediction"]
    assert list(e["contributions"]) == [f["name"] for f in card["features"]]
    assert e["base_value"] + sum(e["contributions"].values()) == pytest.approx(
        shown["prediction"], rel=1e-4)
    check = subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=120,
                           env=venv_env(), cwd=ROOT)
    assert check.returncode == 0, check.stderr  # same model, same answer: nothing stale
    readme.write_text(text.replace(card["onnx_md5"], "0" * 32))
    stale = subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=120,
                           env=venv_env(), cwd=ROOT)
    assert stale.returncode == 1 and "the example is stale" in stale.stderr


@pytest.fixture(scope="session")
def served(built_repo, tmp_path_factory):
    """The built repository's model served by `python -m serve` on a free loopback port."""
    repo, _ = built_repo
    logs = tmp_path_factory.mktemp("log")
    db = f"sqlite:///{logs}/serve.db"
    env = venv_env(MEDCAST_DATABASE_URL=db, MEDCAST_API_KEY="k")
    with running(env, cwd=repo, log=logs / "serve.log", timeout=60) as service:
        yield service.url, db
        service.stop(signal.SIGTERM, timeout=30)


@pytest.mark.xdist_group("built_repo")
@pytest.mark.parametrize("notebook", ["01-eda.ipynb", "02-experiments.ipynb", "04-api-client.ipynb",
                                      "03-monitoring.ipynb"])
def test_notebook_runs_top_to_bottom(built_repo, served, notebook, monkeypatch, tmp_path):
    import httpx

    from medcast.notebooks import execute

    repo, mlflow_uri = built_repo
    url, db = served
    extra = {}
    if notebook.startswith("03"):  # something to monitor: the test split, served in one batch
        import pandas as pd

        split = pd.read_parquet(repo / "data/processed/test.parquet")
        test = json.loads(json.dumps(split.drop(columns="progression").to_dict(orient="records")))
        answer = httpx.post(f"{url}/predict/batch", json={"instances": test}, timeout=10)
        answer.raise_for_status()
        time.sleep(0.5)  # the log is flushed every ~20 ms
        # … and their true outcomes, joined by request id: the realised interval coverage
        outcomes = tmp_path / "outcomes.csv"
        pd.DataFrame({"request_id": answer.json()["request_id"], "item": range(len(split)),
                      "actual": split["progression"]}).to_csv(outcomes, index=False)
        extra["MEDCAST_OUTCOMES"] = str(outcomes)
    env = venv_env(MLFLOW_TRACKING_URI=mlflow_uri, MEDCAST_URL=url, MEDCAST_DATABASE_URL=db,
                   **extra)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = execute(repo / "notebooks" / notebook, timeout=300)
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if notebook.startswith(("01", "02")):  # no warning in the saved outputs (02: tqdm, Optuna)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= {"04": 0, "03": 4}.get(notebook[:2], 3)
    if notebook.startswith("03"):
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "realised coverage" in text and "nominal 90%" in text


@pytest.mark.xdist_group("built_repo")
def test_notebook_02_runs_with_the_virtualenvs_python_and_no_activated_environment(
        built_repo, tmp_path):
    """As a Jupyter kernel pointed at .venv/bin/python runs it: PATH holds neither the
    virtualenv's bin nor any `dvc`, VIRTUAL_ENV is unset."""
    import sys

    repo, mlflow_uri = built_repo
    env = _without_the_virtualenv()
    env["MLFLOW_TRACKING_URI"] = mlflow_uri
    out = subprocess.run([sys.executable, "-m", "medcast.notebooks",
                          "notebooks/02-experiments.ipynb", "--out", str(tmp_path)],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "02-experiments.ipynb: ok" in out.stderr
