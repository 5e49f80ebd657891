"""Building a release on the client: its record, described from what train and evaluate wrote.

The bundle's files and their formats belong to `cxml.records.release`; this module only decides
what goes into a new release record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cxml.records.gate import GateResult
from cxml.records.release import ReleaseInfo, ServingConfig, release_name
from cxml.records.run import RunRecord


def describe_release(
    model_sha256: str,
    model_metadata: dict[str, Any],
    run: RunRecord | None,
    gate: GateResult | None,
    metrics: Mapping[str, Any],
    *,
    version: str | None,
    forced_reason: str | None,
    created_at: str,
    serving: ServingConfig,
) -> ReleaseInfo:
    """The release record of a model file: its version, where it came from, what it scored."""
    run = run or RunRecord()
    model_version = version or run.model_version or "local"
    return ReleaseInfo(
        release=release_name(model_version, model_sha256, serving),
        model_version=model_version,
        model_name=run.model_name,
        run_id=run.run_id,
        tracking_uri=run.tracking_uri,
        git_commit=run.git_commit or _text(model_metadata.get("git_commit")),
        created_at=created_at,
        model_sha256=model_sha256,
        model_metadata=model_metadata,
        metrics=numeric_metrics(metrics),
        gate_decision=gate.decision if gate is not None else None,
        forced_reason=forced_reason,
        serving=serving,
    )


def release_metrics(
    eval_metrics: Mapping[str, Any] | None, gate: GateResult | None
) -> Mapping[str, Any]:
    """The metrics a release records: evaluate's metrics file, else the ones in gate.json."""
    if eval_metrics:
        return eval_metrics
    if gate is not None and gate.metrics:
        return gate.metrics
    return {}


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
