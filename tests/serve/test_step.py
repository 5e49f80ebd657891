"""`cxml serve`'s arguments: the model `cxml train` writes is the default."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cxml.serve.step import DEFAULT_MODEL, parse_args
from tests.support.actions import PYTHON, tool_env


def test_the_trained_model_is_the_default() -> None:
    args = parse_args([])
    assert args.model == DEFAULT_MODEL == "model/model.pt"
    assert args.bundle is None


def test_a_bundle_still_excludes_a_model() -> None:
    assert parse_args(["--bundle", "releases/r1"]).bundle == "releases/r1"


def test_without_a_trained_model_serve_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "cxml.serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--model model/model.pt: file not found; run `cxml train`" in result.stderr
    assert "Traceback" not in result.stderr
