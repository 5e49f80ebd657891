"""Single-image latency, measured in repeated trials after warm-up, with the spread between trials.

One pass of N timings on a shared runner gave p95 103.9 ms once and 455.9 ms the next time for
the same model: a single number is mostly the machine's mood. So the timings are taken in
`trials` rounds of `samples` calls each (after warm-up calls that fill allocators and caches);
each round gives its own p50 and p95, the metric is the median round's value, and the spread
(max - min over the rounds) is written beside it as `<metric>_spread`. The report and the gate
call a change no larger than that spread "within noise" (core/metrics.py).

The rounds have a time budget (`evaluate.latency_budget_s`, 0.5 s, warm-up included): once it is
spent no further round starts, provided `MIN_TRIALS` are done. On a quiet runner a small model
gets all its rounds within it; on a loaded one evaluate does not pay seconds for five rounds
where three already give a median and a spread.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from cxml.core.config import EvaluateConfig
    from cxml.ml.data import Split
    from cxml.ml.models import ModelMetadata

WARMUP_CALLS = 5
"""Calls before the first trial, not timed: the first ones pay for allocators and kernels."""
MIN_TRIALS = 3
"""Rounds run whatever the budget (fewer only if fewer are asked for): a median and a spread."""


@dataclass(frozen=True)
class LatencySummary:
    """Per-trial percentiles reduced to a median and a spread, in milliseconds."""

    p50_ms: float
    p95_ms: float
    p50_spread_ms: float
    p95_spread_ms: float
    trials: int
    samples: int
    """Timed calls per trial."""

    def to_metrics(self) -> dict[str, float]:
        """The entries of metrics/eval.json."""
        return {
            "latency_p50_ms": round(self.p50_ms, 4),
            "latency_p95_ms": round(self.p95_ms, 4),
            "latency_p50_ms_spread": round(self.p50_spread_ms, 4),
            "latency_p95_ms_spread": round(self.p95_spread_ms, 4),
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_trials(trials: Sequence[Sequence[float]]) -> LatencySummary:
    """The median over trials of each trial's p50 and p95, and their spread (max - min)."""
    rounds = [list(trial) for trial in trials if trial]
    if not rounds:
        return LatencySummary(0.0, 0.0, 0.0, 0.0, trials=0, samples=0)
    p50s = [percentile(trial, 50) for trial in rounds]
    p95s = [percentile(trial, 95) for trial in rounds]
    return LatencySummary(
        p50_ms=statistics.median(p50s),
        p95_ms=statistics.median(p95s),
        p50_spread_ms=max(p50s) - min(p50s),
        p95_spread_ms=max(p95s) - min(p95s),
        trials=len(rounds),
        samples=min(len(trial) for trial in rounds),
    )


def time_trials(
    call: Callable[[int], object],
    *,
    trials: int,
    samples: int,
    warmup: int = WARMUP_CALLS,
    synchronize: Callable[[], object] = lambda: None,
    budget_s: float = math.inf,
    min_trials: int = MIN_TRIALS,
) -> list[list[float]]:
    """Milliseconds per `call(i)`, `samples` per trial, after `warmup` untimed calls; up to
    `trials` trials, but none starts after `budget_s` (from the first warm-up call) once
    `min_trials` are done."""
    started = time.perf_counter()
    for i in range(warmup):
        call(i)
    synchronize()
    rounds: list[list[float]] = []
    for trial in range(trials):
        if len(rounds) >= min_trials and time.perf_counter() - started >= budget_s:
            break
        timings: list[float] = []
        for sample in range(samples):
            start = time.perf_counter()
            call(trial * samples + sample)
            synchronize()
            timings.append((time.perf_counter() - start) * 1000.0)
        rounds.append(timings)
    return rounds


def measure_latency(
    model: torch.nn.Module,
    split: Split,
    metadata: ModelMetadata,
    cfg: EvaluateConfig,
    device: torch.device,
) -> dict[str, float]:
    """`latency_p50_ms`, `latency_p95_ms` and their `_spread` for one image, as a single-image
    request sees it: up to `evaluate.latency_trials` rounds of `evaluate.latency_samples` calls,
    within `evaluate.latency_budget_s` once `MIN_TRIALS` are done."""
    import torch

    from cxml.ml.models import preprocess

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    images = [split.images[i].unsqueeze(0).to(device) for i in range(min(len(split), 256))]
    if not images:
        return summarize_trials([]).to_metrics()

    def one_image(index: int) -> object:
        return model(preprocess(images[index % len(images)], metadata))

    with torch.inference_mode():
        rounds = time_trials(
            one_image,
            trials=cfg.latency_trials,
            samples=cfg.latency_samples,
            synchronize=synchronize,
            budget_s=cfg.latency_budget_s,
        )
    return summarize_trials(rounds).to_metrics()
