"""Atomic writes: all or nothing, and files that read like any other file the user writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cxml.core import files


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
