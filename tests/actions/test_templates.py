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
REPO_WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))
# `owner/repo[/path]@<40 hex> # v1.2.3`: a tag can be moved, a commit cannot.
PINNED_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}\s+#\s+v\d+(?:\.\d+){0,2}\s*$"
)
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<target>\S+)")
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
        "cxml-pr-comment.yml",
        "cxml-promote.yml",
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
        timeout=300,
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
        timeout=300,
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
        [tool("actionlint"), str(bad)],
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
        timeout=300,
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


def reproduced_stages(pipeline: dict[str, Any], targets: list[str]) -> set[str]:
    """The stages `dvc repro TARGETS` runs: the targets and every stage whose outputs they need."""
    stages: dict[str, Any] = pipeline["stages"]
    producer = {
        str(next(iter(out)) if isinstance(out, dict) else out): name
        for name, stage in stages.items()
        for kind in ("outs", "metrics", "plots")
        for out in stage.get(kind, [])
    }
    wanted, todo = set(), list(targets or stages)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += [producer[dep] for dep in stages[name].get("deps", []) if dep in producer]
    return wanted


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_each_job_evaluates_the_model_once(path: Path) -> None:
    """The train action's `dvc repro` must not run the evaluate stage when the evaluate action
    follows: that would evaluate (and time the latency of) the same model twice."""
    pipeline = yaml.safe_load((PACKAGE_TEMPLATE_DIR / "dvc-pipeline.yaml").read_text("utf-8"))
    evaluating = {
        name for name, stage in pipeline["stages"].items() if "cxml.evaluate" in stage["cmd"]
    }
    assert evaluating, "the pipeline template has an evaluate stage"
    for job in load(path)["jobs"].values():
        actions = [
            (match["action"], step.get("with", {}))
            for step in job.get("steps", [])
            if (match := CXML_USES.match(step.get("uses", "")))
        ]
        if not {"train", "evaluate"} <= {action for action, _ in actions}:
            continue
        train_inputs = next(inputs for action, inputs in actions if action == "train")
        targets = str(train_inputs.get("dvc-targets", "")).split()
        evaluations = len(reproduced_stages(pipeline, targets) & evaluating)
        evaluations += sum(action == "evaluate" for action, _ in actions)
        assert evaluations == 1, f"{path.name}: the model is evaluated {evaluations} times"


def test_the_evaluation_count_sees_the_whole_pipeline() -> None:
    pipeline = yaml.safe_load((PACKAGE_TEMPLATE_DIR / "dvc-pipeline.yaml").read_text("utf-8"))
    assert reproduced_stages(pipeline, []) == {"train", "evaluate"}
    assert reproduced_stages(pipeline, ["evaluate"]) == {"train", "evaluate"}
    assert reproduced_stages(pipeline, ["train"]) == {"train"}


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
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=300)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    steps = load(TEMPLATE_DIR / "ci.yml")["jobs"]["test"]["steps"]
    for step in steps:
        if step.get("name") in ("mypy", "pytest"):
            result = subprocess.run(
                ["bash", "-c", step["run"]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
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
    redeploy = next(s for s in deploy["steps"] if s.get("id") == "redeploy")
    assert redeploy["with"]["environment"] == "production"  # hosts and proxy from deploy.yaml
    assert "host" not in redeploy["with"] and "public-url" not in redeploy["with"]
    checkout = deploy["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@")
    # redeploy reads deploy.yaml and params.yaml's tracking.required
    assert str(checkout["with"]["sparse-checkout"]).split() == ["deploy.yaml", "params.yaml"]


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
        timeout=300,
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


# --- supply chain and credentials -----------------------------------------------------------


def unpinned_uses(text: str) -> list[str]:
    """`uses:` lines naming a third-party action by anything but a full commit SHA + version."""
    bad = []
    for line in text.splitlines():
        match = USES_LINE.match(line)
        if not match:
            continue
        target = match["target"].strip("'\"")
        if target.startswith("./") or CXML_USES.match(target) or target.startswith("docker://"):
            continue  # this repository's own actions, at the tag the user picks with `cxml init`
        if not PINNED_USES.match(line):
            bad.append(line.strip())
    return bad


@pytest.mark.parametrize(
    "path",
    [*TEMPLATES, *REPO_WORKFLOWS],
    ids=[*TEMPLATE_IDS, *(f".github/{p.name}" for p in REPO_WORKFLOWS)],
)
def test_third_party_actions_are_pinned_to_a_commit(path: Path) -> None:
    assert unpinned_uses(path.read_text(encoding="utf-8")) == []


def test_the_pin_check_catches_tags_branches_and_short_shas() -> None:
    for line in (
        "      - uses: actions/checkout@v6",
        "      - uses: actions/checkout@main",
        "      - uses: actions/checkout@d23441a",
        "      - uses: actions/checkout@d23441a48e516b6c34aea4fa41551a30e30af803",  # no version
        "        uses: docker/build-push-action@v7 # 53b7df96c91f9c12dcc8a07bcb9ccacbed38856a",
        "      - uses: someone/cxml/actions/train@v1",
    ):
        assert unpinned_uses(line) == [line.strip()], line
    for line in (
        "      - uses: actions/checkout@d23441a48e516b6c34aea4fa41551a30e30af803 # v6.1.0",
        "      - uses: ./actions/train",
        "        uses: org/cxml/actions/report@v1",
    ):
        assert unpinned_uses(line) == [], line


@pytest.mark.parametrize(
    "path",
    [*TEMPLATES, *REPO_WORKFLOWS],
    ids=[*TEMPLATE_IDS, *(f".github/{p.name}" for p in REPO_WORKFLOWS)],
)
def test_checkout_never_leaves_the_token_for_the_repository_code(path: Path) -> None:
    workflow = load(path)
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, path.name


# --- fork pull requests: the artifact and the trusted comment job ---------------------------

FORK = "github.event.pull_request.head.repo.full_name != github.repository"


def test_fork_pull_requests_hand_over_data_only() -> None:
    job = load(TEMPLATE_DIR / "cxml-pull-request.yml")["jobs"]["model"]
    steps = job["steps"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["if"] == FORK
    assert upload["with"]["name"] == "cxml-pr-report"
    handover = next(s for s in steps if "cxml-pr-report" in s.get("run", ""))
    assert handover["if"] == FORK
    assert not any("secrets." in str(value) for value in handover["env"].values())
    assert set(handover["env"]) == {"PR_NUMBER", "REPORT_FILE"}
    assert handover["env"]["PR_NUMBER"] == "${{ github.event.pull_request.number }}"


def test_the_comment_job_never_runs_the_pull_requests_code() -> None:
    workflow = load(TEMPLATE_DIR / "cxml-pr-comment.yml")
    assert set(workflow["on"]) == {"workflow_run"}
    assert workflow["on"]["workflow_run"]["workflows"] == [
        load(TEMPLATE_DIR / "cxml-pull-request.yml")["name"]
    ]
    assert workflow["permissions"] == {"actions": "read", "pull-requests": "write"}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"  # no self-hosted runner, no shared tool cache
    assert "github.event.workflow_run.head_repository.full_name != github.repository" in job["if"]
    assert "github.event.workflow_run.event == 'pull_request'" in job["if"]
    uses = [str(step.get("uses", "")) for step in job["steps"]]
    assert not any(u.startswith("actions/checkout@") for u in uses), "no checkout of PR code"
    assert not any("run" in step for step in job["steps"]), "nothing of the artifact is run"
    download, post = job["steps"]
    assert download["uses"].startswith("actions/download-artifact@")
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    assert download["with"]["name"] == "cxml-pr-report"
    assert post["uses"] == "org/cxml/actions/report@v1"
    assert post["with"]["from-artifact"] == download["with"]["path"]
    assert post["with"]["extras"] == "report"  # no torch download to post a comment


def test_the_fork_hint_of_the_report_names_a_template_that_ships() -> None:
    from cxml.init import WORKFLOWS
    from cxml.report.forges.github import FORK_HINT

    names = re.findall(r"workflows-templates/([\w.-]+\.yml)", FORK_HINT)
    assert names, FORK_HINT
    for name in names:
        assert (TEMPLATE_DIR / name).is_file() and name in WORKFLOWS.values()


def test_promote_template_goes_staging_then_checks_then_production() -> None:
    workflow = load(TEMPLATE_DIR / "cxml-promote.yml")
    assert workflow["on"]["workflow_run"]["workflows"] == ["cxml main"]
    assert "version" in workflow["on"]["workflow_dispatch"]["inputs"]
    staging, production = workflow["jobs"]["staging"], workflow["jobs"]["production"]
    assert staging["environment"]["name"] == "staging"
    assert production["environment"]["name"] == "production"
    assert production["needs"] == "staging"
    runs = [step.get("run", "") for step in staging["steps"]]
    assert any("cxml check --env staging" in run for run in runs)
    promote = "".join(step.get("run", "") for step in production["steps"])
    assert "cxml promote --from staging --to production" in promote
    # the hand-typed version reaches the command through the environment, never interpolated
    assert "${{" not in promote and "inputs.version" in production["env"]["CXML_PROMOTE_VERSION"]
    assert '[[ "$CXML_PROMOTE_VERSION" =~ ^[0-9]+$ ]]' in promote  # digits only, then --version
    assert '--version "$CXML_PROMOTE_VERSION"' in promote
