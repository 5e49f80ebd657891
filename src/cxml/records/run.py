"""run.json: what train recorded about its run (MLflow run, registered version, commit)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cxml.core import files
from cxml.core.errors import RecordError

RUN_FIX = "re-run `cxml train` to rewrite it"


@dataclass(frozen=True)
class RunRecord:
    run_id: str | None = None
    tracking_uri: str | None = None
    """Already redacted: run.json is shared with the report and the serving host."""
    experiment: str | None = None
    experiment_id: str | None = None
    """MLflow's id of the experiment, for links into its UI."""
    model_name: str | None = None
    model_version: str | None = None
    model_path: str | None = None
    git_commit: str | None = None
    epochs: int | None = None
    train_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_run(path: str | Path, record: RunRecord) -> None:
    files.write_json(path, record.to_dict())


def read_run(path: str | Path) -> RunRecord | None:
    """run.json, or None when it is missing (steps work without MLflow links)."""
    path = Path(path)
    if not path.exists():
        return None
    raw = files.parse_json(files.read_utf8(path, fix=RUN_FIX), label=str(path), fix=RUN_FIX)
    return parse_run(raw, label=str(path))


def parse_run(raw: object, *, label: str = "run.json") -> RunRecord:
    if not isinstance(raw, dict):
        raise RecordError(f"{label}: expected a JSON object; {RUN_FIX}")
    epochs = raw.get("epochs")
    seconds = raw.get("train_seconds")
    return RunRecord(
        run_id=_text(raw.get("run_id")),
        tracking_uri=_text(raw.get("tracking_uri")),
        experiment=_text(raw.get("experiment")),
        experiment_id=_text(raw.get("experiment_id")),
        model_name=_text(raw.get("model_name")),
        model_version=_text(raw.get("model_version")),
        model_path=_text(raw.get("model_path")),
        git_commit=_text(raw.get("git_commit")),
        epochs=epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None,
        train_seconds=float(seconds)
        if isinstance(seconds, int | float) and not isinstance(seconds, bool)
        else None,
    )


def _text(value: object) -> str | None:
    """A string field; numbers (a version written as 3) become text, anything else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float):
        return str(value)
    return None
