"""Where fits run: local worker processes (joblib's loky backend) or a Dask cluster (futures of
a distributed.Client). Results come back in submission order whatever ran where, so the scores never
depend on the number of processes: every task is a pure function of its inputs (a cloned
estimator with a fixed seed, fixed row indices).

Threads: every task runs with one BLAS/OpenMP thread (threadpoolctl, wherever it runs) and
TensorFlow one intra-op thread (`medcast.models.mlp.seed_everything`), so n workers on n cores do
not oversubscribe them and a product sums in the same order in any process. Parallelism comes
from processes only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from medcast.errors import ConfigError


def n_workers(n_jobs: int | None) -> int:
    """The processes to use: n_jobs, or every core this process may run on (null)."""
    if n_jobs is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    return max(1, n_jobs)


@contextlib.contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A distributed.Client on the scheduler at `address` (tcp://host:8786), closed on exit."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("cluster: Dask is not installed (pip install 'medcast[pipeline]')") from None
    try:
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ConfigError(f"cluster: no Dask scheduler at {address}: {err}") from None
    try:
        yield client
    finally:
        client.close()


def one_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on one thread: BLAS and OpenMP limited to one, and joblib inside it sequential
    (a random forest's trees would otherwise run on the whole Dask cluster, where joblib's dask
    backend is the default inside a task, and be summed in another order). The same
    floating-point sums then happen in this process, a loky worker or a Dask worker."""
    from joblib import parallel_config
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), parallel_config(backend="sequential", n_jobs=1):
        return fn(*args)


def ordered(calls: Iterable[tuple[Callable[..., Any], tuple[Any, ...]]], n_jobs: int | None,
            cluster: str | None = None) -> Iterator[Any]:
    """Run `fn(*args)` for each call; yield the results in the calls' order as they become
    available. One process (n_jobs=1, no cluster) runs them here, one after the other; a
    consumer that stops early (an Optuna pruning) cancels what has not started."""
    from joblib import Parallel, delayed

    calls = list(calls)
    if cluster is None:
        tasks = [delayed(one_thread)(fn, *args) for fn, args in calls]
        jobs = n_workers(n_jobs)
        if jobs == 1 or len(tasks) <= 1:
            for task in tasks:
                fn, args, kwargs = task
                yield fn(*args, **kwargs)
            return
        yield from Parallel(n_jobs=min(jobs, len(tasks)), return_as="generator")(tasks)
        return
    with dask_client(cluster) as client:
        # Every task on the cluster at once, as a future this process holds until its result is
        # read: when a worker dies the scheduler reruns its tasks elsewhere (joblib's dask
        # backend could drop such a task as "already forgotten").
        futures = [client.submit(one_thread, fn, *args, pure=False) for fn, args in calls]
        try:
            for future in futures:
                yield future.result()
        finally:
            client.cancel(futures)  # a consumer that stopped early (a pruned trial)


def completed(calls: Iterable[tuple[Callable[..., Any], tuple[Any, ...]]], n_jobs: int | None,
              cluster: str | None = None) -> Iterator[tuple[int, Any]]:
    """Like ordered(), but yield (index of the call, result) as each finishes: a caller can
    report progress while keeping its own order (the results are the same wherever and in
    whatever order they ran)."""
    from joblib import Parallel, delayed

    calls = list(calls)
    if cluster is None:
        jobs = n_workers(n_jobs)
        if jobs == 1 or len(calls) <= 1:
            for i, (fn, args) in enumerate(calls):
                yield i, one_thread(fn, *args)
            return
        tasks = [delayed(_indexed)(i, fn, *args) for i, (fn, args) in enumerate(calls)]
        yield from Parallel(n_jobs=min(jobs, len(tasks)), return_as="generator_unordered")(tasks)
        return
    from distributed import as_completed

    with dask_client(cluster) as client:
        futures = {client.submit(one_thread, fn, *args, pure=False): i
                   for i, (fn, args) in enumerate(calls)}
        try:
            for future in as_completed(list(futures)):
                yield futures[future], future.result()
        finally:
            client.cancel(list(futures))


def _indexed(i: int, fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    return i, one_thread(fn, *args)
