"""Where fits run: local processes or a Dask cluster of separate worker processes on loopback.
The scores are the same wherever they ran, and a worker lost mid-run loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from medcast.errors import ConfigError
from medcast.metrics import cross_validate
from medcast.parallel import completed, n_workers, ordered
from tests.support.estimators import SlowRidge

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with one thread each (as README "Scaling" runs them), loopback."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        yield local.scheduler_address, client


def frame(n: int = 90) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=list("abc"))
    return X, pd.Series(X["a"] * 2 - X["c"] + rng.normal(size=n))


def test_n_workers_defaults_to_every_core_and_honours_a_number():
    assert n_workers(None) >= 1
    assert n_workers(3) == 3


def test_ordered_yields_in_submission_order_locally():
    calls = [(time.sleep, (0.2 - 0.05 * k,)) for k in range(4)]
    assert list(ordered(calls, 2)) == [None] * 4
    assert list(ordered([(abs, (-k,)) for k in range(5)], 2)) == [0, 1, 2, 3, 4]


def _slow_echo(k: int, seconds: float) -> int:
    time.sleep(seconds)
    return k


@pytest.mark.parametrize("jobs", [1, 2])
def test_completed_yields_every_call_once_with_its_index(jobs):
    calls = [(_slow_echo, (k, 0.3 if k == 0 else 0.0)) for k in range(6)]
    assert sorted(completed(calls, jobs)) == [(k, k) for k in range(6)]


def test_completed_on_the_cluster_gives_what_ordered_gives(cluster):
    address, _ = cluster
    calls = [(abs, (-k,)) for k in range(5)]
    assert sorted(completed(calls, None, address)) == list(enumerate(ordered(calls, 1)))


def test_cross_validation_on_the_cluster_scores_as_locally(cluster):
    from sklearn.ensemble import RandomForestRegressor

    address, _ = cluster
    X, y = frame()
    for estimator in (SlowRidge(delay=0.0), RandomForestRegressor(n_estimators=10, random_state=0)):
        local = cross_validate(estimator, X, y, 3, seed=1, n_jobs=1)
        assert cross_validate(estimator, X, y, 3, seed=1, cluster=address) == local


def test_train_candidates_on_the_cluster_score_as_locally(cluster):
    from devtools.factories import insurance_frame
    from medcast.datasets import validate
    from medcast.features import infer_schema, split_xy
    from medcast.train import evaluate_candidates
    from tests.conftest import tiny

    address, _ = cluster
    p = tiny("dataset=insurance")
    table = validate(insurance_frame(100, seed=2).astype(str), p.dataset)
    schema = infer_schema(table, p.dataset)
    X, y = split_xy(table.iloc[:80], schema)
    names = ["ridge", "random_forest"]
    hps = {n: p.models[n].defaults for n in names}
    runs = [list(evaluate_candidates(names, hps, replace(p.cv, n_jobs=1, cluster=c), schema,
                                     X, y)) for c in (None, address)]
    assert [(r.folds, r.train) for r in runs[0]] == [(r.folds, r.train) for r in runs[1]]


def test_tune_trials_on_tune_cluster_score_as_locally(cluster, tmp_path):
    """tune.cluster alone (cv's fits local) sends every trial's folds to the cluster."""
    from distributed import get_task_stream

    from devtools.factories import insurance_frame
    from medcast.datasets import validate
    from medcast.features import infer_schema, split_xy
    from medcast.tune import run_study
    from tests.conftest import tiny

    address, client = cluster
    studies = []
    for where in ("null", address):
        p = tiny("dataset=insurance", "tune.n_trials=4", "cv.n_jobs=1",
                 f"tune.storage=sqlite:///{tmp_path}/optuna.db", f"tune.cluster={where}")
        table = validate(insurance_frame(90, seed=2).astype(str), p.dataset)
        schema = infer_schema(table, p.dataset)
        with get_task_stream(client) as stream:
            study = run_study(p, "knn", schema, *split_xy(table, schema))
        studies.append(([(t.params, t.value) for t in study.trials], len(stream.data)))
    (local, on_local), (remote, on_cluster) = studies
    assert remote == local
    # every fold of every trial, of every repeat
    assert on_local == 0 and on_cluster == 4 * p.cv.folds * p.cv.repeats


def test_a_worker_killed_mid_run_loses_no_fold(cluster):
    """SIGKILL a worker process while it fits: the scheduler reruns its folds elsewhere (the
    nanny restarts it) and cross-validation returns every fold, as locally."""
    address, client = cluster
    X, y = frame()
    slow = SlowRidge(delay=1.5)
    expected = cross_validate(SlowRidge(delay=0.0), X, y, 4, seed=3, n_jobs=1)
    out: dict = {}

    def run() -> None:
        out["folds"] = cross_validate(slow, X, y, 4, seed=3, cluster=address)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while not any(client.processing().values()):
        assert time.monotonic() < deadline, "no fold started on the cluster"
        time.sleep(0.05)
    busy = next(addr for addr, tasks in client.processing().items() if tasks)
    pid = client.run(os.getpid, workers=[busy])[busy]
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert out["folds"] == expected
    client.wait_for_workers(2, timeout=60)  # the nanny brought it back


def test_an_unreachable_scheduler_is_one_config_error():
    X, y = frame(30)
    with pytest.raises(ConfigError, match="no Dask scheduler at tcp://127.0.0.1:9"):
        cross_validate(SlowRidge(delay=0.0), X, y, 2, seed=0, cluster="tcp://127.0.0.1:9")
