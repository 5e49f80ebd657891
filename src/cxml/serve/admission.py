"""Admission for /predict: a few requests are worked on off the event loop, a bounded number wait,
the rest are told to come back (503 + Retry-After) instead of queueing without bound.

The event loop only reads bodies and writes answers, so /healthz and /metrics answer at once
however busy the workers are; decoding runs in a small thread pool and torch in one thread of its
own (torch's intra-op threads, set by --threads, do the parallel part of a model call).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

RETRY_AFTER_S = 1
"""What a refused client is told to wait: long enough for a slot to free, short enough to matter."""

PEAK_WINDOW_S = 0.25
"""How far back `recent_peak` looks: many round trips of a client that sends again once answered,
short enough that a burst long gone does not make a lone request wait for company."""

T = TypeVar("T")


class Overloaded(Exception):
    """Every work slot is busy and the queue behind them is full."""


class Admission:
    """Counts the /predict requests one process holds; hands out work slots and their threads."""

    def __init__(self, max_active: int, max_queue: int) -> None:
        self.max_active = max_active
        self.max_queue = max_queue
        self.held = 0
        self._peak = 0
        self._previous_peak = 0
        self._window_start = time.monotonic()
        self._slots = asyncio.Semaphore(max_active)
        self._decoders = ThreadPoolExecutor(max_active, thread_name_prefix="cxml-decode")
        self._inference = ThreadPoolExecutor(1, thread_name_prefix="cxml-inference")

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one request from arrival to answer, or raise Overloaded when there is no room."""
        if self.held >= self.max_active + self.max_queue:
            raise Overloaded
        self.held += 1
        self._roll_window(time.monotonic())
        self._peak = max(self._peak, self.held)
        try:
            yield
        finally:
            self.held -= 1

    def recent_peak(self) -> int:
        """The most requests held at once over the last PEAK_WINDOW_S or two: how many clients are
        about, counting those whose answer just left and who will likely send again."""
        self._roll_window(time.monotonic())
        return max(self._peak, self._previous_peak)

    def _roll_window(self, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed < PEAK_WINDOW_S:
            return
        self._previous_peak = self._peak if elapsed < 2 * PEAK_WINDOW_S else self.held
        self._peak = self.held
        self._window_start = now

    @contextlib.asynccontextmanager
    async def work_slot(self) -> AsyncIterator[None]:
        """Wait (in the bounded queue) until this request may be decoded and classified."""
        async with self._slots:
            yield

    async def decode(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._decoders, work)

    async def infer(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._inference, work)

    def overload_message(self) -> str:
        return (
            f"the service is busy ({self.max_active} requests in progress and {self.max_queue} "
            f"waiting, the most it holds); retry after {RETRY_AFTER_S} s, or raise --max-queue "
            "or add workers"
        )
