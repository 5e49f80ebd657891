"""Dynamic batching: concurrent /predict requests share one forward pass, each gets its own rows.

Requests arrive already decoded (a bad image is refused before it gets here, so it never touches
anyone else's answer). One dispatcher per process takes the waiting requests, whole, up to
`max_images`, and runs them as one batch on the inference thread. While that batch runs, new
requests gather, so under load batches fill by themselves; `max_delay_s` is how long the oldest
waiting request may be held for company once the model is idle (counted from its arrival or the end
of the previous batch, whichever is later), and only while company is expected (other requests
being read or decoded, or clients that were just answered and will likely send again): a lone
request under light load runs at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Rows = list[list[float]]


@dataclass
class _Waiting:
    images: torch.Tensor
    arrived: float
    answer: asyncio.Future[Rows]


class Batcher:
    """Gathers decoded requests into batches of at most `max_images` and runs them one at a time.

    `classify` is run through `infer` (which hands it to the inference thread); `on_batch` is told
    each batch's size (for /metrics); `company_coming` says whether other requests are on their way
    (without it, every batch waits up to max_delay_s to fill). One dispatcher task per event loop.
    """

    def __init__(
        self,
        classify: Callable[[torch.Tensor], Rows],
        infer: Callable[[Callable[[], Rows]], Awaitable[Rows]],
        max_images: int,
        max_delay_s: float,
        on_batch: Callable[[int], None] = lambda _images: None,
        company_coming: Callable[[], bool] = lambda: True,
    ) -> None:
        self.classify = classify
        self.infer = infer
        self.max_images = max_images
        self.max_delay_s = max_delay_s
        self.on_batch = on_batch
        self.company_coming = company_coming
        self._waiting: list[_Waiting] = []
        self._arrival: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle_since = 0.0

    async def classify_batched(self, images: torch.Tensor) -> Rows:
        """Class probabilities of `images` (N,C,H,W uint8), computed with whoever else is waiting."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._dispatcher is None or self._dispatcher.done():
            self._loop, self._waiting = loop, []
            self._arrival = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch_forever())
        assert self._arrival is not None
        waiting = _Waiting(images, time.monotonic(), loop.create_future())
        self._waiting.append(waiting)
        self._arrival.set()
        try:
            return await asyncio.shield(waiting.answer)
        except asyncio.CancelledError:
            # the handler was cancelled (client gone): drop the request if it has not run yet
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            raise

    async def _dispatch_forever(self) -> None:
        assert self._arrival is not None
        while True:
            await self._arrival.wait()
            self._arrival.clear()
            if not self._waiting:
                continue
            await self._gather_company()
            batch = self._take_batch()
            if batch:
                await self._run(batch)
            if self._waiting:
                self._arrival.set()

    async def _gather_company(self) -> None:
        """Wait until the batch is full or the oldest waiting request has waited max_delay_s."""
        assert self._arrival is not None
        while self._waiting_images() < self.max_images and self.company_coming():
            waited_from = max(self._waiting[0].arrived, self._idle_since)
            left = waited_from + self.max_delay_s - time.monotonic()
            if left <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), timeout=left)
            except TimeoutError:
                return
            if not self._waiting:
                return

    def _waiting_images(self) -> int:
        return sum(int(waiting.images.shape[0]) for waiting in self._waiting)

    def _take_batch(self) -> list[_Waiting]:
        """The oldest whole requests that fit in max_images (always at least one)."""
        batch: list[_Waiting] = []
        images = 0
        while self._waiting:
            size = int(self._waiting[0].images.shape[0])
            if batch and images + size > self.max_images:
                break
            batch.append(self._waiting.pop(0))
            images += size
        return [waiting for waiting in batch if not waiting.answer.done()]

    def waiting_requests(self) -> int:
        """Requests decoded and waiting for a forward pass (not those in the one running)."""
        return len(self._waiting)

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            await self._run_batch(batch)
        finally:
            self._idle_since = time.monotonic()

    async def _run_batch(self, batch: list[_Waiting]) -> None:
        import torch

        tensors = [waiting.images for waiting in batch]
        try:
            stacked = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
            rows = await self.infer(lambda: self.classify(stacked))
        except Exception as exc:  # every request of the batch gets the failure (a 500 each)
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
            return
        self.on_batch(int(stacked.shape[0]))
        start = 0
        for waiting in batch:
            size = int(waiting.images.shape[0])
            if not waiting.answer.done():
                waiting.answer.set_result(rows[start : start + size])
            start += size
