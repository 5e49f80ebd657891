"""Atomic writes: all or nothing, and files that read like any other file the user writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cxml.core import files
from cxml.core.errors import RecordError


def test_a_new_file_gets_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        files.write_text(tmp_path / "report.md", "hello\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644


def test_an_existing_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "gate.json"
    target.write_text("{}")
    target.chmod(0o640)
    files.write_json(target, {"decision": "pass"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert files.read_json(target) == {"decision": "pass"}


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
        ('{"a":' * 500 + "1" + "}" * 500, "JSON nested deeper than 64 levels"),
        ('{"accuracy": ' + "1" * 5000 + "}", "not usable JSON"),
        ('{"accuracy": ' + "1" * 400 + "}", "a number with 400 digits is too large"),
        ('{"accuracy": 0.9', "not valid JSON (Expecting"),
    ],
)
def test_parse_json_bounds_depth_and_numbers(text: str, message: str) -> None:
    with pytest.raises(RecordError) as caught:
        files.parse_json(text, label="metrics/eval.json", fix="re-run it")
    assert str(caught.value).startswith("metrics/eval.json: ")
    assert message in str(caught.value) and str(caught.value).endswith("re-run it")


def test_numbers_that_fit_a_float_still_parse() -> None:
    assert files.parse_json('{"a": ' + "9" * 300 + "}", label="x", fix="y") == {"a": int("9" * 300)}


@pytest.mark.parametrize(
    "content", ['{"a": 1}'.encode("utf-16"), b'{"a": "caf\xe9"}', b"\x00\xff\xfe"]
)
def test_read_utf8_refuses_other_encodings(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "run.json"
    path.write_bytes(content)
    with pytest.raises(RecordError, match=r"run\.json: not UTF-8 text; save it as UTF-8 or fix"):
        files.read_utf8(path, fix="fix")


def test_a_csv_field_over_128_kb_is_read_and_a_huge_one_is_an_error() -> None:
    wide = "x" * 200_000  # past the csv module's default limit of 131,072
    assert files.parse_csv(f"class,accuracy\n{wide},1\n", label="p", fix="f") == [
        {"class": wide, "accuracy": "1"}
    ]
    huge = "x" * (files.MAX_CSV_FIELD + 1)
    with pytest.raises(RecordError, match=r"plots/train\.csv: not a usable CSV file"):
        files.parse_csv(f"epoch\n{huge}\n", label="plots/train.csv", fix="f")
