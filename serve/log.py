"""The prediction log's write path: an in-memory buffer flushed off the request path.

A request appends its rows with `offer()` *before* its response is sent; a background task
writes them every `flush_ms` in one transaction per chunk (executemany). The guarantees:

- no 2xx without its rows in the buffer: when the buffer is full `offer()` refuses and the
  request gets a 503 instead of a prediction;
- a failed write keeps its rows and is retried with exponential backoff (counted), and the
  insert skips rows that already exist, so a retry after a lost commit acknowledgement does not
  duplicate anything;
- `stop()` drains the buffer with a bounded wait and reports how many rows it could not write.

What is lost: rows buffered when the process is killed hard (SIGKILL, OOM) — at most one flush
interval's worth while the database is up. Patient data never reaches the application log.
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


class LogFigures(Protocol):
    """Where the log reports its figures as they change (serve.metrics.Metrics)."""

    def buffered(self, rows: int) -> None:
        """`rows` entered (> 0) or left (< 0) the buffer."""

    def written(self, rows: int) -> None: ...

    def retried(self) -> None: ...

    def rejected(self, rows: int) -> None: ...


class _NoFigures:
    def buffered(self, rows: int) -> None:
        pass

    def written(self, rows: int) -> None:
        pass

    def retried(self) -> None:
        pass

    def rejected(self, rows: int) -> None:
        pass


def _reason(exc: BaseException) -> str:
    # First line only: driver messages can carry a statement; parameters are hidden by the engine.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"


class PredictionLog:
    """Rows (serve.db.LogRow) buffered by requests and written by one background task."""

    def __init__(
        self,
        write: Callable[[list[Any]], Any],
        prepare: Callable[[], Any] | None = None,
        *,
        max_rows: int = 10_000,
        flush_s: float = 0.02,
        chunk_rows: int = 5_000,
        retry_max_s: float = 2.0,
        figures: LogFigures | None = None,
    ) -> None:
        self._write = write
        self._prepare = prepare
        self.max_rows = max_rows
        self.flush_s = flush_s
        self.chunk_rows = chunk_rows
        self.retry_max_s = retry_max_s
        self.figures: LogFigures = figures or _NoFigures()
        self._buf: list[Any] = []
        self._inflight: list[Any] = []
        self._prepared = prepare is None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # this process's own figures (its log messages, /health/ready); /metrics gets `figures`
        self.rows_written = 0
        self.retries = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None

    # ---- request side (event loop thread only) --------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._buf) + len(self._inflight)

    @property
    def prepared(self) -> bool:
        return self._prepared

    def offer(self, rows: list[Any]) -> bool:
        """Buffer rows; False (nothing buffered) when they do not fit or the log is stopping."""
        if self._stopping or self.depth + len(rows) > self.max_rows:
            self.rejected += len(rows)
            self.figures.rejected(len(rows))
            return False
        self._buf.extend(rows)
        self.figures.buffered(len(rows))
        return True

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
        if self._task is None:
            return self.depth
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        left = self.depth
        if left:
            logger.error(
                "prediction log: %d rows could not be written before shutdown (%s)",
                left, self.last_error or "timeout",
            )
        return left

    def _recovered(self) -> None:
        if self.failing_since is not None:
            logger.warning(
                "prediction log: database back after %.1f s (%d retries so far)",
                time.time() - self.failing_since, self.retries,
            )
            self.failing_since = None
            self.last_error = None

    async def _run(self) -> None:
        delay = self.flush_s
        backoff = self.flush_s
        while True:
            if self._stopping and not self.depth:
                return
            if delay > 0:
                # stop() wakes the flusher at once instead of after the interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
            else:
                await asyncio.sleep(0)
            try:
                if not self._prepared:
                    await asyncio.to_thread(self._prepare)  # type: ignore[arg-type]
                    self._prepared = True
                    self._recovered()
                if not self._inflight:
                    if not self._buf:
                        delay = self.flush_s
                        continue
                    if len(self._buf) <= self.chunk_rows:
                        self._inflight, self._buf = self._buf, []
                    else:
                        self._inflight = self._buf[: self.chunk_rows]
                        del self._buf[: self.chunk_rows]
                await asyncio.to_thread(self._write, self._inflight)
            except Exception as exc:  # noqa: BLE001 - the database is down or refusing: retry
                self.retries += 1
                self.figures.retried()
                self.last_error = _reason(exc)
                if self.failing_since is None:
                    self.failing_since = time.time()
                    logger.warning(
                        "prediction log: write failed, keeping %d rows and retrying (%s)",
                        self.depth, self.last_error,
                    )
                backoff = min(self.retry_max_s, max(self.flush_s, backoff * 2))
                delay = backoff
                continue
            if self._inflight:
                written = len(self._inflight)
                self.rows_written += written
                self._inflight = []
                self.figures.buffered(-written)
                self.figures.written(written)
            self._recovered()
            backoff = self.flush_s
            # Catch up without sleeping while a backlog remains.
            delay = 0 if len(self._buf) >= self.chunk_rows else self.flush_s
