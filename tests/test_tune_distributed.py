"""Distributed tuning: `python -m medcast.tune` (the stage) plus `python -m medcast.tune --worker`
processes share one Optuna study through PostgreSQL; the budget is exactly tune.n_trials
finished trials, a killed worker's trial is failed by its silent heartbeat and retried, and the
stage refits the best trial whoever ran it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from devtools.factories import write_insurance_csv
from medcast.config import load_params
from medcast.errors import ArtifactError, ConfigError
from medcast.optuna_storage import open_storage
from medcast.study import CLOSED, TICKET, join, study_name
from medcast.tune import worker
from tests.conftest import ROOT, TINY_MODELS, tiny, tiny_params, venv_env

N_TRIALS = 10


def workspace(root: Path, storage: str, *overrides: str, space: dict | None = None) -> Path:
    """params.yaml, conf/, the processed insurance split and a selection, as after
    `dvc repro train`; `space` replaces the random forest's search space."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "conf", root / "conf")
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    forest = root / "conf/model/random_forest.yaml"
    conf = yaml.safe_load(forest.read_text())
    conf["defaults"].update(TINY_MODELS["random_forest"])
    if space is not None:
        conf["search_space"] = space
    forest.write_text(yaml.safe_dump(conf, sort_keys=False))
    raw = tiny_params("dataset=insurance", f"tune.storage='{storage}'", f"tune.n_trials={N_TRIALS}",
                      "cv.folds=3", "tune.heartbeat_interval=1", "tune.grace_period=3",
                      "tune.worker_wait=60", *overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    write_insurance_csv(root / "data/raw/insurance/insurance.csv", n=150)
    subprocess.run([sys.executable, "-m", "medcast.preprocess"], cwd=root, env=venv_env(),
                   check=True, capture_output=True, timeout=60)
    (root / "models").mkdir(exist_ok=True)
    (root / "models/selection.json").write_text(json.dumps({"model": "random_forest"}))
    return root


def spawn(root: Path, *args: str, log: str) -> subprocess.Popen[str]:
    out = (root / log).open("w")
    return subprocess.Popen([sys.executable, "-m", "medcast.tune", *args], cwd=root,
                            env=venv_env(MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db"),
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def load(root: Path):  # the study, as any process sees it
    import optuna

    from medcast.features import load_schema, read_split

    p = load_params(root / "params.yaml")
    X, _ = read_split(root / p.paths.train, load_schema(root / p.paths.schema))
    name = study_name(p, "random_forest", "insurance", X)
    return optuna.load_study(study_name=name, storage=open_storage(p.tune))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_stage_and_two_workers_share_the_budget_and_survive_a_killed_worker(
    tmp_path: Path, pg_url: str  # noqa: F811
) -> None:
    space = yaml.safe_load((ROOT / "conf/model/random_forest.yaml").read_text())["search_space"]
    space["n_estimators"] = {"low": 60, "high": 120}
    root = workspace(tmp_path / "ws", pg_url, space=space)
    procs = {"stage": spawn(root, log="stage.log"),
             "w1": spawn(root, "--worker", log="w1.log"),
             "w2": spawn(root, "--worker", log="w2.log")}
    victim = procs["w1"]
    try:
        # Kill worker 1 in the middle of a trial it is running (parameters drawn, CV under way).
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, (root / "w1.log").read_text()[-3000:]
            assert victim.poll() is None, (root / "w1.log").read_text()[-3000:]
            try:
                study = load(root)
                # Every parameter drawn: killed mid-draw, the retry would draw the rest anew.
                running = [t for t in study.get_trials(deepcopy=False)
                           if t.state.name == "RUNNING" and set(t.params) == set(space)
                           and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            except (KeyError, ConfigError):  # the stage has not created the study yet
                running = []
            if running:
                break
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_trial = running[0].number
        assert procs["stage"].wait(timeout=180) == 0, (root / "stage.log").read_text()[-5000:]
        assert procs["w2"].wait(timeout=60) == 0, (root / "w2.log").read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    study = load(root)
    states = [t.state.name for t in study.trials]
    ticketed = [t for t in study.trials if t.user_attrs.get(TICKET) is not None]
    finished = [t for t in ticketed if t.state.name in ("COMPLETE", "PRUNED")]
    failed = [t for t in ticketed if t.state.name == "FAIL"]
    workers = {t.user_attrs.get("worker", "").rsplit(":", 1)[-1] for t in finished}
    print(f"distributed: {len(finished)} finished, states {states}, killed trial {killed_trial}, "
          f"workers {sorted(workers)}")
    # Exactly the budget, every ticket once; the killed trial failed and its retry finished.
    assert len(finished) == N_TRIALS
    assert sorted(t.user_attrs[TICKET] for t in finished) == list(range(N_TRIALS))
    assert [t.number for t in failed] == [killed_trial]
    (retry,) = [t for t in finished if t.system_attrs.get("failed_trial") == killed_trial]
    assert retry.user_attrs[TICKET] == failed[0].user_attrs[TICKET]
    assert retry.params == failed[0].params
    assert "RUNNING" not in states and "WAITING" not in states
    assert study.user_attrs[CLOSED] is True
    # The stage and the surviving worker both ran trials.
    assert {str(procs["stage"].pid), str(procs["w2"].pid)} <= workers

    tuning = json.loads((root / "reports/tuning.json").read_text())
    meta = json.loads((root / "models/tuned/meta.json").read_text())
    assert tuning["n_trials"] == N_TRIALS
    assert tuning["best_trial"] == meta["best_trial"] == study.best_trial.number
    assert {k: meta["params"][k] for k in study.best_params} == study.best_params


@pytest.mark.slow
def test_a_single_process_runs_exactly_the_budget_with_sqlite(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws", f"sqlite:///{tmp_path}/optuna.db", "tune.n_trials=4")
    subprocess.run([sys.executable, "-m", "medcast.tune"], cwd=root, env=venv_env(), check=True,
                   capture_output=True, timeout=120)
    tuning = json.loads((root / "reports/tuning.json").read_text())
    assert tuning["n_trials"] == 4 and [t["ticket"] for t in tuning["trials"]] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_worker_after_the_budget_is_used_exits_at_once_saying_the_study_is_complete(
        tmp_path: Path) -> None:
    """A late worker finds the stage's study already finished: exit 0 at once (not after
    tune.worker_wait), saying so."""
    root = workspace(tmp_path / "ws", f"sqlite:///{tmp_path}/optuna.db", "tune.n_trials=2",
                     "tune.worker_wait=600")
    subprocess.run([sys.executable, "-m", "medcast.tune"], cwd=root, env=venv_env(), check=True,
                   capture_output=True, timeout=120)
    start = time.monotonic()
    late = subprocess.run([sys.executable, "-m", "medcast.tune", "--worker"], cwd=root,
                          env=venv_env(), capture_output=True, text=True, timeout=120)
    assert late.returncode == 0, late.stderr
    assert time.monotonic() - start < 60  # imports included; worker_wait is 600 s
    name = load(root).study_name
    assert f"study '{name}' is complete (2 trials finished); nothing to do" in late.stderr
    assert "waiting" not in late.stderr and "Traceback" not in late.stderr


def test_worker_without_a_study_says_what_it_waits_for_then_what_to_run(
        tmp_path: Path, monkeypatch, caplog) -> None:
    import medcast.study

    root = workspace(tmp_path / "ws", f"sqlite:///{tmp_path}/optuna.db", "tune.worker_wait=1.6")
    monkeypatch.chdir(root)
    monkeypatch.setattr(medcast.study, "WAIT_REPORT_S", 0.5)
    p = load_params(root / "params.yaml")
    caplog.set_level("INFO", logger="medcast.tune")
    with pytest.raises(ConfigError, match=r"no study '.*' in sqlite:///.* after 1.6 s: start "
                                          r"`dvc repro tune`"):
        worker(p)
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("worker: waiting up to 1.6 s (tune.worker_wait) for study '")
    assert "`dvc repro tune` with the same params.yaml and data creates it" in said[0]
    still = [m for m in said if m.startswith("worker: still waiting for study")]
    assert 2 <= len(still) <= 3, said  # every 0.5 s over 1.6 s
    (root / "models/selection.json").unlink()
    with pytest.raises(ArtifactError, match="models/selection.json: not found; run `dvc repro train`"):
        worker(p)


def test_a_worker_joins_an_open_study_and_stops_at_a_closed_one(tmp_path: Path, caplog,
                                                                 monkeypatch) -> None:
    import optuna

    from medcast.features import load_schema, read_split

    root = workspace(tmp_path / "ws", f"sqlite:///{tmp_path}/optuna.db", "tune.worker_wait=0.3")
    p = load_params(root / "params.yaml")
    X, _ = read_split(root / p.paths.train, load_schema(root / p.paths.schema))
    study = optuna.create_study(study_name=study_name(p, "knn", "insurance", X),
                                storage=open_storage(p.tune))
    study.enqueue_trial({}, user_attrs={TICKET: 0})
    study.set_user_attr(CLOSED, True)
    assert join(p, "knn", "insurance", X).user_attrs[CLOSED] is True  # found, not waited for
    (root / "models/selection.json").write_text(json.dumps({"model": "knn"}))
    caplog.set_level("INFO", logger="medcast.tune")
    monkeypatch.chdir(root)
    assert worker(p) == 0
    assert any("was closed by its stage with 0 trials finished and 1 never run" in r.getMessage()
               for r in caplog.records)
    study.set_user_attr(CLOSED, False)
    assert join(p, "knn", "insurance", X).study_name == study.study_name


@pytest.mark.parametrize("bad", ["tune.heartbeat_interval=0", "tune.grace_period=1",
                                 "tune.max_retry=-1"])
def test_bad_heartbeat_settings_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="tune: need heartbeat_interval"):
        tiny(bad)
