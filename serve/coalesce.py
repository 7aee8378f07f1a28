"""Concurrent single-patient predictions in one ONNX Runtime call.

A small graph costs ONNX Runtime about the same per call whatever the rows (per-node overhead):
on the diabetes model one row takes ~160 µs, sixteen rows ~16 µs each. Under load the event
loop holds several `POST /predict` requests at the same moment; `Coalescer.predict` queues each
request's rows and one callback runs them all in one call and hands each request its own slice.

When the call runs: on the loop's next turn, unless `awaited` says more requests are coming to
share the same group commit of the prediction log (serve.log, `ack`: as many as its last commit
held). Their answers wait for that commit anyway, so the call waits for them too, at most
`window_s` from the first queued request (the log's flush window, which then counts from the
same moment: `PredictionLog.record(rows, since)`). Without that, requests that trickle in from
their connections were predicted as they came, in calls of ~3 rows for a commit of 8
(docs/serving.md). A lone request waits for nothing: the log then expects one request.

Only for a model whose answers do not depend on the batch: `serve.model.batch_invariant` checks
that at load, bit for bit, or the service predicts every request alone (serve.service). A call
that fails is retried per request, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

Rows = list[tuple[Any, ...]]
Prediction = tuple[list[float], list[float] | None, list[float] | None]
MAX_ROWS = 32  # rows per coalesced call: the sizes serve.model.batch_invariant checks


class Coalescer:
    """Queues the rows of concurrent requests and predicts them in one call: on the loop's next
    turn, or once the requests `awaited()` counts have come (at most `window_s` after the first)."""

    def __init__(self, predict: Callable[[Rows], Prediction], max_rows: int = MAX_ROWS,
                 awaited: Callable[[], int] | None = None, window_s: float = 0.0) -> None:
        self._predict = predict
        self.max_rows = max_rows
        self._awaited = awaited
        self.window_s = window_s
        self._queue: list[tuple[Rows, asyncio.Future[Prediction]]] = []
        self._queued_rows = 0
        self._handle: asyncio.Handle | None = None  # the run scheduled (next turn or timer)
        self._soon = False  # that run is on the next turn (not a timer)
        self.calls = 0  # ORT calls made (what the coalescing saves: requests / calls)

    async def predict(self, rows: Rows) -> Prediction:
        loop = asyncio.get_running_loop()
        if self._queued_rows + len(rows) > self.max_rows:
            self._run()  # full: this request starts the next call
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append((rows, future))
        self._queued_rows += len(rows)
        if not self._soon:
            if (self._awaited is None or self.window_s <= 0
                    or len(self._queue) >= self._awaited()):
                if self._handle is not None:
                    self._handle.cancel()
                self._handle = loop.call_soon(self._run)
                self._soon = True
            elif self._handle is None:  # the first of a call that waits: at most a window
                self._handle = loop.call_later(self.window_s, self._run)
        return await future

    def _run(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._soon = None, False
        queue, self._queue, self._queued_rows = self._queue, [], 0
        if not queue:
            return  # emptied early by a full queue
        try:
            self.calls += 1
            parts = split(self._predict([r for rows, _ in queue for r in rows]),
                          [len(rows) for rows, _ in queue])
        except Exception:  # noqa: BLE001 - retried one request at a time below
            parts = None
        for i, (rows, future) in enumerate(queue):
            if future.cancelled():
                continue
            if parts is not None:
                future.set_result(parts[i])
                continue
            try:
                self.calls += 1
                future.set_result(self._predict(rows))
            except Exception as exc:  # noqa: BLE001 - that request's own failure
                future.set_exception(exc)


def split(prediction: Prediction, sizes: Sequence[int]) -> list[Prediction]:
    """One call's (values, lower, upper) cut back into each request's rows, in order."""
    values, lower, upper = prediction
    out: list[Prediction] = []
    start = 0
    for n in sizes:
        end = start + n
        out.append((values[start:end],
                    lower[start:end] if lower is not None else None,
                    upper[start:end] if upper is not None else None))
        start = end
    return out
