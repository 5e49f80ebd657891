"""gate.json: the gate's decision, written by evaluate / `cxml gate`, read by report, run, redeploy."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cxml.core import files
from cxml.core.errors import RecordError
from cxml.core.metrics import flatten

GATE_FIX = "re-run `cxml evaluate` (or `cxml gate`) to rewrite it"

RuleOutcome = Literal["pass", "fail", "skipped"]
Decision = Literal["pass", "fail"]


@dataclass(frozen=True)
class GateRule:
    """One line of gate.json's `rules`: a rule and what it measured."""

    rule: str
    metric: str
    value: float | None
    threshold: float | None
    baseline: float | None
    result: RuleOutcome
    relative: bool
    reason: str | None
    op: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "metric": self.metric,
            "op": self.op,
            "value": self.value,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "result": self.result,
            "relative": self.relative,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class BaselineInfo:
    """What the relative rules compared against, and where it came from."""

    source: str
    """`git:<ref>`, `champion`, or `none`."""
    description: str
    metrics: Mapping[str, Any] | None
    ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ref": self.ref,
            "description": self.description,
            "metrics": dict(self.metrics) if self.metrics is not None else None,
        }


NO_BASELINE = BaselineInfo(source="none", description="no baseline", metrics=None)


@dataclass(frozen=True)
class GateResult:
    """gate.json: the decision, its rules, the metrics and the baseline they were compared with."""

    decision: Decision
    rules: tuple[GateRule, ...]
    baseline: BaselineInfo = NO_BASELINE
    metrics: Mapping[str, float] | None = None
    model_path: str | None = None
    """The model file the gate judged (None in a gate.json older than the binding)."""
    model_sha256: str | None = None
    """Its SHA-256: redeploy refuses a model file with other bytes."""
    model_run_id: str | None = None
    """The MLflow run that trained it (from run.json), None without tracking."""
    directions: Mapping[str, str] | None = None
    """Which way is better per metric (`higher`/`lower`, from params.yaml or the name), so the
    report judges changes without params.yaml; None in an older gate.json."""

    @property
    def passed(self) -> bool:
        return self.decision == "pass"

    @property
    def failed_rules(self) -> tuple[GateRule, ...]:
        return tuple(rule for rule in self.rules if rule.result == "fail")

    @property
    def skipped_rules(self) -> tuple[GateRule, ...]:
        return tuple(rule for rule in self.rules if rule.result == "skipped")

    @property
    def baseline_metrics(self) -> dict[str, float] | None:
        """Flattened (`per_class_accuracy.3`) baseline metrics, None when there was no baseline."""
        metrics = self.baseline.metrics
        return flatten(metrics) if metrics is not None else None

    @property
    def baseline_ref(self) -> str | None:
        return self.baseline.ref or None

    @property
    def baseline_source(self) -> str:
        return self.baseline.source

    @property
    def baseline_description(self) -> str:
        return self.baseline.description

    @property
    def baseline_label(self) -> str:
        """Short name of the baseline for table headers: the git ref, `champion`, or `none`."""
        return self.baseline_ref or self.baseline_source

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "baseline": self.baseline.to_dict(),
            "metrics": dict(self.metrics) if self.metrics is not None else None,
            "rules": [rule.to_dict() for rule in self.rules],
            "model": {
                "path": self.model_path,
                "sha256": self.model_sha256,
                "run_id": self.model_run_id,
            },
            "directions": dict(self.directions) if self.directions is not None else None,
        }


def file_sha256(path: str | Path) -> str | None:
    """The SHA-256 (hex) of a model file, as gate.json records it; None when it is missing."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return digest.hexdigest()


def write_gate(path: str | Path, gate: GateResult) -> None:
    files.write_json(path, gate.to_dict())


def read_gate(path: str | Path) -> GateResult:
    """gate.json as a typed record; missing or malformed is a RecordError naming the fix."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: gate decision not found; run `cxml evaluate` first")
    raw = files.parse_json(files.read_utf8(path, fix=GATE_FIX), label=str(path), fix=GATE_FIX)
    return parse_gate(raw, label=str(path))


def parse_gate(raw: object, *, label: str = "gate.json") -> GateResult:
    """Check gate.json's shape (docs/formats.md) and build a GateResult."""
    if not isinstance(raw, Mapping):
        raise RecordError(f"{label}: expected a JSON object; {GATE_FIX}")
    decision = raw.get("decision")
    if decision not in ("pass", "fail"):
        raise RecordError(
            f"{label}: decision must be 'pass' or 'fail', got {decision!r}; {GATE_FIX}"
        )
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise RecordError(f"{label}: rules must be a list; {GATE_FIX}")
    rules = tuple(_parse_rule(item, f"{label}: rules[{i}]") for i, item in enumerate(rules_raw))
    model = _parse_model(raw.get("model"), label)
    return GateResult(
        decision=decision,
        rules=rules,
        baseline=_parse_baseline(raw.get("baseline"), label),
        metrics=_parse_metrics(raw.get("metrics"), label),
        model_path=model.get("path"),
        model_sha256=model.get("sha256"),
        model_run_id=model.get("run_id"),
        directions=_parse_directions(raw.get("directions"), label),
    )


def _parse_directions(raw: object, label: str) -> dict[str, str] | None:
    """`directions`: metric -> `higher` | `lower`; absent (None) in an older gate.json."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not all(
        isinstance(key, str) and value in ("higher", "lower") for key, value in raw.items()
    ):
        raise RecordError(
            f"{label}: directions must map metric names to 'higher' or 'lower'; {GATE_FIX}"
        )
    return dict(raw)


def _parse_model(raw: object, label: str) -> dict[str, str | None]:
    """`model`: path, sha256 and run_id, each a string or null; absent in an old gate.json."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RecordError(f"{label}: model must be an object or null; {GATE_FIX}")
    model: dict[str, str | None] = {}
    for key in ("path", "sha256", "run_id"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise RecordError(f"{label}: model.{key} must be a string or null; {GATE_FIX}")
        model[key] = value or None
    sha256 = model.get("sha256")
    if sha256 is not None and not _is_sha256(sha256):
        raise RecordError(f"{label}: model.sha256 must be 64 hex digits or null; {GATE_FIX}")
    return model


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _parse_baseline(raw: object, label: str) -> BaselineInfo:
    baseline = raw or {}
    if not isinstance(baseline, Mapping):
        raise RecordError(f"{label}: baseline must be an object or null; {GATE_FIX}")
    metrics = baseline.get("metrics")
    if metrics is not None and not isinstance(metrics, Mapping):
        raise RecordError(f"{label}: baseline.metrics must be an object or null; {GATE_FIX}")
    ref = baseline.get("ref")
    return BaselineInfo(
        source=str(baseline.get("source") or "none"),
        description=str(baseline.get("description") or "no baseline"),
        metrics=metrics,
        ref=ref if isinstance(ref, str) and ref else None,
    )


def _parse_metrics(raw: object, label: str) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RecordError(f"{label}: metrics must be an object or null; {GATE_FIX}")
    return flatten(raw)


def _parse_rule(item: object, label: str) -> GateRule:
    if not isinstance(item, Mapping) or not isinstance(item.get("rule"), str):
        raise RecordError(f"{label}: expected an object with a 'rule' string; {GATE_FIX}")
    result = item.get("result")
    if result not in ("pass", "fail", "skipped"):
        raise RecordError(
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
        op=str(item.get("op") or ""),
    )


def _number_or_none(value: object, label: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"{label}: expected a number or null, got {value!r}; {GATE_FIX}")
    return float(value)
