"""MLflow runs name the user's repository, commit and branch (not cxml's), and CI's PR and run."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from cxml.core.config import Params, TrackingConfig


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


@pytest.fixture()
def user_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real git repository on branch `feature-x` with an `origin` that carries a token."""
    repo = tmp_path / "user-project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "feature-x")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    (repo / "params.yaml").write_text("train:\n  epochs: 1\n", encoding="utf-8")
    git(repo, "add", "params.yaml")
    git(repo, "commit", "-q", "-m", "start")
    git(repo, "remote", "add", "origin", "https://x-access-token:s3cret@example.com/me/proj.git")
    monkeypatch.chdir(repo)
    for name in (
        "GITHUB_ACTIONS",
        "GITHUB_SHA",
        "GITHUB_REF",
        "GITHUB_HEAD_REF",
        "GITHUB_EVENT_PATH",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return repo


def tracked_run_tags(repo: Path) -> dict[str, str]:
    """Start and end a real run the way `cxml train` does; its tags, read back from the store."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from cxml.tracking.runs import RunLogger

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    logger = RunLogger(Params(tracking=TrackingConfig(uri=uri)), enabled=True)
    logger.start()
    mlflow.end_run()
    assert logger.run_id is not None
    return dict(MlflowClient(tracking_uri=uri).get_run(logger.run_id).data.tags)


def test_a_local_run_is_tagged_with_the_users_repo_commit_and_branch(user_repo: Path) -> None:
    tags = tracked_run_tags(user_repo)
    assert tags["mlflow.source.name"] == "https://example.com/me/proj.git"  # no token
    assert tags["mlflow.source.git.commit"] == git(user_repo, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "feature-x"
    assert "s3cret" not in json.dumps(tags)
    assert "cxml.pr_number" not in tags and "cxml.workflow_run_url" not in tags


def test_a_repository_without_a_remote_is_named_by_its_path(user_repo: Path) -> None:
    git(user_repo, "remote", "remove", "origin")
    tags = tracked_run_tags(user_repo)
    assert Path(tags["mlflow.source.name"]).resolve() == user_repo.resolve()


def test_a_ci_run_carries_the_pull_request_and_the_workflow_run(
    user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42}}), encoding="utf-8")
    head = git(user_repo, "rev-parse", "HEAD")
    git(user_repo, "checkout", "-q", "--detach")  # actions/checkout leaves a detached merge
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REPOSITORY", "me/proj")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example.com")
    monkeypatch.setenv("GITHUB_RUN_ID", "987")
    monkeypatch.setenv("GITHUB_SHA", head)
    monkeypatch.setenv("GITHUB_HEAD_REF", "feature-x")
    monkeypatch.setenv("GITHUB_REF", "refs/pull/42/merge")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    tags = tracked_run_tags(user_repo)
    assert tags["mlflow.source.name"] == "https://github.example.com/me/proj"
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.branch"] == "feature-x"
    assert tags["cxml.pr_number"] == "42"
    assert tags["cxml.workflow_run_url"] == "https://github.example.com/me/proj/actions/runs/987"


def test_model_requirements_are_pinned_to_what_trained_it() -> None:
    from cxml.tracking.runs import pinned_requirements

    pinned = pinned_requirements()
    assert f"torch=={version('torch').split('+')[0]}" in pinned
    assert f"numpy=={version('numpy')}" in pinned
    assert all("==" in requirement for requirement in pinned)
    assert pinned_requirements(["no-such-package-cxml"]) == []
