"""Reading what train/evaluate wrote into typed report inputs (edge functions, one per file)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cxml.core.errors import ReportError
from cxml.core.metrics import flatten

GATE_FIX = "re-run `cxml evaluate` (or `python -m cxml.gate`) to rewrite it"


@dataclass(frozen=True)
class GateRule:
    """One line of gate.json's `rules`."""

    rule: str
    metric: str
    value: float | None
    threshold: float | None
    baseline: float | None
    result: Literal["pass", "fail", "skipped"]
    relative: bool
    reason: str | None


@dataclass(frozen=True)
class GateResult:
    """gate.json: the decision, its rules and the baseline the rules compared against."""

    decision: Literal["pass", "fail"]
    rules: tuple[GateRule, ...]
    baseline_metrics: dict[str, float] | None
    """Flattened (`per_class_accuracy.3`) baseline metrics, None when there was no baseline."""
    baseline_ref: str | None
    baseline_source: str
    baseline_description: str

    @property
    def failed_rules(self) -> tuple[GateRule, ...]:
        return tuple(rule for rule in self.rules if rule.result == "fail")

    @property
    def skipped_rules(self) -> tuple[GateRule, ...]:
        return tuple(rule for rule in self.rules if rule.result == "skipped")

    @property
    def baseline_label(self) -> str:
        """Short name of the baseline for table headers: the git ref, `champion`, or `none`."""
        if self.baseline_ref:
            return self.baseline_ref
        return self.baseline_source


@dataclass(frozen=True)
class PerClassRow:
    name: str
    accuracy: float
    support: int


@dataclass(frozen=True)
class ConfusionMatrix:
    classes: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    """`counts[actual][predicted]`, in the order of `classes`."""


TrainCurve = tuple[dict[str, float], ...]
"""plots/train.csv: one mapping per epoch (`epoch`, `loss`, `val_accuracy`, ...)."""


def read_metrics_file(path: Path, *, step: str) -> dict[str, Any]:
    """A DVC metrics JSON object; a missing or malformed file is a ReportError naming the fix."""
    if not path.exists():
        raise ReportError(f"{path}: metrics file not found; run `cxml {step}` first")
    text = path.read_text(encoding="utf-8")
    return parse_metrics_text(text, label=str(path), fix=f"re-run `cxml {step}`")


def parse_metrics_text(text: str, *, label: str, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{label}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}"
        ) from None
    if not isinstance(data, dict):
        raise ReportError(f"{label}: expected a JSON object of metrics; {fix}")
    return data


def read_optional_metrics(path: Path, *, step: str) -> dict[str, Any] | None:
    return read_metrics_file(path, step=step) if path.exists() else None


def read_gate(path: Path) -> GateResult:
    if not path.exists():
        raise ReportError(f"{path}: gate decision not found; run `cxml evaluate` first")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {GATE_FIX}"
        ) from None
    return parse_gate(raw, label=str(path))


def parse_gate(raw: object, *, label: str = "gate.json") -> GateResult:
    """Check gate.json's shape (docs/formats.md) and build a GateResult."""
    if not isinstance(raw, Mapping):
        raise ReportError(f"{label}: expected a JSON object; {GATE_FIX}")
    decision = raw.get("decision")
    if decision not in ("pass", "fail"):
        raise ReportError(
            f"{label}: decision must be 'pass' or 'fail', got {decision!r}; {GATE_FIX}"
        )
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ReportError(f"{label}: rules must be a list; {GATE_FIX}")
    rules = tuple(_parse_rule(item, f"{label}: rules[{i}]") for i, item in enumerate(rules_raw))
    baseline = raw.get("baseline") or {}
    if not isinstance(baseline, Mapping):
        raise ReportError(f"{label}: baseline must be an object or null; {GATE_FIX}")
    baseline_metrics = baseline.get("metrics")
    if baseline_metrics is not None and not isinstance(baseline_metrics, Mapping):
        raise ReportError(f"{label}: baseline.metrics must be an object or null; {GATE_FIX}")
    ref = baseline.get("ref")
    return GateResult(
        decision=decision,
        rules=rules,
        baseline_metrics=flatten(baseline_metrics) if baseline_metrics is not None else None,
        baseline_ref=ref if isinstance(ref, str) and ref else None,
        baseline_source=str(baseline.get("source") or "none"),
        baseline_description=str(baseline.get("description") or "no baseline"),
    )


def _parse_rule(item: object, label: str) -> GateRule:
    if not isinstance(item, Mapping) or not isinstance(item.get("rule"), str):
        raise ReportError(f"{label}: expected an object with a 'rule' string; {GATE_FIX}")
    result = item.get("result")
    if result not in ("pass", "fail", "skipped"):
        raise ReportError(
            f"{label}: result must be pass, fail or skipped, got {result!r}; {GATE_FIX}"
        )
    return GateRule(
        rule=item["rule"],
        metric=str(item.get("metric") or ""),
        value=_number_or_none(item.get("value"), f"{label}.value"),
        threshold=_number_or_none(item.get("threshold"), f"{label}.threshold"),
        baseline=_number_or_none(item.get("baseline"), f"{label}.baseline"),
        result=result,
        relative=bool(item.get("relative", False)),
        reason=str(item["reason"]) if item.get("reason") else None,
    )


def _number_or_none(value: object, label: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"{label}: expected a number or null, got {value!r}; {GATE_FIX}")
    return float(value)


def read_run_info(path: Path) -> dict[str, Any] | None:
    """run.json, or None when it is missing (the report still works without MLflow links)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc.msg}); re-run `cxml train`") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object; re-run `cxml train`")
    return data


def parse_csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def parse_train_curve(text: str, *, label: str) -> TrainCurve:
    """plots/train.csv -> one `{column: number}` per epoch; non-numeric cells are left out."""
    curve: list[dict[str, float]] = []
    for index, row in enumerate(parse_csv_rows(text)):
        values: dict[str, float] = {}
        for column, cell in row.items():
            if column is None or cell is None or cell == "":
                continue
            try:
                values[column] = float(cell)
            except ValueError:
                continue
        values.setdefault("epoch", float(index + 1))
        curve.append(values)
    if not curve:
        raise ReportError(f"{label}: no epochs in the training plot file; re-run `cxml train`")
    return tuple(curve)


def parse_per_class(text: str, *, label: str) -> tuple[PerClassRow, ...]:
    rows: list[PerClassRow] = []
    for index, row in enumerate(parse_csv_rows(text)):
        try:
            rows.append(
                PerClassRow(
                    name=row["class"],
                    accuracy=float(row["accuracy"]),
                    support=int(float(row.get("support") or 0)),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise ReportError(
                f"{label}: row {index + 2} needs class,accuracy,support; re-run `cxml evaluate`"
            ) from None
    return tuple(rows)


def parse_confusion(text: str, *, label: str, class_order: tuple[str, ...] = ()) -> ConfusionMatrix:
    """plots/confusion.csv (`actual,predicted` per test image) -> a count matrix."""
    pairs: list[tuple[str, str]] = []
    for index, row in enumerate(parse_csv_rows(text)):
        actual, predicted = row.get("actual"), row.get("predicted")
        if actual is None or predicted is None:
            raise ReportError(
                f"{label}: row {index + 2} needs actual,predicted; re-run `cxml evaluate`"
            )
        pairs.append((actual, predicted))
    seen = {name for pair in pairs for name in pair}
    classes = [name for name in class_order if name in seen]
    classes += sorted(seen - set(classes), key=_natural_key)
    position = {name: i for i, name in enumerate(classes)}
    counts = [[0] * len(classes) for _ in classes]
    for actual, predicted in pairs:
        counts[position[actual]][position[predicted]] += 1
    return ConfusionMatrix(tuple(classes), tuple(tuple(row) for row in counts))


def _natural_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def load_text_or_none(path: Path) -> str | None:
    """A plots file's text, or None when the step did not write it."""
    try:
        return path.read_text(encoding="utf-8") if path.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(
            f"{path}: cannot be read ({exc}); re-run the step that writes it"
        ) from None
