"""How sure a result is, end to end on generated tables nobody prepared (init → data →
`dvc exp run`, the draft unreviewed: preprocess.allow_review): a pure-noise table says "no
candidate beats the mean" in the stage log, metrics.json, report.md, tripod.md, the model card
and the service; train.require_signal stops the run; a table with strong signal says so, and its
optimism-corrected R² agrees with the test R²."""

from __future__ import annotations

import json

import pytest

from devtools.factories import mixed_frame
from tests.support.repo_copy import make_copy, run

pytestmark = pytest.mark.e2e
SMALL = {"train.candidates": "[linear,ridge,random_forest]", "cv.folds": "3", "tune.n_trials": "2"}
NO_SIGNAL = "no candidate beats the mean"


def own_study(tmp, name: str, frame, **overrides: str):
    """A study copy with `frame` drafted by `init` and tracked as `make data` does, committed.
    Nobody reviews the draft: preprocess.allow_review lets it run, with its warning."""
    repo = make_copy(tmp / "repo", **SMALL, **{"preprocess.allow_review": "true"}, **overrides)
    export = tmp / f"{name}.csv"
    frame.to_csv(export, index=False)
    run(["python", "-m", "medcast.datasets", "init", str(export), "--name", name, "--target",
         "outcome"], repo)
    (repo / f"data/raw/{name}").mkdir(parents=True)
    (repo / f"data/raw/{name}/{name}.csv").write_bytes(export.read_bytes())
    run(["dvc", "add", f"data/raw/{name}/{name}.csv"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", name], repo)
    return repo


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("noise")
    repo = own_study(tmp, "noise", mixed_frame(500, seed=5))
    out = run(["dvc", "exp", "run", "-S", "dataset=noise"], repo,
              MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
    return repo, out.stdout + out.stderr


@pytest.mark.xdist_group("trust_noise")
def test_pure_noise_says_no_candidate_beats_the_mean_in_the_log_metrics_reports_and_card(noise):
    repo, log = noise
    assert f"WARNING {NO_SIGNAL}: the best," in log  # the train stage's line
    assert ("WARNING conf/dataset/noise.yaml: REVIEW markers left in target_unit: they reach "
            "the model card and reports as written (preprocess.allow_review: true)") in log
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["signal"] is False and metrics["dataset.name"] == "noise"
    report = (repo / "reports/report.md").read_text().splitlines()
    assert report[2].startswith("> **No candidate beats the mean:** the best,")
    assert (repo / "reports/tripod.md").read_text().count("No candidate beats the mean") == 1
    validation = json.loads((repo / "reports/validation.json").read_text())
    assert validation["signal"]["message"].startswith(NO_SIGNAL)
    assert validation["signal"]["high"] >= 0 or validation["signal"]["cv_r2"] <= 0
    card = json.loads((repo / "models/model.json").read_text())
    assert card["signal"] == {"signal": False, "message": validation["signal"]["message"]}


@pytest.mark.xdist_group("trust_noise")
def test_the_service_says_it_at_get_model(noise, tmp_path):
    import httpx

    from devtools.service import running
    from tests.conftest import venv_env

    repo, _ = noise
    env = venv_env(MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path}/log.db")
    with running(env, cwd=repo, log=tmp_path / "serve.log", timeout=60) as service:
        served = httpx.get(f"{service.url}/model", timeout=5).json()
    assert served["signal"]["signal"] is False
    assert served["signal"]["message"].startswith(NO_SIGNAL)


@pytest.mark.xdist_group("trust_noise")
def test_require_signal_stops_train_with_exit_2_and_the_line(noise):
    repo, _ = noise
    run(["python", "-m", "medcast.config", "dataset=noise", "train.require_signal=true"], repo)
    out = run(["python", "-m", "medcast.train"], repo, check=False)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[-1].startswith(f"error: {NO_SIGNAL}: the best,")
    assert "(train.require_signal: true)" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_strong_signal_is_said_and_the_corrected_r2_agrees_with_the_test_r2(tmp_path):
    repo = own_study(tmp_path, "clear", mixed_frame(2000, seed=6, signal=True),
                     **{"evaluate.bootstrap": "50"})
    run(["dvc", "exp", "run", "-S", "dataset=clear"], repo,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["signal"] is True and metrics["test.r2"] > 0.6
    assert abs(metrics["validation.r2_corrected"] - metrics["test.r2"]) <= 0.05
    report = (repo / "reports/report.md").read_text()
    assert "No candidate beats the mean" not in report and "**Signal:**" in report
