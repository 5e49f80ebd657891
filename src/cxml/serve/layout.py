"""The memory layout of small forward passes on CPU, chosen by timing both on the loaded model.

oneDNN runs some convolution nets much faster in channels-last at batch 1 and slower from batch 2
up (ResNet-18 at 32x32, one thread on this project's 2-core machine: 4.2 ms against 6.4 ms at
batch 1, 12.3 against 7.1 ms at batch 2). Which layout wins depends on the model, the input
size and the CPU, so the service times both at load and keeps a channels-last copy of the
weights only for the batch sizes where it was clearly faster. The copy is made before the
workers fork, so they share it like the model itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TIMED_BATCHES = (1, 2, 4, 8)
"""Batch sizes tried in turn; the first where channels-last does not win ends the search."""

WIN_MARGIN = 0.85
"""Channels-last must take at most this share of the standard layout's time to be kept."""

TIMING_BUDGET_S = 1.0
"""Start-up time the comparison may take; a model slower than that is served as it is."""

TIMED_RUNS = 3
"""Timed passes per layout and batch size (after one untimed); the fastest counts."""


@dataclass(frozen=True)
class LayoutChoice:
    """Up to which batch size passes run in channels-last (0: never), and what was measured."""

    channels_last_up_to: int = 0
    timings_ms: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    """batch size -> (standard, channels-last) milliseconds, fastest of the timed passes."""

    def describe(self) -> str:
        """One line for the start-up log."""
        if not self.timings_ms:
            return "standard memory layout (not timed)"
        figures = ", ".join(
            f"batch {size}: {standard:.1f} vs {last:.1f} ms"
            for size, (standard, last) in sorted(self.timings_ms.items())
        )
        if self.channels_last_up_to == 0:
            return f"standard memory layout (channels-last timed slower: {figures})"
        return (
            f"channels-last for batches up to {self.channels_last_up_to} "
            f"(standard vs channels-last, timed at load: {figures})"
        )


def channels_last_limit(timings: Mapping[int, tuple[float, float]]) -> int:
    """The largest batch size up to which channels-last won at every timed size (0: none)."""
    limit = 0
    for size in sorted(timings):
        standard, last = timings[size]
        if last > standard * WIN_MARGIN:
            break
        limit = size
    return limit


def can_use_channels_last(model: torch.nn.Module, input_size: tuple[int, int, int]) -> bool:
    """Only image models with 4-d convolution weights have a layout to choose."""
    _channels, height, width = input_size
    if height <= 1 and width <= 1:  # tabular rows arrive as N,F,1,1
        return False
    return any(parameter.dim() == 4 for parameter in model.parameters())


def channels_last_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose 4-d weights are stored channels-last (same values)."""
    import copy

    import torch

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def to_channels_last(batch: torch.Tensor) -> torch.Tensor:
    import torch

    return batch.contiguous(memory_format=torch.channels_last)


def fastest_ms(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """The fastest of `TIMED_RUNS` passes of `batch`, after one untimed pass."""
    import torch

    best = float("inf")
    with torch.inference_mode():
        model(batch)
        for _ in range(TIMED_RUNS):
            started = time.perf_counter()
            model(batch)
            best = min(best, time.perf_counter() - started)
    return best * 1000


def time_layouts(
    standard: torch.nn.Module,
    channels_last: torch.nn.Module,
    input_size: tuple[int, int, int],
    *,
    budget_s: float = TIMING_BUDGET_S,
) -> dict[int, tuple[float, float]]:
    """(standard, channels-last) ms per batch size, in `TIMED_BATCHES` order, until channels-last
    stops winning or the budget is spent."""
    import torch

    timings: dict[int, tuple[float, float]] = {}
    deadline = time.perf_counter() + budget_s
    for size in TIMED_BATCHES:
        if time.perf_counter() > deadline:
            break
        batch = torch.zeros((size, *input_size), dtype=torch.uint8)
        standard_ms = fastest_ms(standard, batch)
        last_ms = fastest_ms(channels_last, to_channels_last(batch))
        timings[size] = (standard_ms, last_ms)
        if last_ms > standard_ms * WIN_MARGIN:
            break
    return timings


def choose_layout(
    model: torch.nn.Module, input_size: tuple[int, int, int], device: str
) -> tuple[LayoutChoice, torch.nn.Module | None]:
    """Time both layouts on `model` (CPU image models only) and return the choice with the
    channels-last copy to keep, or None when the standard layout serves every batch."""
    if device != "cpu" or not can_use_channels_last(model, input_size):
        return LayoutChoice(), None
    copy = channels_last_copy(model)
    timings = time_layouts(model, copy, input_size)
    choice = LayoutChoice(channels_last_limit(timings), timings)
    return choice, (copy if choice.channels_last_up_to else None)
