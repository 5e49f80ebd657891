"""Report data for the markdown and Mermaid tests: a gate, its rules and a small report."""

from __future__ import annotations

from dataclasses import replace

from cxml.records.gate import NO_BASELINE, BaselineInfo
from cxml.report.model import (
    ConfusionMatrix,
    GateResult,
    GateRule,
    ParamChange,
    PerClassRow,
    ReportData,
    RunLinks,
)


def rule(
    text: str, value: float, threshold: float | None, result: str, **extra: object
) -> GateRule:
    fields: dict[str, object] = {
        "rule": text,
        "metric": text.split()[0],
        "value": value,
        "threshold": threshold,
        "baseline": None,
        "result": result,
        "relative": False,
        "reason": None,
    }
    fields.update(extra)
    return GateRule(**fields)  # type: ignore[arg-type]


def gate(
    decision: str = "pass",
    baseline: dict[str, float] | None = None,
    rules: tuple[GateRule, ...] = (),
    *,
    no_baseline_because: str = "no baseline",
) -> GateResult:
    """A gate.json against origin/main, or (baseline None) against no baseline at all."""
    if baseline is None:
        baseline_info = replace(NO_BASELINE, description=no_baseline_because)
    else:
        baseline_info = BaselineInfo(
            source="git:origin/main",
            description="metrics/eval.json at origin/main",
            metrics=baseline,
            ref="origin/main",
        )
    return GateResult(
        decision=decision,  # type: ignore[arg-type]
        rules=rules or (rule("accuracy >= 0.9", 0.97, 0.9, "pass"),),
        baseline=baseline_info,
    )


def report_data(**changes: object) -> ReportData:
    data = ReportData(
        name="digits",
        metrics={
            "accuracy": 0.97,
            "latency_p95_ms": 1.5,
            "num_test_images": 270.0,
            "per_class_accuracy.0": 0.99,
        },
        gate=gate(
            baseline={
                "accuracy": 0.96,
                "latency_p95_ms": 1.2,
                "num_test_images": 270.0,
                "per_class_accuracy.0": 0.98,
            }
        ),
        links=RunLinks(
            version="0.1.0",
            commit="0123456789abcdef",
            run_url="https://github.com/o/r/actions/runs/5",
        ),
        per_class=(PerClassRow("0", 0.99, 27),),
        confusion=ConfusionMatrix(("0", "1"), ((26, 1), (0, 27))),
        param_changes=(ParamChange("train.lr", 0.05, 0.1),),
        train_curve=(
            {"epoch": 1.0, "loss": 1.0, "val_loss": 1.1, "accuracy": 0.5, "val_accuracy": 0.45},
        ),
    )
    return replace(data, **changes)  # type: ignore[arg-type]
