"""The prediction log's writer (serve/log.py) on its own: group commit, the bounded wait for a
commit, retries, withdrawal of rows whose request answered 503, readiness after a failure.

The database is a fake `write` that runs in the writer's worker thread as a real one would;
each test runs one event loop (asyncio.run) and is bounded by pytest-timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from serve.log import BUFFER_FULL, STOPPING, PredictionLog

pytestmark = pytest.mark.timeout(30)


class FakeDb:
    """Records every write (a list of rows) that committed; `failures` writes raise first;
    `gate`, when set, holds every write until it is opened."""

    def __init__(self, failures: int = 0) -> None:
        self.commits: list[list[Any]] = []
        self.attempts = 0
        self.failures = failures
        self.down = False
        self.gate: threading.Event | None = None
        self.probes = 0

    def write(self, rows: list[Any]) -> None:
        self.attempts += 1
        if self.gate is not None:
            assert self.gate.wait(10), "gate never opened"
        if self.down or self.failures:
            self.failures = max(0, self.failures - 1)
            raise ConnectionError("server closed the connection unexpectedly")
        self.commits.append(list(rows))

    def probe(self) -> None:
        self.probes += 1
        if self.down:
            raise ConnectionError("connection refused")

    @property
    def rows(self) -> list[Any]:
        return [r for c in self.commits for r in c]


def run(make: Callable[[], PredictionLog], body: Callable[[PredictionLog], Awaitable[None]]
        ) -> PredictionLog:
    async def main() -> PredictionLog:
        log = make()
        log.start()
        try:
            await body(log)
        finally:
            await log.stop(2)
        return log

    return asyncio.run(main())


async def until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def test_requests_arriving_together_share_one_commit_and_all_return_after_it() -> None:
    db = FakeDb()

    async def body(log: PredictionLog) -> None:
        results = await asyncio.gather(*[log.record([f"r{i}"]) for i in range(20)])
        assert results == [None] * 20

    log = run(lambda: PredictionLog(db.write, window_s=0.05, probe=db.probe), body)
    assert len(db.commits) == 1 and sorted(db.rows) == sorted(f"r{i}" for i in range(20))
    assert log.rows_written == 20 and log.commits == 1 and log.depth == 0


def test_ack_alone_is_written_at_once_and_the_window_waits_for_as_many_as_last_time() -> None:
    db = FakeDb()

    async def staggered(i: int) -> str | None:
        await asyncio.sleep(0.02 * i)
        return await log_.record([f"b{i}"])

    async def body(log: PredictionLog) -> None:
        t0 = time.monotonic()
        assert await log.record(["alone"]) is None  # the window is 5 s: not waited for
        assert time.monotonic() - t0 < 2
        assert await asyncio.gather(*[log.record([f"a{i}"]) for i in range(4)]) == [None] * 4
        # The last commit held 4 requests: the next flush waits (≤ the window) for 4, which
        # arrive 20 ms apart, and writes them together.
        t0 = time.monotonic()
        assert await asyncio.gather(*[staggered(i) for i in range(4)]) == [None] * 4
        assert time.monotonic() - t0 < 2

    log_ = PredictionLog(db.write, window_s=5)

    async def main() -> None:
        log_.start()
        try:
            await body(log_)
        finally:
            await log_.stop(2)

    asyncio.run(main())
    assert [len(c) for c in db.commits] == [1, 4, 4]


def test_awaited_counts_the_requests_the_next_commit_expects_and_since_starts_its_window(
) -> None:
    """`awaited()` is what the coalescer (serve.coalesce) waits for: as many requests as the last
    commit held, less those buffered; none in `buffered`. A group recorded with `since` in the
    past has waited that long already: its window has run out, so it is written at once."""
    db = FakeDb()

    async def body(log: PredictionLog) -> None:
        assert log.awaited() == 1
        assert await asyncio.gather(*[log.record([f"a{i}"]) for i in range(4)]) == [None] * 4
        assert log.awaited() == 4
        t0 = time.monotonic()
        # The log now waits (≤ its 5 s window) for 4 requests; this one says it has been
        # waiting for 10 s already (for its prediction's call): written alone, at once.
        assert await log.record(["late"], since=t0 - 10) is None
        assert time.monotonic() - t0 < 2

    run(lambda: PredictionLog(db.write, window_s=5), body)
    assert [len(c) for c in db.commits] == [4, 1]
    assert PredictionLog(db.write, durability="buffered").awaited() == 0


def test_ack_returns_only_once_the_commit_is_done() -> None:
    db = FakeDb()
    db.gate = threading.Event()

    async def body(log: PredictionLog) -> None:
        task = asyncio.create_task(log.record(["a", "b"]))
        await until(lambda: db.attempts == 1)
        await asyncio.sleep(0.1)
        assert not task.done() and db.commits == []  # the write is held: no answer yet
        db.gate.set()  # type: ignore[union-attr]
        assert await task is None
        assert db.commits == [["a", "b"]]

    run(lambda: PredictionLog(db.write), body)


def test_a_full_batch_flushes_before_the_window() -> None:
    db = FakeDb()

    async def body(log: PredictionLog) -> None:
        t0 = time.monotonic()
        assert await log.record(list(range(5))) is None
        assert time.monotonic() - t0 < 5  # the window is 30 s

    run(lambda: PredictionLog(db.write, window_s=30, chunk_rows=5), body)
    assert db.commits == [[0, 1, 2, 3, 4]]


def test_a_request_rows_stay_in_one_transaction_of_at_most_chunk_rows() -> None:
    db = FakeDb()

    async def body(log: PredictionLog) -> None:
        groups = [[f"{g}.{i}" for i in range(3)] for g in range(4)]
        assert await asyncio.gather(*[log.record(g) for g in groups]) == [None] * 4

    run(lambda: PredictionLog(db.write, window_s=0.05, chunk_rows=7), body)
    assert [len(c) for c in db.commits] == [6, 6]  # 3 + 3 ≤ 7; a third group would not fit
    for commit in db.commits:  # every request's rows are together in one commit
        assert len({r.split(".")[0] for r in commit}) * 3 == len(commit)


def test_a_failed_write_is_retried_and_its_waiters_answered_once_it_commits() -> None:
    db = FakeDb(failures=2)

    async def body(log: PredictionLog) -> None:
        assert await asyncio.gather(log.record(["x"]), log.record(["y"])) == [None, None]

    log = run(lambda: PredictionLog(db.write, ack_timeout_s=10, retry_max_s=0.05), body)
    assert db.attempts == 3 and log.retries == 2 and sorted(db.rows) == ["x", "y"]
    assert not log.failing and log.last_error is None


def test_no_commit_in_time_answers_a_reason_and_the_rows_are_never_written() -> None:
    db = FakeDb()
    db.down = True

    async def body(log: PredictionLog) -> None:
        t0 = time.monotonic()
        reason = await log.record(["lost-cause"])
        waited = time.monotonic() - t0
        assert reason is not None and "no commit within 200 ms" in reason
        assert "ConnectionError" in reason and 0.15 < waited < 2
        assert log.failing and log.depth == 0 and log.rejected == 1
        db.down = False  # the database returns: the withdrawn row is not written
        assert await log.record(["next"]) is None

    run(lambda: PredictionLog(db.write, ack_timeout_s=0.2, retry_max_s=0.02, probe=db.probe),
        body)
    assert db.rows == ["next"]


def test_a_wait_that_runs_out_during_a_write_takes_that_writes_outcome() -> None:
    """The write holding the rows when the wait runs out decides: it commits a moment
    later, so the request is answered normally (no 503 for a row that is in the log)."""
    db = FakeDb()
    db.gate = threading.Event()

    async def body(log: PredictionLog) -> None:
        task = asyncio.create_task(log.record(["slow"]))
        await until(lambda: db.attempts == 1)
        await asyncio.sleep(0.15)  # past the 100 ms wait, within the second one
        assert not task.done()
        db.gate.set()  # type: ignore[union-attr]
        assert await task is None

    log = run(lambda: PredictionLog(db.write, ack_timeout_s=0.1), body)
    assert db.rows == ["slow"] and log.timeouts == 0


def test_a_write_hung_past_both_waits_answers_503_and_its_row_may_be_written_later() -> None:
    """The documented case of a row without a 2xx: the request answered 503 (after twice the
    wait), but the hung write holding its row went on and committed."""
    db = FakeDb()
    db.gate = threading.Event()

    async def body(log: PredictionLog) -> None:
        t0 = time.monotonic()
        reason = await log.record(["late"])
        assert reason is not None and "no commit within 100 ms" in reason
        assert 0.18 < time.monotonic() - t0 < 2
        db.gate.set()  # type: ignore[union-attr]
        await until(lambda: db.rows == ["late"])

    log = run(lambda: PredictionLog(db.write, ack_timeout_s=0.1), body)
    assert log.depth == 0 and log.timeouts == 1


def test_a_row_withdrawn_during_a_failing_write_is_not_retried() -> None:
    db = FakeDb()
    db.gate = threading.Event()
    db.down = True

    async def body(log: PredictionLog) -> None:
        reason = await log.record(["gone"])  # 2 × 0.1 s: the attempt is still held
        assert reason is not None and not log.failing
        db.gate.set()  # type: ignore[union-attr]
        await until(lambda: log.failing)  # the attempt failed: "gone" is dropped, not retried
        db.down = False
        await until(lambda: not log.failing)  # a probe, not a write, saw the database back
        assert log.depth == 0

    run(lambda: PredictionLog(db.write, ack_timeout_s=0.1, retry_max_s=0.02, probe=db.probe),
        body)
    assert db.rows == [] and db.attempts == 1


def test_failing_until_a_probe_succeeds_even_with_nothing_to_write() -> None:
    db = FakeDb()
    db.down = True

    async def body(log: PredictionLog) -> None:
        assert await log.record(["r"]) is not None
        assert log.failing
        await asyncio.sleep(0.1)
        assert log.failing and db.probes >= 1  # probed, still down
        db.down = False
        await until(lambda: not log.failing)

    run(lambda: PredictionLog(db.write, ack_timeout_s=0.05, retry_max_s=0.02, probe=db.probe),
        body)


def test_buffered_returns_before_the_write_and_a_full_buffer_refuses() -> None:
    db = FakeDb()
    db.gate = threading.Event()

    async def body(log: PredictionLog) -> None:
        assert await log.record(["a", "b"]) is None  # the write is held, yet answered
        assert db.commits == [] and log.depth == 2
        assert await log.record(["c", "d"]) == BUFFER_FULL  # max_rows 3
        assert await log.record(["c"]) is None and await log.record(["d"]) == BUFFER_FULL
        db.gate.set()  # type: ignore[union-attr]
        await until(lambda: log.depth == 0)

    log = run(lambda: PredictionLog(db.write, durability="buffered", max_rows=3,
                                    window_s=0.001), body)
    assert sorted(db.rows) == ["a", "b", "c"] and log.rejected == 3


def test_stop_answers_the_requests_still_waiting() -> None:
    db = FakeDb()
    db.down = True

    async def main() -> None:
        log = PredictionLog(db.write, ack_timeout_s=30, retry_max_s=0.02)
        log.start()
        task = asyncio.create_task(log.record(["r"]))
        await until(lambda: db.attempts >= 1)
        assert await log.stop(0.2) == 1
        reason = await asyncio.wait_for(task, 2)
        assert reason is not None and "stopped before the commit" in reason
        assert await log.record(["after"]) == STOPPING

    asyncio.run(main())


def test_stop_answers_a_request_whose_write_is_still_under_way() -> None:
    """stop() runs out of time during a write (a hung database): the task is cancelled, and the
    request in that write is answered at once, not at its ack timeout (seen under load in CI)."""
    db = FakeDb()
    db.gate = threading.Event()

    async def main() -> None:
        log = PredictionLog(db.write, ack_timeout_s=30)
        log.start()
        task = asyncio.create_task(log.record(["r"]))
        await until(lambda: db.attempts >= 1)  # the write holds the row, blocked
        assert await log.stop(0.2) == 1
        reason = await asyncio.wait_for(task, 2)
        assert reason is not None and "stopped before the commit" in reason

    try:
        asyncio.run(main())
    finally:
        db.gate.set()  # let the write's thread finish


def test_unknown_durability_is_refused() -> None:
    with pytest.raises(ValueError, match="durability 'sometimes'"):
        PredictionLog(lambda rows: None, durability="sometimes")
