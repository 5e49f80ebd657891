"""PNG charts (matplotlib) written next to report.md: training curves, confusion matrix, per class."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxml.core.files import write_bytes
from cxml.report.mermaid import (
    BASELINE_COLOR,
    MAX_CHART_CLASSES,
    THIS_CHANGE_COLOR,
    THIS_CHANGE_TRAIN_COLOR,
)
from cxml.report.model import ConfusionMatrix, PerClassRow, TrainCurve


@dataclass(frozen=True)
class ChartFile:
    key: str
    title: str
    path: Path


def image_paths(report_path: Path) -> dict[str, Path]:
    """`report.md` -> `report-training.png`, `report-confusion.png`, `report-per-class.png`."""
    stem = report_path.with_suffix("")
    return {
        key: stem.parent / f"{stem.name}-{key}.png"
        for key in ("training", "confusion", "per-class")
    }


def write_charts(
    report_path: Path,
    *,
    curve: TrainCurve | None,
    baseline_curve: TrainCurve | None,
    baseline_label: str,
    confusion: ConfusionMatrix | None,
    per_class: tuple[PerClassRow, ...] | None,
    baseline_per_class: dict[str, float] | None,
) -> list[ChartFile]:
    """Draw the charts there is data for; returns what was written (atomic writes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = image_paths(report_path)
    written: list[ChartFile] = []
    if curve:
        fig = training_figure(plt, curve, baseline_curve, baseline_label)
        written.append(save(plt, fig, ChartFile("training", "Training curves", paths["training"])))
    if confusion is not None and confusion.classes:
        fig = confusion_figure(plt, confusion)
        written.append(
            save(plt, fig, ChartFile("confusion", "Confusion matrix", paths["confusion"]))
        )
    if per_class:
        fig = per_class_figure(plt, per_class, baseline_per_class, baseline_label)
        chart = ChartFile("per-class", "Per-class accuracy", paths["per-class"])
        written.append(save(plt, fig, chart))
    return written


def save(plt: Any, fig: Any, chart: ChartFile) -> ChartFile:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(chart.path, buffer.getvalue())
    return chart


def training_figure(
    plt: Any, curve: TrainCurve, baseline: TrainCurve | None, baseline_label: str
) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, (title, train_col, val_col) in zip(
        axes, (("Loss", "loss", "val_loss"), ("Accuracy", "accuracy", "val_accuracy")), strict=True
    ):
        plot_column(axis, curve, train_col, "training, this change", THIS_CHANGE_TRAIN_COLOR, "-")
        plot_column(axis, curve, val_col, "validation, this change", THIS_CHANGE_COLOR, "-")
        if baseline:
            label = f"validation, baseline ({baseline_label})"
            plot_column(axis, baseline, val_col, label, BASELINE_COLOR, "--")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_column(
    axis: Any, curve: TrainCurve, column: str, label: str, color: str, style: str
) -> None:
    points = [(row["epoch"], row[column]) for row in curve if column in row and "epoch" in row]
    if points:
        xs, ys = zip(*points, strict=True)
        axis.plot(
            xs,
            ys,
            style,
            color=color,
            label=label,
            marker="o" if len(xs) <= 30 else None,
            markersize=3,
        )


OTHER_CLASSES = "(other classes)"


def shown_confusion(
    matrix: ConfusionMatrix, limit: int = MAX_CHART_CLASSES
) -> tuple[ConfusionMatrix, str]:
    """At most `limit` classes, those with the most mistakes (as actual or predicted), in their
    order, plus one row and column summing the rest; and a note saying so (empty when all fit).
    A chart of every class at 1,000 classes is unreadable and takes most of the report's time."""
    count = len(matrix.classes)
    if count <= limit:
        return matrix, ""
    mistakes = [0] * count  # as actual plus as predicted
    for i, j, n in matrix.nonzero:
        if i != j:
            mistakes[i] += n
            mistakes[j] += n
    top = sorted(sorted(range(count), key=lambda i: -mistakes[i])[:limit])
    group = {index: position for position, index in enumerate(top)}
    other = len(top)
    counts = [[0] * (other + 1) for _ in range(other + 1)]
    for i, j, n in matrix.nonzero:
        counts[group.get(i, other)][group.get(j, other)] += n
    shown = ConfusionMatrix(
        classes=(*(matrix.classes[i] for i in top), OTHER_CLASSES),
        counts=tuple(tuple(row) for row in counts),
    )
    return shown, f"the {limit} most confused of {count} classes"


def confusion_figure(plt: Any, full_matrix: ConfusionMatrix) -> Any:
    matrix, note = shown_confusion(full_matrix)
    size = min(9.0, 2.5 + 0.45 * len(matrix.classes))
    tick_font = 8 if len(matrix.classes) <= 20 else 6
    fig, axis = plt.subplots(figsize=(size, size * 0.85))
    # The summed rest (mostly right answers) would take the whole colour scale: scale without it
    # and write its count in its cell instead.
    cells = [
        n
        for i, row in enumerate(matrix.counts)
        for j, n in enumerate(row)
        if not note or i != j or i < len(row) - 1
    ]
    image = axis.imshow(matrix.counts, cmap="Blues", vmin=0, vmax=max(cells, default=0) or 1)
    fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    if note:
        last = len(matrix.classes) - 1
        rest = matrix.counts[last][last]
        axis.text(last, last, str(rest), ha="center", va="center", color="white", fontsize=6)
    ticks = range(len(matrix.classes))
    rotation = 90 if len(matrix.classes) > 12 else 0
    axis.set_xticks(ticks, labels=matrix.classes, rotation=rotation, fontsize=tick_font)
    axis.set_yticks(ticks, labels=matrix.classes, fontsize=tick_font)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    axis.set_title(f"Confusion matrix (test images{'; ' + note if note else ''})")
    if len(matrix.classes) <= 20:
        peak = max((max(row) for row in matrix.counts), default=0)
        for i, row in enumerate(matrix.counts):
            for j, count in enumerate(row):
                if count:
                    color = "white" if count > peak / 2 else "black"
                    axis.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    return fig


LEGEND_ROW_PT = 20.0
"""Room between the axes and the title for a one-row legend at 8 pt."""


def per_class_figure(
    plt: Any,
    all_rows: tuple[PerClassRow, ...],
    baseline: dict[str, float] | None,
    baseline_label: str,
) -> Any:
    rows, note = all_rows, ""
    if len(all_rows) > MAX_CHART_CLASSES:  # as the markdown's chart: the classes doing worst
        rows = tuple(sorted(all_rows, key=lambda r: r.accuracy)[:MAX_CHART_CLASSES])
        note = f"; the {MAX_CHART_CLASSES} lowest of {len(all_rows)} classes"
    width = min(12.0, 3.0 + 0.4 * len(rows))
    fig, axis = plt.subplots(figsize=(width, 3.6))
    positions = list(range(len(rows)))
    axis.bar(positions, [r.accuracy for r in rows], color=THIS_CHANGE_COLOR, label="this change")
    if baseline:
        values = [baseline.get(r.name) for r in rows]
        points = [(p, v) for p, v in zip(positions, values, strict=True) if v is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, "D", color=BASELINE_COLOR, label=f"baseline ({baseline_label})")
    rotation = 90 if len(rows) > 12 else 0
    tick_font = 8 if len(rows) <= 20 else 6
    axis.set_xticks(positions, labels=[r.name for r in rows], rotation=rotation, fontsize=tick_font)
    axis.set_ylim(0.0, 1.01)  # from 0: a cut axis makes small differences look large
    axis.set_ylabel("accuracy")
    # Above the bars, under the title: inside the axes a legend hides the bars it sits on.
    axis.set_title(f"Per-class accuracy (test images{note})", pad=LEGEND_ROW_PT)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(
        fontsize=8,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=2,
        frameon=False,
        borderaxespad=0.2,
    )
    fig.tight_layout()
    return fig
