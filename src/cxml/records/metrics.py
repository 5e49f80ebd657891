"""metrics/*.json: flat DVC metrics files written by train and evaluate."""

from __future__ import annotations

import json
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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{path}: not UTF-8 text; re-run `cxml {step}`") from None
    return parse_metrics_text(text, label=str(path), fix=f"re-run `cxml {step}`")


def read_optional_metrics(path: str | Path, *, step: str) -> dict[str, Any] | None:
    return read_metrics(path, step=step) if Path(path).exists() else None


def parse_metrics_text(text: str, *, label: str, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(
            f"{label}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}"
        ) from None
    except (RecursionError, ValueError):
        raise RecordError(
            f"{label}: not usable JSON (nested too deeply or numbers too long); {fix}"
        ) from None
    if not isinstance(data, dict):
        raise RecordError(f"{label}: expected a JSON object of metrics; {fix}")
    return data
