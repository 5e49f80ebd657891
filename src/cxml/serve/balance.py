"""Connections spread evenly over the workers.

Each worker listens on its own SO_REUSEPORT socket, and the kernel hashes every new connection
to one of them. Keep-alive clients then stay where they landed: with 4 clients on 2 workers,
half the time 3 land on one worker and 1 on the other, for as long as they stay connected. That
gives a 75/25 CPU split and about 0.7x the throughput of an even split, varying from run to
run (benchmarks/README.md, issue 17).

Each worker publishes how many connections it holds, in a small array the forked workers
share. A worker holding more than its share (total / workers, rounded up) answers one request
with `Connection: close`, at most every `CLOSE_INTERVAL_S`. The client opens a new connection
from a new source port, which the kernel hashes afresh, so the split converges to an even one
within a few closes. A response is never cut short, and HTTP/1.1 clients (browsers, httpx,
wrk, nginx's upstream keep-alive) reconnect on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE_INTERVAL_S = 0.05
"""A worker over its share closes at most one connection this often, so that the others'
counts catch up before it closes another."""


class ConnectionShares:
    """Open connections per worker, in memory shared across the fork (create it before)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self._counts: Any = multiprocessing.RawArray("i", workers)
        self._last_close = float("-inf")

    @property
    def workers(self) -> int:
        return len(self._counts)

    def fair_share(self) -> int:
        total: int = sum(self._counts)
        return -(-total // self.workers)

    def should_close(self, worker: int, open_connections: int) -> bool:
        """Record `worker`'s count; whether it should close the connection it is answering."""
        self._counts[worker] = open_connections
        if open_connections <= self.fair_share():
            return False
        now = time.monotonic()
        if now - self._last_close < CLOSE_INTERVAL_S:
            return False
        self._last_close = now
        return True


CONNECTION_CLOSE = (b"connection", b"close")


class BalanceConnections:
    """ASGI middleware: `Connection: close` on an answer while this worker is over its share."""

    def __init__(
        self,
        app: ASGIApp,
        shares: ConnectionShares,
        worker: int,
        open_connections: Callable[[], int],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.shares = shares
        self.worker = worker
        self.open_connections = open_connections
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_maybe_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.shares.should_close(
                self.worker, self.open_connections()
            ):
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, CONNECTION_CLOSE]}
                if self.on_close is not None:
                    self.on_close()
            await send(message)

        await self.app(scope, receive, send_maybe_closing)
