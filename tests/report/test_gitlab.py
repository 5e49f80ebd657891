"""cxml.report.forges.gitlab and `cxml report` in a GitLab merge-request pipeline, against the
loopback fake GitLab of tests/support/report.py (which checks requests against GitLab's v4 docs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cxml.core.console import run_entry_point
from cxml.core.errors import ReportError
from cxml.report.forges.gitlab import GitLabClient
from cxml.report.forges.http import RetryPolicy
from cxml.report.step import main
from tests.support.report import GITLAB_OTHER_TOKEN as OTHER_TOKEN
from tests.support.report import GITLAB_PROJECT as PROJECT
from tests.support.report import GITLAB_TOKEN as TOKEN
from tests.support.report import (  # noqa: F401 - fixtures
    FakeGitLab,
    Workspace,
    clean_env,
    gitlab_server,
    in_gitlab_pipeline,
    workspace,
)

FAST = RetryPolicy(deadline_s=5, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture
def gitlab(gitlab_server: FakeGitLab) -> FakeGitLab:  # noqa: F811
    return gitlab_server


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:  # noqa: F811
    return workspace


def ours(body: str | None) -> bool:
    return bool(body) and str(body).startswith("<!-- cxml-report: m -->")


def test_note_is_created_then_updated_in_place(gitlab: FakeGitLab) -> None:
    with GitLabClient(gitlab.api_url, PROJECT, token=TOKEN, policy=FAST) as client:
        client.upsert_note(5, "unrelated review note", lambda _: False)
        first = client.upsert_note(5, "<!-- cxml-report: m -->\nrun 1", ours)
        second = client.upsert_note(5, "<!-- cxml-report: m -->\nrun 2", ours)
    assert first.created and not second.created and first.id == second.id
    assert (
        second.url
        == f"https://gitlab.example.com/group/model-repo/-/merge_requests/5#note_{first.id}"
    )
    assert sorted(n["body"] for n in gitlab.notes.values()) == [
        "<!-- cxml-report: m -->\nrun 2",
        "unrelated review note",
    ]
    assert ("GET", "/api/v4/projects/group%2Fmodel-repo/merge_requests/5/notes") in gitlab.requests


def test_a_note_by_someone_else_with_our_watermark_is_left_alone(gitlab: FakeGitLab) -> None:
    planted = "<!-- cxml-report: m -->\nmallory's note: approve this, the report is fine"
    with GitLabClient(gitlab.api_url, PROJECT, token=OTHER_TOKEN, policy=FAST) as mallory:
        mallory.upsert_note(5, planted, lambda _: False)
    with GitLabClient(gitlab.api_url, PROJECT, token=TOKEN, policy=FAST) as client:
        first = client.upsert_note(5, "<!-- cxml-report: m -->\nrun 1", ours)
        second = client.upsert_note(5, "<!-- cxml-report: m -->\nrun 2", ours)
    assert first.created and not second.created and first.id == second.id
    by_author = {n["author"]["username"]: n["body"] for n in gitlab.notes.values()}
    assert by_author == {
        "mallory": planted,  # untouched, and not taken for the report
        "project_42_bot_0a1b2c": "<!-- cxml-report: m -->\nrun 2",
    }
    assert gitlab.requests.count(("GET", "/api/v4/user")) == 1  # asked once, when needed


def test_comment_author_names_whose_note_to_update(gitlab: FakeGitLab) -> None:
    with GitLabClient(gitlab.api_url, PROJECT, token=TOKEN, policy=FAST) as client:
        client.upsert_note(5, "<!-- cxml-report: m -->\nrun 1", ours)
        again = client.upsert_note(
            5, "<!-- cxml-report: m -->\nrun 2", ours, author="PROJECT_42_BOT_0A1B2C"
        )
        other = client.upsert_note(5, "<!-- cxml-report: m -->\nrun 3", ours, author="someone")
    assert not again.created and other.created
    assert ("GET", "/api/v4/user") not in gitlab.requests


def test_bad_token_names_the_fix_and_hides_the_token(gitlab: FakeGitLab) -> None:
    secret = "glpat-wrongwrongwrong"
    with (
        GitLabClient(gitlab.api_url, PROJECT, token=secret, policy=FAST) as client,
        pytest.raises(ReportError) as caught,
    ):
        client.upsert_note(5, "x", ours)
    assert str(caught.value).startswith(
        "GitLab rejected the token (401: 401 Unauthorized); set GITLAB_TOKEN"
    )
    assert secret not in str(caught.value)


def test_an_api_url_without_https_names_ci_api_v4_url() -> None:
    with (
        GitLabClient("gitlab.example.com/api/v4", PROJECT, token=TOKEN, policy=FAST) as client,
        pytest.raises(ReportError) as caught,
    ):
        client.upsert_note(5, "x", ours)
    assert str(caught.value) == (
        "CI_API_V4_URL is 'gitlab.example.com/api/v4', which is not a usable API URL "
        "(no https:// in front): it must be a full URL like https://gitlab.example.com/api/v4"
    )


def test_report_in_a_merge_request_pipeline(
    ws: Workspace,
    gitlab: FakeGitLab,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_gitlab_pipeline(monkeypatch, gitlab)
    assert run_entry_point(main, ["--no-images"]) == 0
    assert run_entry_point(main, ["--no-images"]) == 0
    notes = list(gitlab.notes.values())
    assert len(notes) == 1 and notes[0]["body"].startswith("<!-- cxml-report: cxml-model -->")
    assert "updated note on merge request !5" in capsys.readouterr().out


def test_incomplete_gitlab_variables_are_a_clear_error(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CI_MERGE_REQUEST_IID", "5")
    assert run_entry_point(main, ["--no-images"]) == 2
    assert "CI_PROJECT_ID and CI_API_V4_URL must all be set" in capsys.readouterr().err


def test_report_file_is_written_even_when_gitlab_is_down(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CI_MERGE_REQUEST_IID", "5")
    monkeypatch.setenv("CI_PROJECT_ID", "1")
    monkeypatch.setenv("CI_API_V4_URL", "http://127.0.0.1:9/api/v4")
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    assert run_entry_point(main, ["--no-images", "--timeout", "1"]) == 3  # GitLab failed
    assert (ws.root / "report.md").exists()


def test_publish_images_on_gitlab_warns_and_still_posts_the_note(
    ws: Workspace,
    gitlab: FakeGitLab,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_gitlab_pipeline(monkeypatch, gitlab)
    assert run_entry_point(main, ["--publish-images"]) == 0
    out = capsys.readouterr()
    assert "warning: --publish-images works on GitHub only; the comment links no images" in out.err
    assert "created note on merge request !5" in out.out
    (note,) = gitlab.notes.values()
    assert "![" not in note["body"]
