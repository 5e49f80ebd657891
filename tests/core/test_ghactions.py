"""GitHub Actions I/O: the job summary stays within GitHub's 1 MiB, counted in bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxml.core import ghactions


@pytest.fixture
def summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "step_summary"
    path.write_text("")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))
    return path


def test_multibyte_text_is_cut_at_one_mib_of_bytes_on_a_character_boundary(summary: Path) -> None:
    summary.write_text("# earlier\n\n", encoding="utf-8")
    text = "€" * 400_000  # 400,000 characters, 1,200,000 bytes
    ghactions.append_summary(text)
    written = summary.read_bytes()
    assert len(written) <= ghactions.STEP_SUMMARY_LIMIT_BYTES < len(text.encode())
    content = written.decode("utf-8")  # no character cut in half
    assert content.startswith("# earlier\n\n€€€")
    assert content.endswith("… (cut at GitHub's 1 MiB job-summary limit)\n\n")


def test_a_summary_that_fits_is_written_whole(summary: Path) -> None:
    ghactions.append_summary("é" * 1000)
    assert summary.read_text(encoding="utf-8") == "é" * 1000 + "\n\n"
    assert ghactions.summary_room() == ghactions.STEP_SUMMARY_LIMIT_BYTES - 2002


def test_a_full_summary_takes_nothing_more(summary: Path) -> None:
    summary.write_bytes(b"x" * ghactions.STEP_SUMMARY_LIMIT_BYTES)
    ghactions.append_summary("more")
    assert summary.stat().st_size == ghactions.STEP_SUMMARY_LIMIT_BYTES
