"""Which way is better, declared in params.yaml: a real `cxml gate` and `cxml report` in a git repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxml.core.console import run_entry_point
from cxml.gate.step import main as gate_main
from cxml.records.gate import read_gate
from cxml.report.step import main as report_main
from tests.conftest import git

PARAMS = """\
evaluate:
  baseline: git:main
  gate:
    - rmse <= baseline * 1.1
    - accuracy >= 0.5
  directions:
    rmse: lower
    my_score: higher
"""


def commit_metrics(root: Path, metrics: dict[str, float], message: str) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "eval.json").write_text(json.dumps(metrics))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """main holds rmse 0.12; the working tree has rmse 0.15 (worse: lower is better)."""
    for name in ("GITHUB_ACTIONS", "GITHUB_BASE_REF", "GITHUB_EVENT_PATH", "CXML_PARAMS"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "params.yaml").write_text(PARAMS)
    commit_metrics(root, {"rmse": 0.12, "accuracy": 0.8, "my_score": 0.4}, "baseline")
    (root / "metrics" / "eval.json").write_text(
        json.dumps({"rmse": 0.15, "accuracy": 0.8, "my_score": 0.5})
    )
    monkeypatch.chdir(root)
    return root


def test_rmse_that_rose_fails_the_gate_saying_lower_is_better_and_the_report_says_worse(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_entry_point(gate_main, []) == 1
    logged = capsys.readouterr().out
    assert "rmse rose 0.12 -> 0.15 (lower is better), threshold 0.132" in logged

    gate = read_gate(repo / "gate.json")
    assert gate.directions is not None
    assert gate.directions["rmse"] == "lower" and gate.directions["my_score"] == "higher"

    assert run_entry_point(report_main, ["--dry-run", "--no-images"]) == 0
    report = (repo / "report.md").read_text()
    assert "| `rmse` | 0.1500 | 0.1200 | ▲ +0.0300 (+25.00%) | 🔴 worse |" in report
    assert "| `my_score` | 0.5000 | 0.4000 | ▲ +0.1000 (+25.00%) | 🟢 better |" in report
    assert "rmse rose 0.12 -&gt; 0.15 (lower is better)" in report or (
        "rmse rose 0.12 -\\> 0.15 (lower is better)" in report
    )


def test_a_declared_direction_turns_the_verdict_around(repo: Path) -> None:
    (repo / "params.yaml").write_text(PARAMS.replace("my_score: higher", "my_score: lower"))
    assert run_entry_point(gate_main, ["--no-fail"]) == 0
    assert run_entry_point(report_main, ["--dry-run", "--no-images"]) == 0
    report = (repo / "report.md").read_text()
    assert "| `my_score` | 0.5000 | 0.4000 | ▲ +0.1000 (+25.00%) | 🔴 worse |" in report


@pytest.mark.parametrize(
    ("directions", "message"),
    [
        (
            "{rmse: down}",
            "params.yaml: evaluate.directions.rmse: expected one of 'higher', 'lower', got 'down'",
        ),
        ("[rmse]", "params.yaml: evaluate.directions: expected a mapping, got a list"),
    ],
)
def test_an_unknown_direction_is_one_error_line_exit_2(
    repo: Path, capsys: pytest.CaptureFixture[str], directions: str, message: str
) -> None:
    (repo / "params.yaml").write_text(f"evaluate:\n  directions: {directions}\n")
    assert run_entry_point(gate_main, []) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (repo / "gate.json").exists()


def test_within_noise_shows_in_the_gate_message(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One image of 269 is noise: the rule still decides, but the message says so."""
    (repo / "params.yaml").write_text(
        "evaluate:\n  baseline: git:main\n  gate: [accuracy >= baseline]\n"
    )
    commit_metrics(repo, {"accuracy": 250 / 269, "num_test_images": 269}, "baseline 2")
    (repo / "metrics" / "eval.json").write_text(
        json.dumps({"accuracy": 249 / 269, "num_test_images": 269})
    )
    assert run_entry_point(gate_main, []) == 1
    assert "within noise (-1 image of 269)" in capsys.readouterr().out


def test_the_params_diff_shows_declared_directions_as_yaml(repo: Path) -> None:
    assert run_entry_point(gate_main, ["--no-fail"]) == 0
    (repo / "params.yaml").write_text(PARAMS.replace("my_score: higher", "my_score: lower"))
    assert run_entry_point(report_main, ["--dry-run", "--no-images"]) == 0
    report = (repo / "report.md").read_text()
    assert (
        "| `evaluate.directions` | `{rmse: lower, my_score: higher}` "
        "| `{rmse: lower, my_score: lower}` |"
    ) in report
