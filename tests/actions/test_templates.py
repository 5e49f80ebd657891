"""The workflow templates and Dockerfile.gpu: schema, actionlint, hadolint, and what they promise.

workflows-templates/ (what users copy) and src/cxml/templates/workflows/ (what `cxml init`
writes from the installed package) must be identical; edit one, copy it to the other.
"""

from __future__ import annotations

import filecmp
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.actions import PACKAGE_TEMPLATE_DIR, REPO_ROOT, TEMPLATE_DIR, tool, tool_env

TEMPLATES = sorted(TEMPLATE_DIR.glob("*.yml"))
TEMPLATE_IDS = [path.name for path in TEMPLATES]
CXML_USES = re.compile(r"^org/cxml/actions/(?P<action>[a-z-]+)@v1$")
RUNNER_LABELS = "self-hosted-runner:\n  labels: [gpu, deploy]\n"


def load(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on` as True; map it back.
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    if True in data:
        data["on"] = data.pop(True)
    return data


def test_the_templates_are_there() -> None:
    assert TEMPLATE_IDS == [
        "ci.yml",
        "cxml-main.yml",
        "cxml-pull-request.yml",
        "cxml-schedule.yml",
        "docker-image.yml",
    ]


def test_the_package_ships_the_same_templates() -> None:
    shipped = PACKAGE_TEMPLATE_DIR / "workflows"
    assert sorted(p.name for p in shipped.glob("*.yml")) == TEMPLATE_IDS
    for path in TEMPLATES:
        assert filecmp.cmp(path, shipped / path.name, shallow=False), (
            f"{path.name} differs between workflows-templates/ and src/cxml/templates/workflows/; "
            "copy the edited one over the other"
        )


def test_templates_validate_against_the_workflow_schema() -> None:
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, TEMPLATES),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_templates_pass_actionlint_with_shellcheck(tmp_path: Path) -> None:
    tool("shellcheck")  # actionlint runs it on every `run:` script when it is on PATH
    config = tmp_path / "actionlint.yaml"
    config.write_text(RUNNER_LABELS, encoding="utf-8")
    result = subprocess.run(
        [tool("actionlint"), "-config-file", str(config), *map(str, TEMPLATES)],
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_an_injected_expression(tmp_path: Path) -> None:
    """The lint above is real: a template that pasted the PR title into a script would fail."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [tool("actionlint"), str(bad)], capture_output=True, text=True, check=False, env=tool_env()
    )
    assert result.returncode != 0
    assert "potentially untrusted" in result.stdout


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_cxml_steps_use_real_inputs_and_outputs(path: Path) -> None:
    workflow = load(path)
    for job in workflow["jobs"].values():
        step_actions: dict[str, dict[str, Any]] = {}
        for step in job["steps"]:
            match = CXML_USES.match(step.get("uses", ""))
            if "run" in step:
                assert step.get("shell") == "bash"
                assert "${{" not in step["run"], "pass expressions through env:"
            if not match:
                continue
            action = yaml.safe_load(
                (REPO_ROOT / "actions" / match["action"] / "action.yml").read_text(encoding="utf-8")
            )
            unknown = set(step.get("with", {})) - set(action.get("inputs", {}))
            assert not unknown, f"{path.name}: {match['action']} has no inputs {unknown}"
            required = {k for k, v in action.get("inputs", {}).items() if v.get("required")}
            assert required <= set(step.get("with", {})), f"{match['action']}: required {required}"
            if "id" in step:
                step_actions[step["id"]] = action
        text = yaml.safe_dump(job)
        for step_id, output in re.findall(r"steps\.([a-z-]+)\.outputs\.([a-z-]+)", text):
            if step_id in step_actions:
                assert output in step_actions[step_id]["outputs"], f"{step_id}.{output}"


def test_pull_request_template_is_least_privilege_and_fork_safe() -> None:
    workflow = load(TEMPLATE_DIR / "cxml-pull-request.yml")
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "pull_request.number" in workflow["concurrency"]["group"]
    assert "pull_request_target" not in workflow["on"]  # never run fork code with secrets
    assert "paths" in workflow["on"]["pull_request"]
    job = workflow["jobs"]["model"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    reports = [s for s in job["steps"] if s.get("uses", "").startswith("org/cxml/actions/report")]
    fork_report = [s for s in reports if "!=" in s.get("if", "")]
    assert fork_report and fork_report[0]["with"]["target"] == "none"
    assert "github-token" not in fork_report[0]["with"]
    same_repo_report = [s for s in reports if "==" in s.get("if", "")]
    assert same_repo_report and "github-token" in same_repo_report[0]["with"]
    same_repo = "github.event.pull_request.head.repo.full_name == github.repository"
    for name, value in job["env"].items():
        if "secrets." in str(value):
            assert str(value).startswith("${{ " + same_repo + " && secrets."), name


def test_ci_template_passes_on_a_repository_with_no_code_yet(tmp_path: Path) -> None:
    """What `cxml init` leaves has no .py files and no tests: the ci.yml steps must not fail."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    steps = load(TEMPLATE_DIR / "ci.yml")["jobs"]["test"]["steps"]
    for step in steps:
        if step.get("name") in ("mypy", "pytest"):
            result = subprocess.run(
                ["bash", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, (step["name"], result.stdout, result.stderr)
            assert "yet" in result.stdout


def test_main_template_deploys_only_a_passing_gate_one_at_a_time() -> None:
    workflow = load(TEMPLATE_DIR / "cxml-main.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    model, deploy = workflow["jobs"]["model"], workflow["jobs"]["deploy"]
    assert model["outputs"]["gate"] == "${{ steps.evaluate.outputs.gate }}"
    assert deploy["needs"] == "model"
    assert deploy["if"] == "needs.model.outputs.gate == 'pass'"
    assert deploy["environment"]["name"] == "production"
    assert deploy["runs-on"] == ["self-hosted", "deploy"]
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert workflow["concurrency"]["cancel-in-progress"] is False
    train = next(s for s in model["steps"] if s.get("id") == "train")
    assert train["with"]["dvc-push"] == "true"


def test_schedule_template_has_cron_and_manual_inputs() -> None:
    workflow = load(TEMPLATE_DIR / "cxml-schedule.yml")
    assert workflow["on"]["schedule"][0]["cron"]
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert {"epochs", "baseline", "deploy"} <= set(inputs)
    assert "workflow_dispatch" in workflow["jobs"]["deploy"]["if"]


def test_docker_image_template_pushes_dockerfile_gpu_on_tags() -> None:
    workflow = load(TEMPLATE_DIR / "docker-image.yml")
    assert workflow["on"]["push"]["tags"] == ["v*"]
    assert workflow["permissions"] == {"contents": "read", "packages": "write"}
    build = next(s for s in workflow["jobs"]["image"]["steps"] if "build-push" in s.get("uses", ""))
    assert build["with"]["file"] == "Dockerfile.gpu" and build["with"]["push"] is True


def test_dockerfile_gpu_is_hadolint_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), str(REPO_ROOT / "Dockerfile.gpu")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_gpu_promises() -> None:
    text = (REPO_ROOT / "Dockerfile.gpu").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert len(stages) == 2, "a build stage and a final stage"
    assert re.search(
        r"^ARG BASE_IMAGE=pytorch/pytorch:[\w.]+-cuda[\w.-]+-runtime$", text, re.MULTILINE
    )
    final = text.split("\nFROM ")[-1]
    assert "[train" in text
    assert re.search(r"^USER (?!0|root)", final, flags=re.MULTILINE), "non-root"
    assert "HEALTHCHECK" not in text
    assert 'CMD ["python", "-m", "cxml.train"]' in final
    assert "apt-get" not in final and "build-essential" not in final
