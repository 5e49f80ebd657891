"""Metric names, which direction is better, what counts as noise, and flattening of DVC-style
nested metrics.

A metric's direction comes from params.yaml (`evaluate.directions: {rmse: lower}`), else from
its name (`default_direction`). A change between this run and the baseline is judged "within
noise" rather than better or worse when it cannot be told apart from chance:

- latency (`*_ms` with a `<name>_spread` beside it): the change is no larger than the spread
  (max - min) of the per-trial values, this run's or the baseline's, whichever is wider;
- accuracy (`accuracy`, `per_class_accuracy.<class>`): the change is at most `NOISE_IMAGES`
  test images one way or the other (counted from `num_test_images`, or the class's support).
  A tabular model's metrics hold `num_features`; its notes count rows, not images.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

EVAL_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "latency_p50_ms",
    "latency_p95_ms",
)
"""The headline numbers of metrics/eval.json, in the order people read them."""
TWO_CLASS_METRICS = ("roc_auc",)
"""Written by evaluate only for a model of two classes (and test data holding both)."""

Direction = Literal["higher", "lower"]
DIRECTIONS: tuple[Direction, ...] = ("higher", "lower")
Verdict = Literal["better", "worse", "same", "within noise", "neutral"]

SPREAD_SUFFIX = "_spread"
"""`latency_p95_ms_spread`: max - min of the per-trial `latency_p95_ms` (ml/latency.py)."""
NOISE_IMAGES = 2
"""An accuracy change of this many test images (or rows) or fewer is within noise."""
TABULAR_MARKER = "num_features"
"""evaluate writes it for a tabular model only: its test examples are rows, not images."""
PER_CLASS_PREFIX = "per_class_accuracy."

# Substrings that mark a metric where smaller is better (kept from the first releases).
_LOWER_IS_BETTER_MARKERS = ("loss", "latency", "seconds", "_ms", "error", "time", "size_mb")
# Whole words (between `_` or `.`) that mark an error measure: `rmse`, `val_mae`, `wer`.
_LOWER_IS_BETTER_WORDS = frozenset({"rmse", "mae", "mse", "mape", "wer", "cer", "perplexity"})


def is_neutral(metric: str) -> bool:
    """Counts (`num_test_images`, `epochs`, `support`) and spreads have no better direction."""
    leaf = metric.rsplit(".", 1)[-1]
    return leaf.startswith("num_") or leaf in ("epochs", "support") or leaf.endswith(SPREAD_SUFFIX)


def default_direction(name: str) -> Direction | None:
    """accuracy/precision/recall/f1 go up; loss, latency, seconds, errors, rmse, wer go down.

    None for counts, which have no direction."""
    if is_neutral(name):
        return None
    if name.startswith(PER_CLASS_PREFIX):  # a class named `error` is still an accuracy
        return "higher"
    lowered = name.lower()
    if any(marker in lowered for marker in _LOWER_IS_BETTER_MARKERS):
        return "lower"
    if _LOWER_IS_BETTER_WORDS.intersection(re.split(r"[._\-]", lowered)):
        return "lower"
    return "higher"


def direction_of(name: str, declared: Mapping[str, str] | None = None) -> Direction | None:
    """The declared direction (by full name, then by its last part: `train.rmse` -> `rmse`,
    `per_class_accuracy.cat` -> `per_class_accuracy`), else the default from the name."""
    declared = declared or {}
    leaf = name.rsplit(".", 1)[-1]
    group = name.rsplit(".", 1)[0] if name.startswith(PER_CLASS_PREFIX) else leaf
    for key in (name, group):
        found = declared.get(key)
        if found == "higher":
            return "higher"
        if found == "lower":
            return "lower"
    return default_direction(name)


def higher_is_better(name: str, declared: Mapping[str, str] | None = None) -> bool:
    return direction_of(name, declared) != "lower"


def resolved_directions(
    names: list[str], declared: Mapping[str, str] | None = None
) -> dict[str, Direction]:
    """Every metric's direction (declared, else by name) as gate.json records it; counts left out."""
    found: dict[str, Direction] = {}
    for name in [*names, *(declared or {})]:
        direction = direction_of(name, declared)
        if direction is not None:
            found[name] = direction
    return found


# --------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class Change:
    """A metric's change against the baseline, judged knowing its direction and its noise."""

    metric: str
    current: float
    baseline: float
    direction: Direction | None
    verdict: Verdict
    images: int | None = None
    """Accuracy-like metrics: test images gained (+) or lost (-)."""
    images_total: int | None = None
    spread: float | None = None
    """Latency: the widest per-trial spread of this run and the baseline."""
    unit: str = "image"
    """What a test example is: `image`, or `row` for a tabular model."""

    @property
    def moved(self) -> str:
        """`rose` / `fell` / `did not change`."""
        if self.current > self.baseline:
            return "rose"
        return "fell" if self.current < self.baseline else "did not change"

    def noise_note(self) -> str:
        """`+1 image of 269` (`+1 row of 86`) or `trial spread 0.35 ms`; empty when the metric
        has no noise model."""
        if self.images is not None and self.images_total is not None:
            plural = "" if abs(self.images) == 1 else "s"
            return f"{self.images:+d} {self.unit}{plural} of {self.images_total:,}"
        if self.spread is not None:
            return f"trial spread {self.spread:.3g}{' ms' if self.metric.endswith('_ms') else ''}"
        return ""


def count_test_images(metrics: Mapping[str, float]) -> int | None:
    count = metrics.get("num_test_images")
    if count is None or not math.isfinite(count) or count < 1:
        return None
    return int(count)


def image_counts(
    metric: str,
    metrics: Mapping[str, float],
    baseline: Mapping[str, float],
    support: Mapping[str, int] | None = None,
) -> tuple[int, int] | None:
    """(this run's, the baseline's) number of images behind an accuracy-like metric, or None."""
    if metric == "accuracy":
        current, base = count_test_images(metrics), count_test_images(baseline)
        if current is None:
            return None
        return current, base or current
    if metric.startswith(PER_CLASS_PREFIX) and support:
        count = support.get(metric[len(PER_CLASS_PREFIX) :])
        return (count, count) if count else None
    return None


def judge_change(
    metric: str,
    metrics: Mapping[str, float],
    baseline: Mapping[str, float],
    *,
    declared: Mapping[str, str] | None = None,
    support: Mapping[str, int] | None = None,
) -> Change | None:
    """Better, worse, same or within noise; None when either side lacks the metric."""
    current, base = metrics.get(metric), baseline.get(metric)
    if current is None or base is None or not (math.isfinite(current) and math.isfinite(base)):
        return None
    direction = direction_of(metric, declared)
    counts = image_counts(metric, metrics, baseline, support)
    images = None
    if counts is not None:
        images = round(current * counts[0]) - round(base * counts[1])
    spreads = [
        side[metric + SPREAD_SUFFIX]
        for side in (metrics, baseline)
        if math.isfinite(side.get(metric + SPREAD_SUFFIX, math.nan))
    ]
    spread = max(spreads) if spreads else None
    verdict = classify(current - base, direction, images=images, spread=spread)
    return Change(
        metric=metric,
        current=current,
        baseline=base,
        direction=direction,
        verdict=verdict,
        images=images,
        images_total=counts[0] if counts is not None else None,
        spread=spread,
        unit=example_unit(metrics),
    )


def example_unit(metrics: Mapping[str, float]) -> str:
    """`row` when the metrics are a tabular model's (they hold `num_features`), else `image`."""
    return "row" if TABULAR_MARKER in metrics else "image"


def classify(
    delta: float, direction: Direction | None, *, images: int | None, spread: float | None
) -> Verdict:
    if direction is None:
        return "neutral"
    if abs(delta) < 1e-12 or images == 0:
        return "same" if abs(delta) < 1e-12 else "within noise"
    if images is not None and abs(images) <= NOISE_IMAGES:
        return "within noise"
    if spread is not None and abs(delta) <= spread:
        return "within noise"
    return "better" if (delta > 0) == (direction == "higher") else "worse"


# --------------------------------------------------------------------------- nested metrics


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """`{"per_class_accuracy": {"3": 0.9}}` -> `{"per_class_accuracy.3": 0.9}`; numbers only."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float):
            flat[name] = float(value)
    return flat
