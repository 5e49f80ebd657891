"""How output is shaped for the reader: progress bar or plain lines, folded groups in Actions."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from cxml.core import console, ghactions
from tests.support.actions import PYTHON, tool_env


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CI", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)


def test_a_terminal_gets_a_bar_and_a_pipe_plain_lines() -> None:
    assert console.want_progress(None, Terminal()) is True
    assert console.want_progress(None, io.StringIO()) is False


@pytest.mark.parametrize(
    ("name", "value"), [("CI", "true"), ("CI", "1"), ("GITHUB_ACTIONS", "true")]
)
def test_ci_means_plain_lines_even_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert console.want_progress(None, Terminal()) is False


def test_the_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert console.want_progress(True, io.StringIO()) is True
    monkeypatch.delenv("CI")
    assert console.want_progress(False, Terminal()) is False


def test_ci_false_is_not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    assert console.want_progress(None, Terminal()) is True


def test_train_documents_both_flags() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "cxml.train", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    assert "--progress a live progress bar" in help_text
    assert "--no-progress plain lines, one per epoch" in help_text


def test_a_group_folds_its_lines_in_github_actions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with ghactions.log_group("dvc repro"):
        print("stage train")
    assert capsys.readouterr().out == "::group::dvc repro\nstage train\n::endgroup::\n"


def test_a_group_is_closed_when_the_work_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with pytest.raises(RuntimeError), ghactions.log_group("training"):
        raise RuntimeError("boom")
    assert capsys.readouterr().out.endswith("::endgroup::\n")


def test_no_group_outside_actions_or_when_disabled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with ghactions.log_group("dvc repro"):
        print("line")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with ghactions.log_group("training", enabled=False):
        print("line")
    assert capsys.readouterr().out == "line\nline\n"
    assert "GITHUB_ACTIONS" in os.environ


def test_an_error_about_a_yaml_key_names_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(
        "# comment\ntrain:\n  epochs: 3\n  lr: fast\nevaluate:\n  gate:\n    - a >= 1\n    - b >= 2\n",
        encoding="utf-8",
    )
    assert ghactions.error_location("params.yaml: train.lr: expected a number") == (
        "params.yaml",
        4,
    )
    assert ghactions.error_location("params.yaml: evaluate.gate[1]: unknown metric") == (
        "params.yaml",
        8,
    )
    assert ghactions.error_location("params.yaml: train.nope: unknown key") == ("params.yaml", 2)
    assert ghactions.error_location("params.yaml: not valid YAML at line 7; fix") == (
        "params.yaml",
        7,
    )
    absolute = f"{tmp_path / 'params.yaml'}: train.epochs: must be at least 1"
    assert ghactions.error_location(absolute) == ("params.yaml", 3)
    assert ghactions.error_location("params.yaml: file not found; create it") is None
    assert ghactions.error_location("other.yaml: train.lr: x") is None  # no such file
    assert ghactions.error_location("the host is down") is None


def test_the_annotation_carries_file_and_line_escaped() -> None:
    assert ghactions.error_annotation("bad", file="a,b:c.yaml", line=3) == (
        "::error file=a%2Cb%3Ac.yaml,line=3::bad"
    )
    assert ghactions.error_annotation("bad\nline") == "::error::bad%0Aline"
