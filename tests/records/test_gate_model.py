"""gate.json's `model`: the model the gate judged (path, SHA-256, run id), written and read back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cxml.core.errors import RecordError
from cxml.gate.decide import run_gate
from cxml.records.gate import NO_BASELINE, GateResult, read_gate
from cxml.records.run import RunRecord, write_run


def passing_gate(folder: Path, model: Path) -> GateResult:
    """`accuracy >= 0.9` passed on 0.95, judging `model` with `folder`/run.json; written to
    `folder`/gate.json."""
    return run_gate(
        ["accuracy >= 0.9"],
        {"accuracy": 0.95},
        NO_BASELINE,
        str(folder / "gate.json"),
        model_path=str(model),
        run_info=str(folder / "run.json"),
    )


def test_the_judged_model_round_trips(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights" * 1000)
    write_run(tmp_path / "run.json", RunRecord(run_id="abc123", model_path=str(model)))
    written = passing_gate(tmp_path, model)
    raw = json.loads((tmp_path / "gate.json").read_text())
    expected_sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert raw["model"] == {"path": str(model), "sha256": expected_sha, "run_id": "abc123"}
    read = read_gate(tmp_path / "gate.json")
    assert read == written
    assert (read.model_path, read.model_sha256, read.model_run_id) == (
        str(model),
        expected_sha,
        "abc123",
    )


def test_a_missing_model_or_run_records_nulls(tmp_path: Path) -> None:
    passing_gate(tmp_path, tmp_path / "gone.pt")
    raw = json.loads((tmp_path / "gate.json").read_text())
    assert raw["model"] == {"path": str(tmp_path / "gone.pt"), "sha256": None, "run_id": None}
    read = read_gate(tmp_path / "gate.json")
    assert read.model_sha256 is None and read.model_run_id is None


def test_a_run_json_about_another_model_gives_no_run_id(tmp_path: Path) -> None:
    model = tmp_path / "other.pt"
    model.write_bytes(b"x")
    write_run(tmp_path / "run.json", RunRecord(run_id="abc123", model_path="model/model.pt"))
    gate = passing_gate(tmp_path, model)
    assert gate.model_run_id is None and gate.model_sha256 is not None


def test_an_old_gate_json_reads_as_no_model(tmp_path: Path) -> None:
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"decision": "pass", "rules": []}))
    gate = read_gate(path)
    assert (gate.model_path, gate.model_sha256, gate.model_run_id) == (None, None, None)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("yes", "model must be an object or null"),
        ({"sha256": 5}, "model.sha256 must be a string or null"),
        ({"sha256": "abc"}, "model.sha256 must be 64 hex digits or null"),
        ({"run_id": ["x"]}, "model.run_id must be a string or null"),
    ],
)
def test_a_malformed_model_is_a_record_error(tmp_path: Path, model: object, message: str) -> None:
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"decision": "pass", "rules": [], "model": model}))
    with pytest.raises(RecordError, match=message):
        read_gate(path)
