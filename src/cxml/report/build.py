"""Building the report files: report.md and its PNG charts, from what train and evaluate wrote."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cxml.core import console
from cxml.core.config import Params
from cxml.core.files import write_text
from cxml.report.links import staging_demo_page
from cxml.report.markdown import build_report, render
from cxml.report.model import ChartImage, ReportData
from cxml.report.sources import load_report_data


def write_report(params: Params, params_path: Path, *, images: bool = True) -> Path:
    """report.md (and its PNG charts) for `cxml run`: the same report, posted nowhere."""
    report_path = Path(params.outputs.report)
    data = load_report_data(params, params_path, name=params.tracking.model_name)
    data = replace(data, demo_page=staging_demo_page())
    charts = draw_charts(data, report_path) if images else []
    write_text(report_path, full_markdown(data, charts, report_path))
    return report_path


def full_markdown(data: ReportData, images: list[ChartImage], report_path: Path) -> str:
    """report.md itself: never trimmed, images by URL or by path relative to report.md."""
    return render(build_report(with_images(data, images, report_path, hint=None)))


def draw_charts(data: ReportData, report_path: Path) -> list[ChartImage]:
    """PNG charts next to report.md; a missing matplotlib only costs the images (a warning)."""
    try:
        from cxml.report.images import write_charts

        charts = write_charts(
            report_path,
            curve=data.train_curve,
            baseline_curve=data.baseline_train_curve,
            baseline_label=data.gate.baseline_label,
            confusion=data.confusion,
            per_class=data.per_class,
            baseline_per_class=data.baseline_per_class,
        )
    except ImportError:
        console.warn("matplotlib is not installed (pip install 'cxml[report]'); no PNG charts")
        return []
    return [ChartImage(chart.title, chart.path.as_posix()) for chart in charts]


def with_images(
    data: ReportData, images: list[ChartImage], report_path: Path, *, hint: str | None
) -> ReportData:
    """The data with its images linked from report.md's folder; `hint` says why there are none."""
    base = report_path.parent
    relative = [
        ChartImage(img.title, img.src if "://" in img.src else relative_to(img.src, base))
        for img in images
    ]
    return replace(data, images=tuple(relative), images_note=None if images else hint)


def relative_to(path: str, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()
