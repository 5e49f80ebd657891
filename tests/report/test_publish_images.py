"""`--publish-images auto|true|false`: the report action shows the PNG charts when the token may.

cxml's own report in a real git workspace, posted to the contract-checked fake GitHub with the
tokens a workflow can have: GITHUB_TOKEN with or without `contents: write`, and a user's token.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cxml.action import step_argv
from tests.support.github_server import FakeGitHub, github_server  # noqa: F401
from tests.support.report import (  # noqa: F401 - fixtures `ws` uses
    Workspace,
    clean_env,
    in_pull_request,
    report,
    workspace,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAD_SHA = "e" * 40
COMMENTS_ONLY = "ghs_pullRequestsWriteContentsRead01"
"""GITHUB_TOKEN of a job with `pull-requests: write` and `contents: read`."""


@pytest.fixture
def fake(github_server: FakeGitHub) -> FakeGitHub:  # noqa: F811
    github_server.add_token(COMMENTS_ONLY, "comments")
    return github_server


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:  # noqa: F811
    return workspace


def blob_writes(fake: FakeGitHub) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path.endswith("/git/blobs"))


def test_auto_with_a_job_token_that_can_write_contents_publishes_the_charts(
    ws: Workspace, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, head_sha=HEAD_SHA)
    assert report("--publish-images=auto") == 0
    assert len(fake.branch_files("cxml-assets")) == 3
    body = fake.issue_comments(7)[0]["body"]
    assert "/report-training.png?raw=true)" in body


def test_auto_with_a_job_token_without_contents_write_falls_back_quietly(
    ws: Workspace,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, token=COMMENTS_ONLY, head_sha=HEAD_SHA)
    assert report("--publish-images", "auto") == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    assert "images not published" in captured.out
    assert fake.branch_files("cxml-assets") == {}
    body = fake.issue_comments(7)[0]["body"]
    assert "```mermaid" in body
    assert "![" not in body
    assert "`permissions: contents: write`" in body and "`publish-images: true`" in body
    assert "--publish-images" not in body


def test_auto_with_a_user_token_that_cannot_push_does_not_try(
    ws: Workspace, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = fake.add_token("ghp_triageOnlyUser0123456789", "comments", login="triager")
    in_pull_request(monkeypatch, fake, tmp_path, token=token, head_sha=HEAD_SHA)
    assert report("--publish-images=auto") == 0
    assert blob_writes(fake) == 0
    assert any(r.operation_id == "repos/get" for r in fake.requests)
    assert "contents: write" in fake.issue_comments(7)[0]["body"]


def test_auto_with_a_user_token_that_can_push_publishes(
    ws: Workspace, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = fake.add_token("ghp_maintainerUser0123456789", "write", login="maintainer")
    in_pull_request(monkeypatch, fake, tmp_path, token=token, head_sha=HEAD_SHA)
    assert report("--publish-images=auto") == 0
    assert len(fake.branch_files("cxml-assets")) == 3


def test_false_never_publishes_and_the_note_names_the_action_input(
    ws: Workspace, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, head_sha=HEAD_SHA)
    assert report("--publish-images=false") == 0
    assert blob_writes(fake) == 0
    body = fake.issue_comments(7)[0]["body"]
    assert "`publish-images: true`" in body and "contents: write" in body
    assert "--publish-images" not in body


def test_true_warns_when_the_token_cannot_write_contents(
    ws: Workspace,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, token=COMMENTS_ONLY, head_sha=HEAD_SHA)
    assert report("--publish-images") == 0
    assert "warning: images not published: token cannot" in capsys.readouterr().err
    assert len(fake.issue_comments(7)) == 1


def test_locally_the_note_names_the_command_line_flag(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report("--dry-run") == 0
    assert "pass --publish-images to show them here" in capsys.readouterr().out


def test_a_bad_value_is_refused(ws: Workspace) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report("--publish-images=sometimes")
    assert exit_info.value.code == 2


def test_the_report_action_publishes_by_default_when_allowed() -> None:
    action = yaml.safe_load((REPO_ROOT / "actions" / "report" / "action.yml").read_text())
    assert action["inputs"]["publish-images"]["default"] == "auto"
    assert step_argv("report", {"CXML_REPORT_PUBLISH_IMAGES": "auto"}) == ["--publish-images=auto"]
    assert step_argv("report", {"CXML_REPORT_MARKDOWN": "cml.md"}) == ["--markdown=cml.md"]
