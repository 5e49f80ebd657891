"""PNG charts: drawn for what is shown (at most 40 classes, the rest summarised), axis from 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxml.report.images import OTHER_CLASSES, per_class_figure, shown_confusion, write_charts
from cxml.report.model import ConfusionMatrix, PerClassRow


def confusion(classes: int) -> ConfusionMatrix:
    """Each class right once; class i also mistaken for i+1 (i % 7) times."""
    counts = [[0] * classes for _ in range(classes)]
    for i in range(classes):
        counts[i][i] = 1
        counts[i][(i + 1) % classes] += i % 7
    return ConfusionMatrix(
        classes=tuple(f"c{i}" for i in range(classes)),
        counts=tuple(tuple(row) for row in counts),
    )


def test_a_small_matrix_is_shown_whole() -> None:
    matrix = confusion(12)
    assert shown_confusion(matrix) == (matrix, "")


def test_a_large_matrix_shows_the_most_confused_classes_and_sums_the_rest() -> None:
    matrix = confusion(1000)
    shown, note = shown_confusion(matrix)
    assert len(shown.classes) == 41 and shown.classes[-1] == OTHER_CLASSES
    assert note == "the 40 most confused of 1000 classes"
    assert sum(map(sum, shown.counts)) == sum(map(sum, matrix.counts))  # nothing lost
    assert all(int(name[1:]) % 7 in (5, 6) for name in shown.classes[:-1])  # the worst ones


def test_per_class_chart_starts_at_zero_and_shows_the_40_lowest() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = tuple(PerClassRow(f"c{i}", 0.9 + (i % 10) / 100, 3) for i in range(1000))
    fig = per_class_figure(plt, rows, None, "main")
    axis = fig.axes[0]
    assert axis.get_ylim()[0] == 0.0
    assert len(axis.get_xticks()) == 40
    assert "the 40 lowest of 1000 classes" in axis.get_title()
    plt.close(fig)


@pytest.mark.parametrize("classes", [1, 10, 1000])
def test_per_class_legend_sits_above_the_bars_and_below_the_title(classes: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = tuple(PerClassRow(f"class {i}", 1.0, 3) for i in range(classes))  # full-height bars
    baseline = {row.name: 0.98 for row in rows}
    fig = per_class_figure(plt, rows, baseline, "champion")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    axis = fig.axes[0]
    legend = axis.get_legend().get_window_extent(renderer)
    plot_area = axis.get_window_extent(renderer)
    title = axis.title.get_window_extent(renderer)
    assert legend.y0 >= plot_area.y1 - 1  # outside the axes, so no bar is hidden
    assert title.y0 >= legend.y1 - 1
    assert len(axis.get_legend().get_texts()) == 2
    plt.close(fig)


@pytest.mark.parametrize("classes", [10, 1000])
def test_charts_are_written_at_any_number_of_classes(tmp_path: Path, classes: int) -> None:
    report = tmp_path / "report.md"
    rows = tuple(PerClassRow(f"c{i}", 0.5, 1) for i in range(classes))
    written = write_charts(
        report,
        curve=({"epoch": 1.0, "loss": 1.0, "val_loss": 1.1, "accuracy": 0.5, "val_accuracy": 0.4},),
        baseline_curve=None,
        baseline_label="main",
        confusion=confusion(classes),
        per_class=rows,
        baseline_per_class=None,
    )
    assert [chart.key for chart in written] == ["training", "confusion", "per-class"]
    assert all(chart.path.read_bytes().startswith(b"\x89PNG") for chart in written)
