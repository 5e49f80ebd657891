"""The promote workflow template runs under act: its inputs, env and secrets reach `cxml promote`.

The workflow is the one `cxml init --workflows promote --actions acme/cxml@v1` writes, run by act
on a `workflow_dispatch` event with `acme/cxml@v1` served from a local copy of cxml's actions. One
edit: the setup step gets `python: <this venv's python>` (what every act test here does), so it
layers over this venv instead of downloading torch. The `staging` job is skipped by hand (it
needs the artifacts of a real `workflow_run`); the `production` job runs:
1. a version that is not a number (`7; rm -rf /`, `v7`) stops at the template's digits check
   with its `::error::` line, before `cxml promote` runs;
2. a valid version without the secrets reaches `cxml promote`, which says what is missing (exit 2);
3. with DEPLOY_KEY and DEPLOY_KNOWN_HOSTS set for a real sshd on 127.0.0.1 (deploy.yaml's staging
   host), `cxml promote --version 7` logs in and reads what staging keeps: nothing, so it stops
   with the one-line error naming version 7 (exit 2) -- the key, known_hosts, deploy.yaml and
   the version all arrived.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import git
from tests.support.actions import (
    ORIGIN,
    PYTHON,
    REPO_ROOT,
    TEMPLATE_DIR,
    ActEnvironment,
    ActRun,
    local_actions_args,
    run_act,
    tool,
    tool_env,
)
from tests.support.deploy import SshServer, deploy_root, ssh_server

__all__ = ["deploy_root", "ssh_server"]  # fixtures, imported for pytest

ACTIONS = "acme/cxml@v1"
WORKFLOW = Path(".github/workflows/cxml-promote.yml")
SETUP_STEP = re.compile(
    r"(?m)^(?P<head>[ ]+uses: acme/cxml/actions/setup@v1\n(?P<indent>[ ]+)with:\n)"
)
VERSION_ERROR = "::error::version: expected a registered model version number like 7"


@pytest.fixture(scope="module")
def promote_act(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ActEnvironment, list[str]]]:
    """One act state for the module (the setup environment is built once, then reused) and the
    act options that serve acme/cxml@v1 from a local copy of the actions."""
    base = tmp_path_factory.mktemp("promote-act")
    home, work = base / "home", base / "work"
    home.mkdir()
    work.mkdir()
    (home / "canary").write_text("still here\n", encoding="utf-8")
    environment = ActEnvironment(cache_home=base / "xdg-cache", home=home, work=work)
    yield environment, local_actions_args(ACTIONS, base / "cxml-actions")
    assert (home / "canary").read_text(encoding="utf-8") == "still here\n"


def init_repository(path: Path, deploy_yaml: dict[str, object] | None = None) -> Path:
    """A user's repository set up by `cxml init --workflows promote` (its workflow passes
    actionlint as written), committed."""
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch", "main")
    git(path, "remote", "add", "origin", ORIGIN)
    result = subprocess.run(
        [PYTHON, "-m", "cxml", "init", "--no-dvc", "--workflows", "promote", "--actions", ACTIONS],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    workflow = path / WORKFLOW
    text = workflow.read_text(encoding="utf-8")
    assert "org/cxml" not in text and "acme/cxml/actions/setup@v1" in text
    lint = subprocess.run(
        [tool("actionlint"), str(WORKFLOW)],  # with init's .github/actionlint.yaml (runner labels)
        cwd=path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fast, edits = SETUP_STEP.subn(lambda m: f"{m['head']}{m['indent']}  python: {PYTHON}\n", text)
    assert edits == 2, "both setup steps of the template take the `python` input"
    workflow.write_text(fast, encoding="utf-8")
    if deploy_yaml is not None:
        (path / "deploy.yaml").write_text(json.dumps(deploy_yaml), encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "cxml init")
    return path


def dispatch(
    repo: Path,
    version: str,
    promote_act: tuple[ActEnvironment, list[str]],
    *,
    secrets: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
) -> ActRun:
    environment, act_args = promote_act
    extra = [*act_args]
    for name, value in (variables or {}).items():
        extra += ["--var", f"{name}={value}"]
    return run_act(
        repo,
        "workflow_dispatch",
        {"inputs": {"version": version}, "ref": "refs/heads/main"},
        environment,
        outputs_file=environment.work / "no-outputs.json",
        secrets=secrets,
        timeout=300,
        extra_args=extra,
    )


def assert_reached_promote_step(run: ActRun) -> None:
    log = run.log
    assert run.returncode != 0, log[-6000:]
    assert "Success - Main Install cxml" in log, log[-6000:]
    assert "Failure - Main Promote staging to production" in log, log[-6000:]
    # By hand the staging job is skipped and production still runs (its `if:` allows that).
    assert "[cxml promote/staging]" not in log, "staging runs only after a gated run of main"


@pytest.mark.slow
def test_a_version_that_is_not_a_number_stops_at_the_digits_check(
    promote_act: tuple[ActEnvironment, list[str]], tmp_path: Path
) -> None:
    repo = init_repository(tmp_path / "widgets")
    for version in ("7; rm -rf /", "v7"):
        run = dispatch(repo, version, promote_act)
        assert_reached_promote_step(run)
        assert run.log.count(VERSION_ERROR) == 1, run.log[-6000:]
        assert "exit status 2" in run.log, run.log[-6000:]
        assert "error: " not in run.log.replace("::error::", ""), "cxml promote must not run"

    # A number without the secrets: cxml promote runs and names what is missing.
    run = dispatch(repo, "7", promote_act)
    assert_reached_promote_step(run)
    assert VERSION_ERROR not in run.log
    assert "error: no known_hosts for the deploy host" in run.log, run.log[-6000:]
    assert "CXML_KNOWN_HOSTS" in run.log
    assert "exit status 2" in run.log
    assert "Traceback" not in run.log


@pytest.mark.slow
def test_a_chosen_version_reaches_cxml_promote_with_the_key_and_known_hosts(
    promote_act: tuple[ActEnvironment, list[str]],
    tmp_path: Path,
    ssh_server: SshServer,
    deploy_root: Path,
) -> None:
    host = {"host": ssh_server.host, "port": ssh_server.port, "root": str(deploy_root)}
    deploy_yaml: dict[str, object] = {
        "serve": {
            "mode": "process",
            "remote_python": PYTHON,
            "ssh": {"user": ssh_server.user},
            "proxy": {"upstream_file": str(tmp_path / "upstream.conf")},
        },
        "environments": {"staging": {"hosts": [host]}, "production": {"hosts": [host]}},
    }
    repo = init_repository(tmp_path / "widgets", deploy_yaml)
    key = ssh_server.key_file.read_text(encoding="utf-8")
    run = dispatch(
        repo,
        "7",
        promote_act,
        secrets={"DEPLOY_KEY": key},
        variables={"DEPLOY_KNOWN_HOSTS": ssh_server.known_hosts},
    )
    assert_reached_promote_step(run)
    assert (
        "error: environment staging keeps no release of registered version 7 (it keeps none); "
        "deploy version 7 to staging first"
    ) in run.log, run.log[-6000:]
    assert "exit status 2" in run.log
    assert "Traceback" not in run.log
    key_body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    assert key_body and not any(line in run.log for line in key_body), "the key was printed"


def production_steps() -> list[dict[str, object]]:
    workflow = yaml.safe_load((TEMPLATE_DIR / "cxml-promote.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["production"]["steps"]
    assert isinstance(steps, list)
    return steps


def test_the_production_job_installs_what_cxml_promote_needs() -> None:
    """act layers the setup over this venv, so it cannot see a missing extra: `cxml promote`
    moves the MLflow aliases at the end, so the extras must bring MLflow (torch is not needed)."""
    setup = next(s for s in production_steps() if str(s.get("uses", "")).endswith("/setup@v1"))
    with_inputs = setup["with"]
    assert isinstance(with_inputs, dict)
    extras = [e.strip() for e in str(with_inputs["extras"]).split(",")]
    optional = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    requirements = [req for extra in extras for req in optional[extra]]
    assert any(req.startswith("mlflow") for req in requirements), extras
    assert not any(req.startswith("torch") for req in requirements), extras


def test_the_production_checkout_has_the_files_cxml_promote_reads() -> None:
    """deploy.yaml, and params.yaml for `tracking.required` (without it a registry failure is
    always an error)."""
    checkout = next(s for s in production_steps() if "actions/checkout@" in str(s.get("uses")))
    with_inputs = checkout["with"]
    assert isinstance(with_inputs, dict)
    assert str(with_inputs["sparse-checkout"]).split() == ["deploy.yaml", "params.yaml"]
