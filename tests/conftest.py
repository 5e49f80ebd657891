"""Shared fixtures: a clean environment, a working directory, and helpers to run cxml for real."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Variables that would leak the developer's or CI's context into the code under test.
# (importing torch._dynamo sets TORCHINDUCTOR_CACHE_DIR in the test process itself)
_LEAKY_PREFIXES = ("GITHUB_", "CI_", "MLFLOW_", "CXML_", "RUNNER_", "GITLAB_", "TORCHINDUCTOR_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES) or name in ("ACT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    yield
    # What the test itself wrote into os.environ outside monkeypatch (mlflow.set_tracking_uri
    # sets MLFLOW_TRACKING_URI; cxml.repro sets CXML_DEVICE) must not reach later tests or the
    # module-scoped fixtures they start; monkeypatch then restores what was there before.
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES):
            os.environ.pop(name, None)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that is the current directory for the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


GIT_ENV = {
    "GIT_AUTHOR_NAME": "cxml test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "cxml test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
"""A git identity and no user/system config, so tests behave the same on every machine."""


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with the test identity; returns stdout without the trailing newline."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
        timeout=120,
    )
    return result.stdout.strip()


def run_cxml(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python -m cxml.cli ...` in a real subprocess and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [PYTHON, "-m", "cxml.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_params(directory: Path, text: str) -> Path:
    path = directory / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


FAST_PARAMS = """
train:
  epochs: 3
  batch_size: 128
tracking:
  enabled: false
"""


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real `cxml run` on the digits (few epochs, MLflow on SQLite), shared read-only."""
    directory = tmp_path_factory.mktemp("trained")
    write_params(directory, "train:\n  epochs: 4\n  batch_size: 128\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    result = subprocess.run(
        [PYTHON, "-m", "cxml.cli", "run"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    yield directory
