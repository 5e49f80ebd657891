"""Running cxml's composite actions for real: `act` in host mode on a temporary git repository.

The temporary repository is a user's repository that also holds a copy of this repository's
actions and package source (`action.yml`, `actions/`, `src/`, `pyproject.toml`), so a workflow
step `uses: ./actions/train` runs the action exactly as a remote `uses: org/cxml/actions/train@v1`
would: `github.action_path` points into the checkout, and the setup script installs the package
from there.

Fast installs: the actions get `python: <this venv's python>`, so the environment they build is
layered over this venv's site-packages (torch, mlflow, dvc are reused; only cxml itself is
installed, ~10 s cold, <1 s warm). act keeps `RUNNER_TOOL_CACHE` under `$XDG_CACHE_HOME/act`,
which the tests point at a temporary directory so cold and warm runs are measured, not assumed.

Import what you need explicitly: `from tests.support.actions import act_env, make_action_repo`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import git

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent
ORIGIN = "https://github.com/acme/widgets.git"
REPOSITORY = "acme/widgets"
ACTION_FILES = [REPO_ROOT / "action.yml", *sorted((REPO_ROOT / "actions").glob("*/action.yml"))]
TEMPLATE_DIR = REPO_ROOT / "workflows-templates"
PACKAGE_TEMPLATE_DIR = REPO_ROOT / "src" / "cxml" / "templates"
# Few epochs: the point is the plumbing, not the accuracy (digits reach the 0.9 gate anyway).
ACT_PARAMS = "train:\n  epochs: 3\n  batch_size: 128\n"
# A PR title and branch a careless workflow would execute: `rm -rf ~` and command substitution.
INJECTION_TITLE = 'Tune lr "; rm -rf ~ # $(id) `id` ${HOME}'
INJECTION_BRANCH = 'feature/"; rm -rf ~ #$(id)'


def tool(name: str) -> str:
    """Path of a test tool installed from .ci/requirements-test.txt (or Debian), else skip."""
    found = shutil.which(name, path=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip(f"{name} is not installed: pip install -r .ci/requirements-test.txt")
    return found


def tool_env() -> dict[str, str]:
    """Environment whose PATH finds this venv's tools (actionlint -> shellcheck, act, dvc)."""
    return {**os.environ, "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])}


def load_script(path: Path) -> ModuleType:
    """Import one of the stdlib-only action helper scripts (actions/setup/*.py) as a module."""
    spec = importlib.util.spec_from_file_location(f"cxml_action_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def copy_action_source(destination: Path) -> None:
    """What a checkout of cxml at a tag holds that the actions need."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copy2(REPO_ROOT / "action.yml", destination / "action.yml")
    shutil.copytree(REPO_ROOT / "actions", destination / "actions", ignore=ignore)
    shutil.copytree(REPO_ROOT / "src", destination / "src", ignore=ignore)
    shutil.copy2(REPO_ROOT / "pyproject.toml", destination / "pyproject.toml")
    readme = REPO_ROOT / "README.md"
    if readme.is_file():
        shutil.copy2(readme, destination / "README.md")
    else:
        (destination / "README.md").write_text("# cxml\n", encoding="utf-8")


def make_action_repo(
    path: Path, *, workflow: str, params: str = ACT_PARAMS, files: dict[str, str] | None = None
) -> Path:
    """A committed git repository (origin acme/widgets) with the actions, params and a workflow."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch", "main")
    git(path, "remote", "add", "origin", ORIGIN)
    copy_action_source(path)
    (path / "params.yaml").write_text(params, encoding="utf-8")
    (path / ".gitignore").write_text(
        "mlflow.db\n/model/\n/run.json\n/gate.json\n/report.md\n/.cxml/\n", encoding="utf-8"
    )
    workflow_file = path / ".github" / "workflows" / "test.yml"
    workflow_file.parent.mkdir(parents=True)
    workflow_file.write_text(workflow, encoding="utf-8")
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "widgets with cxml")
    return path


def outputs_step(outputs_file: Path) -> str:
    """A last workflow step that writes every step's outputs as JSON where the test reads them."""
    return f"""
      - name: Export step outputs
        if: always()
        shell: bash
        env:
          STEPS_JSON: ${{{{ toJSON(steps) }}}}
          OUTPUTS_FILE: {outputs_file}
        run: |
          printf '%s\\n' "$STEPS_JSON" > "$OUTPUTS_FILE"
          for kept in gate.json report.md dvc.lock metrics/train.json metrics/eval.json; do
            if [ -f "$kept" ]; then cp "$kept" "$OUTPUTS_FILE.$(basename "$kept")"; fi
          done
"""


@dataclass
class ActRun:
    returncode: int
    log: str
    seconds: float
    steps: dict[str, Any]

    def outputs(self, step_id: str) -> dict[str, str]:
        step = self.steps.get(step_id, {})
        return dict(step.get("outputs", {}))

    def check(self) -> ActRun:
        assert self.returncode == 0, f"act failed (exit {self.returncode}):\n{self.log[-8000:]}"
        return self


@dataclass(frozen=True)
class ActEnvironment:
    """Where act keeps its state (the runner's tool cache: warm between runs) and a fake HOME."""

    cache_home: Path
    home: Path
    work: Path

    @property
    def tool_cache(self) -> Path:
        return self.cache_home / "act" / "tool_cache"


@pytest.fixture
def act_env(tmp_path: Path) -> ActEnvironment:
    home = tmp_path / "home"
    home.mkdir()
    (home / "canary").write_text("still here\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    return ActEnvironment(cache_home=tmp_path / "xdg-cache", home=home, work=work)


def run_act(
    repo: Path,
    event_name: str,
    event: dict[str, Any],
    environment: ActEnvironment,
    *,
    outputs_file: Path,
    secrets: dict[str, str] | None = None,
    timeout: float = 600,
    extra_args: Sequence[str] = (),
) -> ActRun:
    """`act <event>` in host mode with stdin closed, as NOTES.md describes; returns log and outputs.

    `extra_args`: more act options, e.g. `-P deploy=-self-hosted`, `--var NAME=VALUE` or
    `--local-repository OWNER/REPO@REF=PATH` (see `local_actions_args`)."""
    act = tool("act")
    event_file = environment.work / f"{event_name}-event.json"
    event_file.write_text(json.dumps(event), encoding="utf-8")
    outputs_file.unlink(missing_ok=True)
    command = [
        act,
        event_name,
        "-e",
        str(event_file),
        "-P",
        "ubuntu-latest=-self-hosted",
        "-P",
        "self-hosted=-self-hosted",
        "--no-cache-server",
    ]
    for name, value in (secrets or {}).items():
        command += ["-s", f"{name}={value}"]
    command += list(extra_args)
    env = {
        key: value
        for key, value in tool_env().items()
        if not key.startswith(("GITHUB_", "RUNNER_", "CXML_", "MLFLOW_", "ACT"))
    }
    env.update(
        HOME=str(environment.home),
        XDG_CACHE_HOME=str(environment.cache_home),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        DVC_NO_ANALYTICS="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    steps: dict[str, Any] = {}
    if outputs_file.is_file():
        steps = json.loads(outputs_file.read_text(encoding="utf-8"))
    return ActRun(result.returncode, result.stdout + result.stderr, seconds, steps)


def local_actions_args(actions: str, checkout: Path) -> list[str]:
    """act options that serve `uses: OWNER/REPO/actions/X@REF` (`actions` is `OWNER/REPO@REF`,
    as `cxml init --actions` takes it) from a local copy of cxml's action source, so a workflow
    written by `cxml init` runs as written; the runner labels the templates use run on this host."""
    checkout.mkdir(parents=True, exist_ok=True)
    copy_action_source(checkout)
    return [
        "--local-repository",
        f"{actions}={checkout}",
        *("-P", "gpu=-self-hosted", "-P", "deploy=-self-hosted"),
    ]


def pull_request_payload(
    number: int, *, head_sha: str, title: str, head_ref: str
) -> dict[str, Any]:
    """A `pull_request` event for acme/widgets that validates against GitHub's webhook schema."""
    from tests.support.github_server import pull_request_event, validate_event

    try:
        payload = pull_request_event(
            number, repository=REPOSITORY, head_sha=head_sha, head_ref=head_ref
        )
    except RuntimeError as exc:  # no ../shared/github-rest and no npm
        pytest.skip(str(exc))
    payload["pull_request"]["title"] = title
    validate_event(payload)
    return payload


def setup_timing(log: str) -> list[str]:
    """The `cxml setup: ...` lines of an act log (cache hit or miss, and seconds)."""
    return [line.split("| ", 1)[-1] for line in log.splitlines() if "cxml setup: cache" in line]
