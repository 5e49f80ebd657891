"""The actions really run: act executes train -> evaluate -> report on a pull_request event.

One temporary repository, two act runs against the loopback GitHub server:
1. `./actions/train`, `./actions/evaluate`, `./actions/report` (cold: the environment is built),
2. the root action `./` (warm: the environment is reused),
and the pull request ends with exactly one cxml comment, updated in place by the second run.
The PR title and branch carry shell-injection payloads all the way through; a canary file in
HOME and the absence of `id`'s output in the log show they were never executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxml import __version__
from tests.support.actions import (
    INJECTION_BRANCH,
    INJECTION_TITLE,
    PYTHON,
    ActEnvironment,
    act_env,
    git,
    make_action_repo,
    outputs_step,
    pull_request_payload,
    run_act,
    setup_timing,
)
from tests.support.github_server import FakeGitHub, load_github_openapi

__all__ = ["act_env"]  # the fixture, imported for pytest

PR_NUMBER = 7
FAKE_SSH_KEY = "FAKE-PRIVATE-KEY-MATERIAL-0123456789"


def separate_actions_workflow(api_url: str, outputs_file: Path) -> str:
    return f"""name: cxml act test
on: pull_request
jobs:
  model:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v6
      - id: train
        uses: ./actions/train
        with:
          python: {PYTHON}
      - id: setup
        uses: ./actions/setup
        with:
          python: {PYTHON}
      - name: cxml is first on PATH after setup
        shell: bash
        run: command -v cxml && cxml --version
      - id: evaluate
        uses: ./actions/evaluate
        with:
          python: {PYTHON}
          fail-on-gate: 'false'
      - id: report
        uses: ./actions/report
        with:
          python: {PYTHON}
          api-url: {api_url}
          name: ${{{{ github.event.pull_request.title }}}}
      - id: redeploy
        uses: ./actions/redeploy
        with:
          python: {PYTHON}
          extras: train,report,dvc
          host: deploy.example.com
          ssh-key: {FAKE_SSH_KEY}
          accept-new-host-key: 'true'
          dry-run: 'true'
          force: 'true'  # three epochs may or may not pass the gate
          reason: ${{{{ github.event.pull_request.title }}}}
{outputs_step(outputs_file)}"""


def root_action_workflow(api_url: str, outputs_file: Path) -> str:
    return f"""name: cxml act test (root action)
on: pull_request
jobs:
  model:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v6
      - id: cxml
        uses: ./
        with:
          python: {PYTHON}
          api-url: {api_url}
          report-name: ${{{{ github.event.pull_request.title }}}}
          fail-on-gate: 'false'
{outputs_step(outputs_file)}"""


@pytest.mark.slow
def test_pull_request_runs_train_evaluate_report_and_updates_one_comment(
    act_env: ActEnvironment, tmp_path: Path
) -> None:
    if load_github_openapi() is None:
        pytest.skip("GitHub's OpenAPI description is unavailable")
    outputs_file = act_env.work / "outputs.json"
    with FakeGitHub(repository="acme/widgets", pull_requests=[PR_NUMBER]) as github:
        repo = make_action_repo(
            tmp_path / "widgets", workflow=separate_actions_workflow(github.api_url, outputs_file)
        )
        event = pull_request_payload(
            PR_NUMBER,
            head_sha=git(repo, "rev-parse", "HEAD"),
            title=INJECTION_TITLE,
            head_ref=INJECTION_BRANCH,
        )
        secrets = {"GITHUB_TOKEN": github.token}

        cold = run_act(
            repo, "pull_request", event, act_env, outputs_file=outputs_file, secrets=secrets
        )
        cold.check()
        train, evaluate, report = (cold.outputs(step) for step in ("train", "evaluate", "report"))
        assert train["run-id"], train
        assert train["model-path"] == "model/model.pt"
        assert train["metrics-file"] == "metrics/train.json"
        assert train["model-changed"] == "true"
        assert train["setup-cache-hit"] == "false"
        assert evaluate["gate"] in ("pass", "fail")
        assert evaluate["gate-file"] == "gate.json"
        assert "report-file" not in evaluate, "the report is written once, by the report step"
        assert report["report-file"] == "report.md"
        assert report["comment-url"]
        setup = cold.outputs("setup")
        assert setup["cache-hit"] == "true"  # train built it a moment ago
        assert f"{setup['venv']}/bin/cxml" in cold.log and f"cxml {__version__}" in cold.log
        assert "plan (dry run, nothing is done): deploy to deploy.example.com:22" in cold.log
        assert FAKE_SSH_KEY not in cold.log, "the SSH key must never be printed"
        comments = github.issue_comments(PR_NUMBER)
        assert len(comments) == 1
        first_body = comments[0]["body"]
        assert "<!-- cxml-report:" in first_body

        # Second run: the whole pipeline through the root action, on the warm environment.
        (repo / ".github" / "workflows" / "test.yml").write_text(
            root_action_workflow(github.api_url, outputs_file), encoding="utf-8"
        )
        git(repo, "commit", "--quiet", "-am", "use the root action")
        warm = run_act(
            repo, "pull_request", event, act_env, outputs_file=outputs_file, secrets=secrets
        )
        warm.check()
        pipeline = warm.outputs("cxml")
        assert pipeline["setup-cache-hit"] == "true"
        assert pipeline["run-id"] and pipeline["run-id"] != train["run-id"]
        assert pipeline["gate"] in ("pass", "fail")
        assert pipeline["comment-url"] == report["comment-url"]

        comments = github.issue_comments(PR_NUMBER)
        assert len(comments) == 1, "the second run must update cxml's comment, not add one"
        assert comments[0]["body"] != first_body  # a new run id, new numbers
        updates = [
            r for r in github.requests if r.method == "PATCH" and "/issues/comments/" in r.path
        ]
        assert len(updates) == 1

    print(
        "act setup times -- cold:",
        cold.outputs("train")["setup-seconds"],
        "s; warm:",
        pipeline["setup-seconds"],
        f"s; act wall: cold {cold.seconds:.1f} s, warm {warm.seconds:.1f} s",
    )
    print("\n".join(setup_timing(cold.log) + setup_timing(warm.log)))
    gate_file = outputs_file.with_name(outputs_file.name + ".gate.json")
    if gate_file.is_file():
        gate = json.loads(gate_file.read_text(encoding="utf-8"))
        print("second run's gate:", gate["decision"], gate["baseline"].get("description"))
        for rule in gate["rules"]:
            print("  ", rule["rule"], rule["value"], rule["baseline"], rule["result"])

    # The injection payloads reached the actions as data only.
    assert (act_env.home / "canary").read_text(encoding="utf-8") == "still here\n"
    for log in (cold.log, warm.log):
        assert "uid=" not in log, "a $(id) in the PR title or branch was executed"
    assert "rm -rf ~" in comments[0]["body"]  # the report name is the title, kept verbatim


@pytest.mark.slow
def test_failing_step_reports_an_error_annotation(act_env: ActEnvironment, tmp_path: Path) -> None:
    """A bad input stops the job with one `::error::` line naming the problem."""
    outputs_file = act_env.work / "outputs.json"
    workflow = f"""name: cxml act error
on: pull_request
jobs:
  model:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v6
      - id: train
        uses: ./actions/train
        with:
          python: {PYTHON}
          params: missing-dir/params.yaml
          dvc: 'true'
{outputs_step(outputs_file)}"""
    repo = make_action_repo(tmp_path / "widgets", workflow=workflow)
    event = pull_request_payload(
        PR_NUMBER, head_sha=git(repo, "rev-parse", "HEAD"), title="t", head_ref="feature"
    )
    result = run_act(repo, "pull_request", event, act_env, outputs_file=outputs_file)
    assert result.returncode != 0
    assert "::error::input dvc: true, but there is no dvc.yaml here" in result.log
    assert "no dvc.yaml here" in result.log
