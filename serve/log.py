"""The prediction log's write path: requests hand their rows to a buffer; one background task
writes them in group commits (one transaction per flush, executemany/COPY).

Two durabilities (MEDCAST_LOG_DURABILITY):

- `ack` (the default): `record()` returns only once the transaction holding the request's rows
  has committed, so a 2xx is never sent for a row that is not in the database, whatever happens
  to the process afterwards (SIGKILL, OOM). Requests that arrive together share one commit: a
  flush starts when `chunk_rows` rows wait, when as many requests wait as the last commit held,
  or when the oldest has waited `window_s` (rows arriving during a write form the next batch; a
  request alone is written at once, the window costs only concurrent requests). When no commit
  comes within `ack_timeout_s` (the database is down or too slow) `record()` gives a reason
  and the request answers 503, and its rows are withdrawn: never written, never retried. If a
  write holds them at that moment, that write decides (committed: the request is answered
  normally), for at most another `ack_timeout_s`; a write still running then (a hung
  connection), or a commit whose acknowledgement was lost, may put the row of a request
  answered 503 in the log: a row without a 2xx is possible, a 2xx without a row is not.
- `buffered`: `record()` returns as soon as the rows are in the buffer; they are written at most
  one window (20 ms by default) later. A hard kill loses what was still buffered.

Both: a full buffer (`max_rows`) refuses rows (503) rather than drop them; a failed write keeps
its rows and is retried with exponential backoff (counted), and the insert skips rows that
already exist, so a retry after a lost commit acknowledgement duplicates nothing; after a
failure the writer probes the database (even with nothing to write) and `failing` stays true
until a write or probe succeeds (readiness); `stop()` drains the buffer with a bounded wait and
reports how many rows it could not write. Patient data never reaches the application log.
Every change of its figures (rows buffered, written, refused, failed writes) is reported as it
happens to a `LogFigures` (the service's metrics), so several processes can be summed exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger("medcast.serve.log")

BUFFER_FULL = "prediction log buffer is full; retry later"
STOPPING = "the service is stopping; retry later"


class LogFigures(Protocol):
    """Where the log reports its figures as they change (serve.prometheus.Metrics)."""

    def buffered(self, rows: int) -> None:
        """`rows` entered (> 0) or left (< 0) the buffer."""

    def written(self, rows: int) -> None:
        """One transaction of `rows` rows committed."""

    def retried(self) -> None: ...

    def rejected(self, rows: int) -> None: ...


class _NoFigures(LogFigures):
    """Figures nobody reads (the Protocol's methods do nothing)."""


def _reason(exc: BaseException) -> str:
    # First line only: driver messages can carry a statement; parameters are hidden by the engine.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"


class _Group:
    """One request's rows and, in `ack` mode, the future its request awaits."""

    __slots__ = ("at", "fut", "late", "rows", "timer", "withdrawn", "writing")

    def __init__(self, rows: list[Any], fut: asyncio.Future[str | None] | None,
                 at: float) -> None:
        self.rows, self.fut, self.at = rows, fut, at
        self.writing = False  # inside a write attempt now
        self.late = False  # its wait ran out during a write attempt: that attempt decides
        self.withdrawn = False  # its request was answered 503: never (re)try it
        self.timer: asyncio.TimerHandle | None = None


class PredictionLog:
    """Rows (serve.db.LogRow) recorded by requests and written by one background task."""

    def __init__(
        self,
        write: Callable[[list[Any]], Any],
        prepare: Callable[[], Any] | None = None,
        *,
        durability: str = "ack",
        max_rows: int = 10_000,
        window_s: float = 0.0,
        chunk_rows: int = 5_000,
        ack_timeout_s: float = 2.0,
        retry_max_s: float = 2.0,
        probe: Callable[[], Any] | None = None,
        figures: LogFigures | None = None,
    ) -> None:
        if durability not in ("ack", "buffered"):
            raise ValueError(f"durability {durability!r}: expected 'ack' or 'buffered'")
        self._write = write
        self._prepare = prepare
        self._probe = probe
        self.ack = durability == "ack"
        self.durability = durability
        self.max_rows = max_rows
        self.window_s = window_s
        self.chunk_rows = chunk_rows
        self.ack_timeout_s = ack_timeout_s
        self.retry_max_s = retry_max_s
        self.figures: LogFigures = figures or _NoFigures()
        self._buf: list[_Group] = []  # waiting, oldest first (withdrawn ones skipped at take)
        self._writing: list[_Group] = []  # the batch of the write under way
        self._depth = 0  # rows waiting or being written, withdrawn ones excluded
        self._expect = 1  # requests in the last commit: `ack` waits (≤ window) for as many
        self._prepared = prepare is None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # first row, a full batch, or stop
        self._stop = asyncio.Event()
        # this process's own figures (its log messages, /health/ready); /metrics gets `figures`
        self.rows_written = 0
        self.last_ok = 0.0  # time.monotonic() of the last write or probe that succeeded
        self.commits = 0
        self.retries = 0
        self.rejected = 0
        self.timeouts = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None

    # ---- request side (event loop thread only) --------------------------------------------------

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def prepared(self) -> bool:
        return self._prepared

    @property
    def failing(self) -> bool:
        """The last write (or probe) failed and none has succeeded since."""
        return self.failing_since is not None

    def _refuse(self, n: int) -> None:
        self.rejected += n
        self.figures.rejected(n)

    def awaited(self) -> int:
        """Requests the next commit still waits for (serve.coalesce waits for them too)."""
        return self._expect - len(self._buf) if self.ack else 0

    def _enqueue(self, rows: list[Any], fut: asyncio.Future[str | None] | None,
                 since: float | None = None) -> _Group | None:
        if self._stopping or self._depth + len(rows) > self.max_rows:
            self._refuse(len(rows))
            return None
        group = _Group(rows, fut, time.monotonic() if since is None else since)
        if (not self._buf or self._depth + len(rows) >= self.chunk_rows
                or len(self._buf) + 1 == self._expect):
            self._wake.set()  # the first row starts the window; a full batch ends it
        self._buf.append(group)
        self._depth += len(rows)
        self.figures.buffered(len(rows))
        return group

    async def record(self, rows: list[Any], since: float | None = None) -> str | None:
        """None once the rows are committed (`ack`) or buffered (`buffered`); otherwise why not,
        for a 503: the buffer is full, or no commit came within `ack_timeout_s`. The window
        counts from `since` (monotonic) when given: its model call waited first (serve.coalesce)."""
        if not self.ack:
            return None if self._enqueue(rows, None, since) is not None else self._refusal()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str | None] = loop.create_future()
        group = self._enqueue(rows, fut, since)
        if group is None:
            return self._refusal()
        group.timer = loop.call_later(self.ack_timeout_s, self._expire, group)
        try:
            return await fut  # None: committed; else the reason (set by the writer or _expire)
        finally:
            group.timer.cancel()

    def _refusal(self) -> str:
        return STOPPING if self._stopping else BUFFER_FULL

    def _timed_out(self) -> str:
        return (f"prediction log: no commit within {self.ack_timeout_s * 1000:g} ms "
                f"({self.last_error or 'database slow'}); retry later")

    def _expire(self, group: _Group) -> None:
        """The wait of `group`'s request ran out."""
        fut = group.fut
        if fut is None or fut.done():
            return
        if group.writing and not group.late:
            # A write holds its rows: let it decide, within a second wait (a hung connection).
            group.late = True
            group.timer = asyncio.get_running_loop().call_later(
                self.ack_timeout_s, self._expire, group)
            return
        self._answer_503(group)

    def _answer_503(self, group: _Group) -> None:
        self.timeouts += 1
        self._withdraw(group)
        if group.fut is not None and not group.fut.done():
            group.fut.set_result(self._timed_out())

    def _withdraw(self, group: _Group) -> None:
        """Its request answers 503: do not write it unless a write holds it already."""
        if group.withdrawn:
            return
        group.withdrawn = True
        if not group.writing:  # a write holding it settles it (written, or dropped on failure)
            self._drop(group)

    def _drop(self, group: _Group) -> None:
        """Rows of a withdrawn group leave the buffer unwritten (refused)."""
        self._depth -= len(group.rows)
        self.figures.buffered(-len(group.rows))
        self._refuse(len(group.rows))

    # ---- background task ----------------------------------------------------------------------

    async def prepare_now(self) -> str | None:
        """One attempt at `prepare` (migrations) now; the reason it failed, or None."""
        if self._prepared:
            return None
        try:
            await asyncio.to_thread(self._prepare)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - reported; the flusher keeps retrying
            self.last_error = _reason(exc)
            self.failing_since = time.time()
            return self.last_error
        self._prepared = True
        return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")

    async def stop(self, timeout_s: float) -> int:
        """Stop taking rows, write what is buffered (bounded); return rows left unwritten."""
        self._stopping = True
        self._wake.set()
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        left = self._depth
        # Waiting requests (ack) learn it now: those buffered and those of a write left under
        # way (its thread may still commit: a row without a 2xx, never the reverse).
        for group in [*self._writing, *self._buf]:
            if group.fut is not None and not group.fut.done():
                group.fut.set_result("prediction log: the service stopped before the commit")
        self._buf = []
        if left:
            logger.error("prediction log: %d rows could not be written before shutdown (%s)",
                         left, self.last_error or "timeout")
        return left

    def _recovered(self) -> None:
        self.last_ok = time.monotonic()
        if self.failing_since is not None:
            logger.warning("prediction log: database back after %.1f s (%d retries so far)",
                           time.time() - self.failing_since, self.retries)
            self.failing_since = None
            self.last_error = None

    def _failed(self, exc: BaseException) -> None:
        self.retries += 1
        self.figures.retried()
        self.last_error = _reason(exc)
        if self.failing_since is None:
            self.failing_since = time.time()
            logger.warning("prediction log: write failed, keeping %d rows and retrying (%s)",
                           self._depth, self.last_error)

    def _take(self) -> list[_Group]:
        """The oldest waiting groups, up to `chunk_rows` rows (at least one group)."""
        batch: list[_Group] = []
        n = taken = 0
        for g in self._buf:
            if not g.withdrawn:
                if batch and n + len(g.rows) > self.chunk_rows:
                    break
                batch.append(g)
                n += len(g.rows)
            taken += 1  # withdrawn groups before the cut leave with the batch
        del self._buf[:taken]
        return batch

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by stop() only (a retry backoff: new rows do not hurry it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _grow(self, backoff: float) -> float:
        return min(self.retry_max_s, max(self.window_s, 0.01, backoff * 2))

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                if self._stopping:  # draining: retry soon, bounded by stop()'s timeout
                    await asyncio.sleep(min(backoff, 0.1))
                else:
                    await self._pause(backoff)
            if not self._buf:
                if self._stopping:
                    return
                backoff = await self._idle(backoff)
                continue
            if not self._stopping and self._depth < self.chunk_rows:
                await self._gather()
            batch = self._take()
            if not batch:
                continue
            backoff = 0.0 if await self._commit(batch) else self._grow(backoff)

    async def _idle(self, backoff: float) -> float:
        """Nothing to write: prepare the schema, or probe the database while readiness waits
        for it, then wait for rows. Returns the next backoff."""
        check = self._prepare if not self._prepared else self._probe if self.failing else None
        if check is not None:
            try:
                await asyncio.to_thread(check)
            except Exception as exc:  # noqa: BLE001 - still down
                self._failed(exc)
                return self._grow(backoff)
            self._prepared = True
            self._recovered()
            backoff = 0.0
        self._wake.clear()
        if not self._buf:
            await self._wake.wait()
        return backoff

    async def _gather(self) -> None:
        """Group commit: take along the rows of requests the event loop is already handling
        (free when alone), then let the batch fill until its oldest row has waited a window;
        `ack` waits only for as many requests as the last commit held (alone: written at once)."""
        seen = -1
        while seen != self._depth < self.chunk_rows:
            seen = self._depth
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        delay = self._buf[0].at + self.window_s - time.monotonic()
        if delay > 0 and (not self.ack or len(self._buf) < self._expect):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _commit(self, batch: list[_Group]) -> bool:
        """Write `batch` in one transaction and answer its waiters; on failure put back what is
        still wanted (answering withdrawn and timed-out groups) and return False."""
        rows = [r for g in batch for r in g.rows] if len(batch) > 1 else batch[0].rows
        for g in batch:
            g.writing = True
        self._writing = batch
        try:
            if not self._prepared:
                await asyncio.to_thread(self._prepare)  # type: ignore[arg-type]
                self._prepared = True
            await asyncio.to_thread(self._write, rows)
        except Exception as exc:  # noqa: BLE001 - the database is down or refusing: retry
            self._writing = []
            self._failed(exc)
            keep = []
            for g in batch:
                g.writing = False
                if g.withdrawn:  # answered 503 during the attempt: drop it now
                    self._drop(g)
                elif g.late:  # its wait ran out during this attempt, which failed: 503
                    self._answer_503(g)
                else:
                    keep.append(g)
            self._buf[:0] = keep
            return False
        self._writing = []
        n = len(rows)
        self.rows_written += n
        self.commits += 1
        self._depth -= n
        self.figures.buffered(-n)
        self.figures.written(n)
        for g in batch:
            g.writing = False
            if g.fut is not None and not g.fut.done():
                g.fut.set_result(None)
        self._expect = len(batch)
        self._recovered()
        return True
