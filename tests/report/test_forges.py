"""The forge interface: one function picks where the report goes; each forge says what it did."""

from __future__ import annotations

import pytest

from cxml.core.errors import ConfigError, ReportError
from cxml.report.forges.base import Comment, Nowhere, PostedComment
from cxml.report.forges.github import GitHubForge
from cxml.report.forges.gitlab import GitLabForge
from cxml.report.forges.http import HttpStatusError
from cxml.report.forges.targets import pick_forge
from cxml.report.step import parse_args
from tests.support.report import clean_env  # noqa: F401 - the fixture the tests use


def test_outside_ci_the_report_goes_nowhere_and_says_why(clean_env: pytest.MonkeyPatch) -> None:  # noqa: F811
    forge = pick_forge(parse_args([]), commit="abc")
    assert isinstance(forge, Nowhere) and forge.commit == "abc" and not forge.images_supported
    posted = forge.upsert_comment("body", lambda text: True)
    assert posted.url is None
    assert posted.summary() == (
        "not in a GitHub Actions job or a GitLab merge-request pipeline; nothing posted"
    )
    with pytest.raises(ReportError, match="cannot host images"):
        forge.publish_images({"a.png": b"x"}, message="m")


def test_a_merge_request_pipeline_picks_gitlab_without_images(
    clean_env: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    clean_env.setenv("CI_MERGE_REQUEST_IID", "5")
    clean_env.setenv("CI_PROJECT_ID", "1")
    clean_env.setenv("CI_API_V4_URL", "https://gitlab.example.com/api/v4")
    forge = pick_forge(parse_args([]), commit="abc")
    assert isinstance(forge, GitLabForge) and forge.iid == 5 and not forge.images_supported
    assert isinstance(pick_forge(parse_args(["--target", "none"]), commit=None), Nowhere)


def test_a_push_in_actions_picks_github_on_the_pushed_commit(
    clean_env: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    clean_env.setenv("GITHUB_ACTIONS", "true")
    clean_env.setenv("GITHUB_EVENT_NAME", "push")
    clean_env.setenv("GITHUB_SHA", "f" * 40)
    clean_env.setenv("GITHUB_REPOSITORY", "o/r")
    forge = pick_forge(parse_args([]), commit="from-run-json")
    assert isinstance(forge, GitHubForge) and forge.images_supported
    assert forge.commit == "f" * 40 and forge.target is not None and forge.target.kind == "commit"


def test_settings_a_person_must_fix_exit_2_and_a_failing_forge_exits_3(
    clean_env: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    clean_env.setenv("CI_MERGE_REQUEST_IID", "5")
    with pytest.raises(ConfigError) as incomplete:
        pick_forge(parse_args([]), commit=None)
    assert incomplete.value.exit_code == 2
    refused = HttpStatusError("m", status=403, api_message="Forbidden")
    broken = HttpStatusError("m", status=501, api_message="Not Implemented")
    assert (refused.exit_code, broken.exit_code) == (2, 3)


def test_a_posted_comment_says_what_it_did() -> None:
    created = PostedComment.of(Comment(1, "https://x/1", created=True), "note on merge request !5")
    updated = PostedComment.of(Comment(1, "https://x/1", created=False), "comment on commit abc")
    assert created.summary() == "created note on merge request !5: https://x/1"
    assert updated.summary() == "updated comment on commit abc: https://x/1"
