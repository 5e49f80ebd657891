"""Metric names, which direction is better, and flattening of DVC-style nested metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EVAL_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "latency_p50_ms",
    "latency_p95_ms",
)
"""The headline numbers of metrics/eval.json, in the order people read them."""

# Substrings that mark a metric where smaller is better; everything else is "higher is better".
_LOWER_IS_BETTER_MARKERS = ("loss", "latency", "seconds", "_ms", "error", "time", "size_mb")


def higher_is_better(name: str) -> bool:
    """accuracy/precision/recall/f1 go up; loss, latency, seconds and errors go down."""
    leaf = name.lower()
    return not any(marker in leaf for marker in _LOWER_IS_BETTER_MARKERS)


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
