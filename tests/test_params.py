"""`cxml params check` and the pre-commit hook that runs it (.pre-commit-hooks.yaml)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cxml import init
from tests.support.actions import PYTHON, REPO_ROOT, tool_env


def hook() -> dict[str, Any]:
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (found,) = [h for h in hooks if h["id"] == "cxml-check-params"]
    assert isinstance(found, dict)
    return found


def run_hook(cwd: Path, *files: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The hook's entry as pre-commit runs it: the `cxml` script with the staged file names."""
    command = shlex.split(hook()["entry"])
    assert command[0] == "cxml"
    return subprocess.run(
        [PYTHON, "-m", "cxml.cli", *command[1:], *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**tool_env(), **extra_env},
        timeout=120,
    )


def test_the_hook_runs_on_params_files_only() -> None:
    pattern = re.compile(hook()["files"])
    assert pattern.search("params.yaml") and pattern.search("models/a/params.yaml")
    assert not pattern.search("deploy.yaml") and not pattern.search("my-params.yaml.bak")
    assert hook()["language"] == "python" and hook()["pass_filenames"] is True


def test_the_params_init_writes_pass(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(init.template_text("params.yaml"), encoding="utf-8")
    result = run_hook(tmp_path, "params.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "params.yaml: ok (2 gate rules)" in result.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("lr: 0.05", "lr: fast"), "params.yaml: train.lr: expected a number, got 'fast'"),
        (("epochs: 15", "epochs: 0"), "params.yaml: train.epochs: must be at least 1"),
        (("accuracy >= 0.9", "acuracy >= 0.9"), "acuracy"),
        (("baseline: auto ", "baseline: 'git:' "), "git: needs a ref"),
    ],
)
def test_a_bad_params_file_is_one_error_and_exit_2(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = init.template_text("params.yaml")
    assert change[0] in text
    (tmp_path / "params.yaml").write_text(text.replace(*change), encoding="utf-8")
    result = run_hook(tmp_path, "params.yaml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_without_files_it_checks_params_yaml_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    result = run_hook(tmp_path)
    assert result.returncode == 2
    assert "params.yaml: file not found" in result.stderr


def test_in_actions_the_annotation_points_at_the_line(tmp_path: Path) -> None:
    text = init.template_text("params.yaml").replace("lr: 0.05", "lr: fast")
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.strip().startswith("lr:"))
    result = run_hook(tmp_path, "params.yaml", GITHUB_ACTIONS="true")
    assert result.returncode == 2
    assert f"::error file=params.yaml,line={line}::params.yaml: train.lr: expected a number" in (
        result.stdout
    )


def test_a_yaml_syntax_error_points_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 3\n  lr: [1,\n", encoding="utf-8")
    result = run_hook(tmp_path, "params.yaml", GITHUB_ACTIONS="true")
    assert result.returncode == 2
    assert re.search(
        r"^::error file=params\.yaml,line=\d+::params\.yaml: not valid YAML", result.stdout, re.M
    )
