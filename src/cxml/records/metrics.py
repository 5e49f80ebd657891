"""metrics/*.json: flat DVC metrics files written by train and evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxml.core import files
from cxml.core.errors import RecordError


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    files.write_json(path, metrics)


def read_metrics(path: str | Path, *, step: str) -> dict[str, Any]:
    """A DVC metrics JSON object; a missing or malformed file is a RecordError naming the fix."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: metrics file not found; run `cxml {step}` first")
    fix = f"re-run `cxml {step}`"
    return parse_metrics_text(files.read_utf8(path, fix=fix), label=str(path), fix=fix)


def read_optional_metrics(path: str | Path, *, step: str) -> dict[str, Any] | None:
    return read_metrics(path, step=step) if Path(path).exists() else None


def parse_metrics_text(text: str, *, label: str, fix: str) -> dict[str, Any]:
    """A metrics JSON object; bounded in depth and number size (files.parse_json)."""
    data = files.parse_json(text, label=label, fix=fix)
    if not isinstance(data, dict):
        raise RecordError(f"{label}: expected a JSON object of metrics; {fix}")
    return data
