"""Per-client rate limiting through Litestar's `RateLimitConfig`, with an O(1) counter.

Litestar's stock middleware keeps every request timestamp of the window per client, JSON-encoded
in a store, behind one lock: at a few thousand requests/s a window holds thousands of entries
that are decoded and re-encoded on every request. This subclass (plugged in with
`RateLimitConfig.middleware_class`) keeps a fixed-window counter per client in process memory —
the same limit, the same `RateLimit-*` headers, plus `Retry-After` on 429. Like the default
in-memory store, the limit is per process.

A client is the name behind the request's valid X-API-Key when client keys are on
(MEDCAST_CLIENTS_FILE; an auditor's name too): clients behind one proxy or NAT do not share a
budget. Requests without a valid key (and every request when keys are off) count per client IP.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import (
    DURATION_VALUES,
    RateLimitConfig,
    RateLimitMiddleware,
)

from serve.service import caller_of


class CountingRateLimitMiddleware(RateLimitMiddleware):
    def __init__(self, app: Any, config: RateLimitConfig) -> None:
        super().__init__(app, config)
        self.window = DURATION_VALUES[self.unit]
        self.policy = f"{self.max_requests}; w={self.window}"
        self.counters: dict[str, list[int]] = {}  # client → [count, window end]
        self.last_sweep = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
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
        reset = str(max(entry[1] - now, 0))
        if entry[0] >= self.max_requests:
            raise TooManyRequestsException(
                detail=f"rate limit of {self.max_requests} requests per {self.unit} exceeded",
                headers={
                    "RateLimit-Policy": self.policy,
                    "RateLimit-Limit": str(self.max_requests),
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": reset,
                    "Retry-After": reset if reset != "0" else "1",
                },
            )
        entry[0] += 1
        remaining = str(self.max_requests - entry[0])
        limit = str(self.max_requests)
        headers = [
            (b"ratelimit-policy", self.policy.encode()),
            (b"ratelimit-limit", limit.encode()),
            (b"ratelimit-remaining", remaining.encode()),
            (b"ratelimit-reset", reset.encode()),
        ]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def rate_limit_config(limit: tuple[Any, int], exclude: list[str]) -> RateLimitConfig:
    return RateLimitConfig(
        rate_limit=limit, exclude=exclude, middleware_class=CountingRateLimitMiddleware
    )
