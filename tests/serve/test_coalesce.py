"""Coalesced predictions (serve/coalesce.py): concurrent requests share one call and each gets
its own rows back in order; a lone request is answered on the next loop turn; a full queue
starts a new call; a failed call is retried per request, so only the bad request fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve.coalesce import Coalescer, split

pytestmark = pytest.mark.timeout(60)


class Model:
    """Doubles each row's single value; the bounds are value ± 1; fails on a row of None."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, rows: list[tuple[Any, ...]]) -> Any:
        self.calls.append(len(rows))
        if any(r[0] is None for r in rows):
            raise ValueError("a None row")
        values = [2.0 * r[0] for r in rows]
        return values, [v - 1 for v in values], [v + 1 for v in values]


def test_concurrent_requests_share_one_call_in_order() -> None:
    model = Model()
    coalescer = Coalescer(model)

    async def main() -> list[Any]:
        return await asyncio.gather(*[coalescer.predict([(float(i),)] * (1 + i % 2))
                                      for i in range(6)])

    answers = asyncio.run(main())
    assert model.calls == [9] and coalescer.calls == 1
    for i, (values, lower, upper) in enumerate(answers):
        assert values == [2.0 * i] * (1 + i % 2)
        assert lower == [v - 1 for v in values] and upper == [v + 1 for v in values]


def test_a_lone_request_is_its_own_call() -> None:
    model = Model()
    coalescer = Coalescer(model)
    assert asyncio.run(coalescer.predict([(3.0,)])) == ([6.0], [5.0], [7.0])
    assert model.calls == [1]


def test_a_full_queue_starts_the_next_call() -> None:
    model = Model()
    coalescer = Coalescer(model, max_rows=4)

    async def main() -> list[Any]:
        return await asyncio.gather(*[coalescer.predict([(float(i),)]) for i in range(10)])

    answers = asyncio.run(main())
    assert [a[0] for a in answers] == [[2.0 * i] for i in range(10)]
    assert model.calls == [4, 4, 2]


def test_a_failed_call_fails_only_the_bad_request() -> None:
    model = Model()
    coalescer = Coalescer(model)

    async def main() -> list[Any]:
        rows = [[(1.0,)], [(None,)], [(2.0,)]]
        return await asyncio.gather(*[coalescer.predict(r) for r in rows],
                                    return_exceptions=True)

    good, bad, other = asyncio.run(main())
    assert good[0] == [2.0] and other[0] == [4.0]
    assert isinstance(bad, ValueError)
    assert model.calls == [3, 1, 1, 1]  # the shared call, then one per request


def test_split_cuts_each_output_by_the_request_sizes() -> None:
    parts = split(([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], None), [2, 1])
    assert parts == [([1.0, 2.0], [0.0, 1.0], None), ([3.0], [2.0], None)]


def test_the_call_waits_for_the_requests_the_log_awaits() -> None:
    """With `awaited` = 3, three requests arriving on separate loop turns share one call; the
    fourth starts the next, which runs alone once its window is over."""
    model = Model()
    coalescer = Coalescer(model, awaited=lambda: 3, window_s=0.05)

    async def one(i: int) -> Any:
        for _ in range(i):
            await asyncio.sleep(0)  # each request on its own turn of the loop
        return await coalescer.predict([(float(i),)])

    async def main() -> list[Any]:
        return await asyncio.gather(*[one(i) for i in range(4)])

    answers = asyncio.run(main())
    assert model.calls == [3, 1]
    assert [a[0] for a in answers] == [[0.0], [2.0], [4.0], [6.0]]


def test_a_call_waits_at_most_the_window() -> None:
    """Fewer requests than awaited: the call runs once the first has waited `window_s`."""
    model = Model()
    coalescer = Coalescer(model, awaited=lambda: 8, window_s=0.05)

    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        answers = await asyncio.gather(coalescer.predict([(1.0,)]), coalescer.predict([(2.0,)]))
        return answers, loop.time() - start

    answers, waited = asyncio.run(main())
    assert model.calls == [2]
    assert [a[0] for a in answers] == [[2.0], [4.0]]
    assert 0.04 <= waited < 2.0


def test_nothing_awaited_runs_on_the_next_turn() -> None:
    """`awaited` of 0 or 1 (the log expects this request alone, or `buffered`): no wait."""
    for awaited in (0, 1):
        model = Model()
        coalescer = Coalescer(model, awaited=lambda a=awaited: a, window_s=30.0)

        async def main(c: Coalescer = coalescer) -> Any:
            return await asyncio.wait_for(c.predict([(3.0,)]), 5.0)

        assert asyncio.run(main()) == ([6.0], [5.0], [7.0])
        assert model.calls == [1]
