"""`POST /predict` without the framework's per-request machinery, in front of the Litestar app.

A prediction of one patient is the request the service answers most, and the framework cost
about as much CPU as the model and the log together (docs/serving.md, "Where the CPU of a
prediction goes"). `HotPath` wraps the app's ASGI handler (inside `Litestar.__call__`, so the
scope carries the app and `send` already adds the security headers of serve.tls) and answers
`POST /predict` itself, with what the framework's stack does on that route:

* the same answer: serve.predict.answer, the Litestar handler's own code;
* the rate limit: the app's one serve.ratelimit.RateCounter, its RateLimit-* headers;
* the metrics: `medcast_http_requests_total` and the latency histogram, route `/predict`;
* the body limit (MEDCAST_MAX_BODY_BYTES);
* a server fault: logged as serve.openapi.log_exception logs it, answered 500 as Litestar does.

Anything out of the ordinary goes on to Litestar, untouched, and gets the framework's own
answer: another path or method, a body without Content-Length (chunked) or over the limit, a
client over its rate limit (the counter refuses it there too). Only the ordinary request is
answered here, and it is answered as the framework would.
"""

from __future__ import annotations

import time
from typing import Any

from serve.openapi import log_exception
from serve.predict import Reply, answer, error_reply
from serve.ratelimit import RateCounter
from serve.service import Service

PATH = "/predict"
INTERNAL = error_reply(500, "Internal Server Error")  # Litestar's body for an unhandled error


class HotPath:
    __slots__ = ("app", "service", "counter", "max_body", "answered")

    def __init__(self, app: Any, service: Service, counter: RateCounter | None,
                 max_body: int) -> None:
        self.app = app
        self.service = service
        self.counter = counter
        self.max_body = max_body
        self.answered = 0  # requests this path answered (the rest went on to Litestar)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
                break
        if not 0 <= length <= self.max_body:
            await self.app(scope, receive, send)  # chunked, malformed or too large: Litestar
            return
        start = time.perf_counter()
        limit_headers: list[tuple[bytes, bytes]] = []
        if self.counter is not None:
            allowed, limit_headers = self.counter.take(scope)
            if not allowed:
                await self.app(scope, receive, send)  # the 429, by the framework's stack
                return
        self.answered += 1
        status = 500

        async def read_body() -> bytes:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ConnectionResetError("client disconnected before the body ended")
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)

        try:
            try:
                reply = await answer(self.service, scope, read_body, False)
            except ConnectionResetError:
                return  # nobody to answer (Litestar's path: a 500 nobody reads)
            except Exception as exc:  # noqa: BLE001 - a server fault: logged, answered 500
                log_exception(exc, scope)
                reply = INTERNAL
            status = reply.status
            await send_reply(send, reply, limit_headers)
        finally:
            self.service.metrics.observe(PATH, "POST", status, time.perf_counter() - start)


async def send_reply(send: Any, reply: Reply, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(reply.body)).encode())]
    if reply.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status,
                "headers": headers + extra})
    await send({"type": "http.response.body", "body": reply.body})
