"""The `cxml` front door: fast help, no heavy imports at start-up, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cxml


def test_help_lists_every_step(tmp_path: Path) -> None:
    result = run_cxml("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "train", "evaluate", "gate", "report", "serve", "redeploy", "init"):
        assert f"  {command} " in result.stdout


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from cxml.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
        "heavy = [m for m in ('torch', 'mlflow', 'torchvision', 'sklearn', 'dvc', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.strip() == ""


def test_unknown_command(tmp_path: Path) -> None:
    result = run_cxml("trian", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr


def test_errors_become_github_annotations(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  lr: fast\n")
    result = run_cxml("train", cwd=tmp_path, env={"GITHUB_ACTIONS": "true"})
    assert result.returncode == 2
    annotation = "::error file=params.yaml,line=2::params.yaml: train.lr: expected a number"
    assert annotation in result.stdout
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: params.yaml: train.lr: expected a number, got 'fast'"
    )


def test_python_dash_m_cxml_is_the_cxml_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cxml", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cxml ")


def test_each_step_package_runs_with_python_dash_m(tmp_path: Path) -> None:
    for module in ("cxml.gate", "cxml.report", "cxml.serve", "cxml.deploy.host"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{module}: {result.stderr}"
        assert "usage:" in result.stdout
