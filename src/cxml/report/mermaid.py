"""Mermaid `xychart-beta` blocks for the report: charts GitHub and GitLab draw with no image host."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

THIS_CHANGE_COLOR = "#2563eb"
THIS_CHANGE_TRAIN_COLOR = "#93c5fd"
BASELINE_COLOR = "#f97316"
MAX_POINTS = 60
"""Longer series are thinned to about this many points so the chart stays readable."""


@dataclass(frozen=True)
class Series:
    """One line or bar series; `values[i]` belongs to the i-th x category."""

    label: str
    values: tuple[float, ...]
    color: str
    kind: str = "line"  # line | bar


def quote(text: str) -> str:
    """A Mermaid string literal; the grammar has no escape for `"`, so use a look-alike."""
    cleaned = " ".join(text.replace('"', "'").split())
    return f'"{cleaned}"'


def number(value: float) -> str:
    """A number the xychart grammar accepts (no exponent, no NaN)."""
    if value != value or value in (float("inf"), float("-inf")):
        return "0"
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def thin_indices(length: int, max_points: int = MAX_POINTS) -> list[int]:
    """Every k-th index (always keeping the last) so that at most about `max_points` remain."""
    if length <= max_points:
        return list(range(length))
    step = -(-length // max_points)
    indices = list(range(0, length, step))
    if indices[-1] != length - 1:
        indices.append(length - 1)
    return indices


def xychart(
    *,
    title: str,
    categories: Sequence[str],
    y_label: str,
    series: Sequence[Series],
    y_range: tuple[float, float] | None = None,
    width: int = 720,
    height: int = 320,
) -> str:
    """A fenced ```mermaid block with one xychart; colours follow the order of `series`."""
    palette = ", ".join(s.color for s in series)
    lines = [
        "```mermaid",
        "---",
        "config:",
        "  xyChart:",
        f"    width: {width}",
        f"    height: {height}",
        "  themeVariables:",
        "    xyChart:",
        f'      plotColorPalette: "{palette}"',
        "---",
        "xychart-beta",
        f"    title {quote(title)}",
        f"    x-axis [{', '.join(quote(c) for c in categories)}]",
    ]
    y_axis = f"    y-axis {quote(y_label)}"
    if y_range is not None:
        y_axis += f" {number(y_range[0])} --> {number(y_range[1])}"
    lines.append(y_axis)
    for one in series:
        values = ", ".join(number(v) for v in one.values)
        lines.append(f"    {one.kind} [{values}]")
    lines.append("```")
    return "\n".join(lines)


def legend(series: Sequence[Series]) -> str:
    """The key Mermaid's xychart cannot draw itself, as one line under the chart."""
    names = {
        THIS_CHANGE_COLOR: "blue",
        THIS_CHANGE_TRAIN_COLOR: "light blue",
        BASELINE_COLOR: "orange",
    }
    parts = [f"{names.get(s.color, s.color)} {s.kind}: {s.label}" for s in series]
    return "<sub>" + " · ".join(parts) + "</sub>"


def value_range(
    series: Sequence[Series], *, floor: float | None = None, ceil: float | None = None
) -> tuple[float, float]:
    """A y range with a little headroom around all values, clipped to [floor, ceil]."""
    values = [v for s in series for v in s.values]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max((high - low) * 0.08, 1e-3)
    low, high = low - pad, high + pad
    if floor is not None:
        low = max(low, floor)
    if ceil is not None:
        high = min(high, ceil)
    return round(low, 4), round(high, 4)
