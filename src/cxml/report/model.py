"""The report's data model: everything a report shows, already read and parsed (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import compress
from typing import Any

from cxml.records.gate import GateResult, GateRule

__all__ = [
    "MISSING",
    "PER_CLASS_PREFIX",
    "ChartImage",
    "ConfusionMatrix",
    "DemoPage",
    "GateResult",
    "GateRule",
    "ParamChange",
    "PerClassRow",
    "ReportData",
    "RunLinks",
    "TrainCurve",
    "diff_params",
]

PER_CLASS_PREFIX = "per_class_accuracy."
"""Flattened per-class metrics in eval.json: `per_class_accuracy.<class>`."""
MISSING = "(not set)"
"""What a params diff shows for a key that only one side has."""


@dataclass(frozen=True)
class PerClassRow:
    """One line of plots/per_class.csv."""

    name: str
    accuracy: float
    support: int


@dataclass(frozen=True)
class ConfusionMatrix:
    classes: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    """`counts[actual][predicted]`, in the order of `classes`."""

    @cached_property
    def nonzero(self) -> tuple[tuple[int, int, int], ...]:
        """(actual, predicted, count) of every non-empty cell, row by row: at 1,000 classes the
        report reads a million cells for a few thousand of them, so they are found once, at C
        speed (itertools.compress), not cell by cell."""
        columns = range(len(self.classes))
        return tuple(
            (i, j, row[j]) for i, row in enumerate(self.counts) for j in compress(columns, row)
        )


TrainCurve = tuple[dict[str, float], ...]
"""plots/train.csv: one mapping per epoch (`epoch`, `loss`, `val_accuracy`, ...)."""


@dataclass(frozen=True)
class ParamChange:
    key: str
    baseline: Any
    current: Any
    """`MISSING` stands for a key that only one side has."""


@dataclass(frozen=True)
class RunLinks:
    """Where this report came from, for the footer."""

    version: str
    commit: str | None = None
    run_url: str | None = None
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    model_name: str | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class DemoPage:
    """The demo page of a deployed environment's service, for a person to try the model."""

    environment: str
    url: str
    """Already masked: no credentials, query or fragment (`links.demo_page_url`)."""


@dataclass(frozen=True)
class ChartImage:
    title: str
    src: str
    """URL of the published PNG, or its path relative to report.md."""


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, already read and parsed."""

    name: str
    metrics: dict[str, float]
    gate: GateResult
    links: RunLinks
    train_metrics: dict[str, float] | None = None
    baseline_train_metrics: dict[str, float] | None = None
    train_curve: TrainCurve | None = None
    baseline_train_curve: TrainCurve | None = None
    per_class: tuple[PerClassRow, ...] | None = None
    confusion: ConfusionMatrix | None = None
    param_changes: tuple[ParamChange, ...] | None = None
    """None: the baseline's params are not known (no git ref, or params.yaml not there)."""
    images: tuple[ChartImage, ...] = ()
    images_note: str | None = None
    full_report_hint: str = "the job summary and the `report.md` file"
    model_unchanged: bool = False
    """DVC found nothing changed for the train stage: the model and metrics are reused."""
    demo_page: DemoPage | None = None
    """The staging service's page (deploy.yaml), None when none is configured."""

    @property
    def baseline_per_class(self) -> dict[str, float] | None:
        """The baseline's per-class accuracy by class name, None when the baseline has none."""
        found = {
            key.removeprefix(PER_CLASS_PREFIX): value
            for key, value in (self.gate.baseline_metrics or {}).items()
            if key.startswith(PER_CLASS_PREFIX)
        }
        return found or None


def diff_params(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[ParamChange, ...]:
    """Changed keys only, in sorted order; a key on one side only is shown as not set."""
    keys = sorted(set(baseline) | set(current))
    return tuple(
        ParamChange(key, baseline.get(key, MISSING), current.get(key, MISSING))
        for key in keys
        if baseline.get(key, MISSING) != current.get(key, MISSING)
    )
