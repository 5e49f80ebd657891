"""The records' readers: every malformed file is one RecordError naming the file and the fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cxml.core.errors import RecordError
from cxml.core.metrics import flatten
from cxml.records.gate import read_gate
from cxml.records.metrics import read_metrics
from cxml.records.run import read_run

READERS: dict[str, Callable[[Path], Any]] = {
    "gate.json": read_gate,
    "run.json": read_run,
    "eval.json": lambda path: flatten(read_metrics(path, step="evaluate")),
}
BAD_CONTENT = {
    "utf-16": ('{"decision": "pass"}'.encode("utf-16"), "not UTF-8 text"),
    "latin-1": (b'{"decision": "pass", "x": "caf\xe9"}', "not UTF-8 text"),
    "nested 100k deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "nested 900 deep": (b'{"a":' * 900 + b"1" + b"}" * 900, "nested deeper than 64 levels"),
    "5,000-digit integer": (b'{"epochs": ' + b"1" * 5000 + b"}", "not usable JSON"),
    # fits an int, not a float: was an OverflowError where the value became a float
    "400-digit integer": (
        b'{"decision": "pass", "metrics": {"a": 1}, "train_seconds": '
        + b"1" * 400
        + b', "accuracy": '
        + b"1" * 400
        + b"}",
        "a number with 400 digits is too large",
    ),
}


@pytest.mark.parametrize("name", list(READERS))
@pytest.mark.parametrize("case", list(BAD_CONTENT))
def test_bad_record_files_are_one_record_error(tmp_path: Path, name: str, case: str) -> None:
    content, message = BAD_CONTENT[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RecordError) as caught:
        READERS[name](path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    assert "re-run" in text  # the fix
