"""Per-client rate limiting through Litestar's `RateLimitConfig`, with an O(1) counter shared by
every route of the app.

Litestar's stock middleware keeps every request timestamp of the window per client, JSON-encoded
in a store, behind one lock: at a few thousand requests/s a window holds thousands of entries
that are decoded and re-encoded on every request. Here `RateCounter` keeps a fixed-window count
per client in process memory — the same limit, the same `RateLimit-*` headers, plus
`Retry-After` on 429. Like the default in-memory store, the limit is per process.

One counter per app: Litestar builds a middleware instance per route, so the counts live in the
config (`SharedRateLimitConfig.counter`), not the instance — a client's budget is spent by every
limited route together (each route had counted its own budget before). The hot path of
`POST /predict` (serve.hotpath) takes from the same counter.

A client is the name behind the request's valid X-API-Key when client keys are on
(MEDCAST_CLIENTS_FILE; an auditor's name too): clients behind one proxy or NAT do not share a
budget. Requests without a valid key (and every request when keys are off) count per client IP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import (
    DURATION_VALUES,
    DurationUnit,
    RateLimitConfig,
    RateLimitMiddleware,
)

from serve.service import caller_of

Headers = list[tuple[bytes, bytes]]


class RateCounter:
    """A fixed window of `max_requests` per `unit` per client."""

    def __init__(self, unit: DurationUnit, max_requests: int) -> None:
        self.unit = unit
        self.max_requests = max_requests
        self.window = DURATION_VALUES[unit]
        policy = f"{max_requests}; w={self.window}"
        self._constant = [(b"ratelimit-policy", policy.encode()),
                          (b"ratelimit-limit", str(max_requests).encode())]
        self.counters: dict[str, list[int]] = {}  # client → [count, window end]
        self.last_sweep = 0

    def take(self, scope: Any) -> tuple[bool, Headers]:
        """Count one request of the scope's client: (allowed, the RateLimit-* headers to send;
        on refusal also Retry-After). A refused request is not counted."""
        caller = caller_of(scope)
        if caller is not None:
            key = f"key:{caller.name}"  # never equal to an IP address
        else:
            client = scope.get("client")
            key = client[0] if client else "127.0.0.1"
        now = int(time.time())
        entry = self.counters.get(key)
        if entry is None or entry[1] <= now:
            if now - self.last_sweep > self.window:  # forget idle clients
                self.counters = {k: v for k, v in self.counters.items() if v[1] > now}
                self.last_sweep = now
            entry = self.counters[key] = [0, now + self.window]
        reset = str(max(entry[1] - now, 0)).encode()
        allowed = entry[0] < self.max_requests
        if allowed:
            entry[0] += 1
        headers = [
            *self._constant,
            (b"ratelimit-remaining", str(self.max_requests - entry[0]).encode()),
            (b"ratelimit-reset", reset),
        ]
        if not allowed:
            headers.append((b"retry-after", reset if reset != b"0" else b"1"))
        return allowed, headers


class CountingRateLimitMiddleware(RateLimitMiddleware):
    def __init__(self, app: Any, config: SharedRateLimitConfig) -> None:
        super().__init__(app, config)
        self.counter = config.counter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        allowed, headers = self.counter.take(scope)
        if not allowed:
            raise TooManyRequestsException(
                detail=f"rate limit of {self.counter.max_requests} requests per "
                       f"{self.counter.unit} exceeded",
                headers={name.decode(): value.decode() for name, value in headers},
            )

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class SharedRateLimitConfig(RateLimitConfig):
    """Litestar's config, holding the app's one counter."""

    counter: RateCounter = field(default=None)  # type: ignore[assignment] # set in __post_init__

    def __post_init__(self) -> None:
        super().__post_init__()
        self.counter = RateCounter(*self.rate_limit)


def rate_limit_config(limit: tuple[Any, int], exclude: list[str]) -> SharedRateLimitConfig:
    return SharedRateLimitConfig(
        rate_limit=limit, exclude=exclude, middleware_class=CountingRateLimitMiddleware
    )
