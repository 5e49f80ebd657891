"""Mermaid `xychart-beta` charts for the report: charts GitHub and GitLab draw with no image host."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cxml.report.escape import escape_text
from cxml.report.model import PER_CLASS_PREFIX, ReportData, TrainCurve

THIS_CHANGE_COLOR = "#2563eb"
THIS_CHANGE_TRAIN_COLOR = "#93c5fd"
BASELINE_COLOR = "#f97316"
MAX_POINTS = 60
"""Longer series are thinned to about this many points so the chart stays readable."""
MAX_CHART_CLASSES = 40
PER_CLASS_Y_RANGE = (0.0, 1.0)
"""Bars start at 0: a bar's height is then its accuracy, and a zoomed axis makes 0.97 look
like half of 0.99."""


@dataclass(frozen=True)
class Series:
    """One line or bar series; `values[i]` belongs to the i-th x category."""

    label: str
    values: tuple[float, ...]
    color: str
    kind: str = "line"  # line | bar


MERMAID_LOOKALIKES = str.maketrans({'"': "'", "`": "'", "<": "‹", ">": "›"})
"""The grammar has no escape for `"`; a backtick starts a markdown string; `<>` would be HTML."""


def quote(text: str) -> str:
    """A Mermaid string literal that shows `text` and cannot change the chart around it.

    Mermaid reads `%%{init: …}%%` directives and `#name;` entity codes anywhere in a diagram,
    so class names like those are broken up; quotes, backticks and `<>` become look-alikes.
    """
    cleaned = " ".join(text.translate(MERMAID_LOOKALIKES).split())
    cleaned = re.sub(r"%{2,}", "%", cleaned)
    cleaned = re.sub(r"#(?=\w+;)", "# ", cleaned)
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
    parts = [f"{names.get(s.color, s.color)} {s.kind}: {escape_text(s.label)}" for s in series]
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


# --------------------------------------------------------------------------- the report's charts


def curve_column(curve: TrainCurve, column: str) -> tuple[float, ...] | None:
    if not all(column in row for row in curve):
        return None
    return tuple(row[column] for row in curve)


def training_charts(data: ReportData) -> str | None:
    """Loss and accuracy per epoch: this change (train, validation) against the baseline's validation."""
    curve = data.train_curve
    if not curve:
        return None
    baseline = data.baseline_train_curve
    length = max(len(curve), len(baseline or ()))
    keep = thin_indices(length)
    categories = [str(index + 1) for index in keep]
    blocks: list[str] = []
    for title, train_col, val_col, bounded in (
        ("Loss per epoch", "loss", "val_loss", False),
        ("Accuracy per epoch", "accuracy", "val_accuracy", True),
    ):
        series: list[Series] = []
        for label, source, column, color in (
            ("training, this change", curve, train_col, THIS_CHANGE_TRAIN_COLOR),
            ("validation, this change", curve, val_col, THIS_CHANGE_COLOR),
            (
                f"validation, baseline ({data.gate.baseline_label})",
                baseline,
                val_col,
                BASELINE_COLOR,
            ),
        ):
            values = curve_column(source, column) if source else None
            if values:
                series.append(
                    Series(label, tuple(values[i] for i in keep if i < len(values)), color)
                )
        if not series:
            continue
        y_range = value_range(series, floor=0.0, ceil=1.0 if bounded else None)
        chart = xychart(
            title=title,
            categories=categories,
            y_label=title.split()[0].lower(),
            series=series,
            y_range=y_range,
        )
        blocks.append(f"{chart}\n\n{legend(series)}")
    if not blocks:
        return None
    return "#### Training\n\n" + "\n\n".join(blocks)


def per_class_chart(data: ReportData) -> str | None:
    rows = list(data.per_class or ())
    if not rows:
        return None
    note = ""
    if len(rows) > MAX_CHART_CLASSES:
        rows = sorted(rows, key=lambda r: r.accuracy)[:MAX_CHART_CLASSES]
        note = f" (the {MAX_CHART_CLASSES} lowest of {len(data.per_class or ())} classes)"
    series = [
        Series(
            "accuracy, this change", tuple(r.accuracy for r in rows), THIS_CHANGE_COLOR, kind="bar"
        )
    ]
    baseline = data.gate.baseline_metrics or {}
    base_values = [baseline.get(PER_CLASS_PREFIX + r.name) for r in rows]
    if base_values and all(v is not None for v in base_values):
        series.append(
            Series(
                f"accuracy, baseline ({data.gate.baseline_label})",
                tuple(float(v or 0) for v in base_values),
                BASELINE_COLOR,
            )
        )
    chart = xychart(
        title=f"Per-class accuracy{note}",
        categories=[r.name for r in rows],
        y_label="accuracy",
        series=series,
        y_range=PER_CLASS_Y_RANGE,
    )
    return f"#### Per-class accuracy\n\n{chart}\n\n{legend(series)}"
