"""cxml.report.forges.github against the loopback fake GitHub that checks requests against GitHub's OpenAPI."""

from __future__ import annotations

import socket
import time

import pytest

from cxml.core.errors import ReportError
from cxml.report.forges.github import CommentTarget, GitHubClient
from cxml.report.forges.http import RetryPolicy, TimeBudget, retry_after_seconds
from tests.support.github_server import FakeGitHub, github_server  # noqa: F401 - the fixture `fake` uses

PR = CommentTarget("pr", number=7)


@pytest.fixture
def fake(github_server: FakeGitHub) -> FakeGitHub:  # noqa: F811
    """The contract-checking fake GitHub (fails the test on any request GitHub would reject)."""
    return github_server


FAST = RetryPolicy(deadline_s=10, base_delay_s=0.01, max_delay_s=0.05)


def ours(name: str = "digits"):  # type: ignore[no-untyped-def]
    mark = f"<!-- cxml-report: {name} -->"
    return lambda body: bool(body) and body.splitlines()[0] == mark


def body(name: str = "digits", text: str = "accuracy 0.97") -> str:
    return f"<!-- cxml-report: {name} -->\n{text}"


def calls(gh: FakeGitHub) -> list[str]:
    """The requests made, short: `GET comments`, `GET /user`, `PATCH`."""
    return [
        f"{r.method} {'/user' if r.path == '/user' else 'comments'}"
        if r.method != "PATCH"
        else "PATCH"
        for r in gh.requests
    ]


def client(gh: FakeGitHub, token: str | None = None, policy: RetryPolicy = FAST) -> GitHubClient:
    return GitHubClient(
        token or gh.token,
        gh.repository,
        api_url=gh.api_url,
        server_url=gh.server_url,
        policy=policy,
    )


# ---------------------------------------------------------------- create or update


def test_first_run_creates_the_comment_and_second_run_updates_it(fake: FakeGitHub) -> None:
    with client(fake) as gh:
        first = gh.upsert_comment(PR, body(text="run 1"), ours())
        second = gh.upsert_comment(PR, body(text="run 2"), ours())
    assert first.created and not second.created
    assert first.id == second.id
    comments = fake.issue_comments(7)
    assert [c["body"] for c in comments] == [body(text="run 2")]
    assert second.url.endswith(f"/pull/7#issuecomment-{first.id}")


def test_two_models_keep_two_comments(fake: FakeGitHub) -> None:
    with client(fake) as gh:
        gh.upsert_comment(PR, body("small"), ours("small"))
        gh.upsert_comment(PR, body("large"), ours("large"))
        gh.upsert_comment(PR, body("small", "v2"), ours("small"))
    bodies = sorted(c["body"] for c in fake.issue_comments(7))
    assert bodies == [body("large"), body("small", "v2")]


def test_other_peoples_comments_are_left_alone(fake: FakeGitHub) -> None:
    with client(fake) as gh:
        gh._call("POST", f"{gh.repo_path}/issues/7/comments", json={"body": "LGTM"}, action="seed")
        gh.upsert_comment(PR, body(), ours())
    assert sorted(c["body"] for c in fake.issue_comments(7)) == sorted(["LGTM", body()])


def test_someone_elses_comment_with_our_watermark_is_never_edited(fake: FakeGitHub) -> None:
    mallory = fake.add_token("ghp_malloryPersonalToken000", login="mallory")
    planted = body(text="mallory: the gate passed, merge away")
    with client(fake, token=mallory) as gh:
        gh._call("POST", f"{gh.repo_path}/issues/7/comments", json={"body": planted}, action="x")
    with client(fake) as gh:
        first = gh.upsert_comment(PR, body(text="run 1"), ours())
        second = gh.upsert_comment(PR, body(text="run 2"), ours())
    assert first.created and not second.created and first.id == second.id
    by_author = {c["user"]["login"]: c["body"] for c in fake.issue_comments(7)}
    assert by_author == {"mallory": planted, "github-actions[bot]": body(text="run 2")}
    assert [r.status for r in fake.requests if r.path == "/user"] == [403]  # GITHUB_TOKEN


def test_a_personal_access_token_updates_its_own_users_comment_only(fake: FakeGitHub) -> None:
    octocat = fake.add_token("ghp_octocatPersonalToken00", login="octocat")
    with client(fake) as bot:  # the Actions bot's report, from before the switch to a PAT
        bot.upsert_comment(PR, body(text="by the bot"), ours())
    with client(fake, token=octocat) as gh:
        first = gh.upsert_comment(PR, body(text="run 1"), ours())
        second = gh.upsert_comment(PR, body(text="run 2"), ours())
    assert first.created and not second.created and first.id == second.id
    by_author = {c["user"]["login"]: c["body"] for c in fake.issue_comments(7)}
    assert by_author == {
        "github-actions[bot]": body(text="by the bot"),
        "octocat": body(text="run 2"),
    }
    assert [r.status for r in fake.requests if r.path == "/user"] == [200]


def test_a_user_named_like_the_bot_is_not_the_bot(fake: FakeGitHub) -> None:
    impostor = fake.add_token("ghp_impostorToken000000000", login="github-actions[bot]")
    with client(fake, token=impostor) as gh:
        gh._call("POST", f"{gh.repo_path}/issues/7/comments", json={"body": body()}, action="x")
    with client(fake) as gh:
        assert gh.upsert_comment(PR, body(text="mine"), ours()).created


def test_comment_author_overrides_who_the_poster_is(fake: FakeGitHub) -> None:
    octocat = fake.add_token("ghp_octocatPersonalToken00", login="octocat")
    with client(fake, token=octocat) as gh:
        earlier = gh.upsert_comment(PR, body(text="run 1"), ours())
    with client(fake) as gh:  # e.g. a GitHub App's token, whose bot GitHub will not name
        updated = gh.upsert_comment(PR, body(text="run 2"), ours(), author="OctoCat")
    assert not updated.created and updated.id == earlier.id
    assert [r.path for r in fake.requests].count("/user") == 0


def test_a_token_github_will_not_identify_is_a_clear_error(fake: FakeGitHub) -> None:
    with client(fake) as gh:
        gh.upsert_comment(PR, body(), ours())
    fake.fail_next("GET", r"^/user$", status=404, message="Not Found")
    with client(fake) as gh, pytest.raises(ReportError) as caught:
        gh.upsert_comment(PR, body(text="again"), ours())
    assert str(caught.value) == (
        "GitHub would not say who the token belongs to (GET /user: 404: Not Found), so cxml "
        "cannot tell its own comment from others'; pass --comment-author LOGIN"
    )
    assert len(fake.issue_comments(7)) == 1


def test_the_watermark_is_found_beyond_the_first_page(fake: FakeGitHub) -> None:
    with client(fake) as gh:
        for i in range(120):
            gh._call(
                "POST",
                f"{gh.repo_path}/issues/7/comments",
                json={"body": f"chatter {i}"},
                action="seed",
            )
        created = gh.upsert_comment(PR, body(), ours())
        updated = gh.upsert_comment(PR, body(text="again"), ours())
    assert created.created and not updated.created and created.id == updated.id
    pages = [r.query.get("page") for r in fake.requests if r.method == "GET"]
    assert ["2"] in pages
    assert len(fake.issue_comments(7)) == 121


def test_a_retried_post_after_a_dropped_connection_does_not_duplicate(
    fake: FakeGitHub,
) -> None:
    fake.drop_after_next("POST", r"/issues/7/comments$")
    with client(fake) as gh:
        comment = gh.upsert_comment(PR, body(text="once"), ours())
    comments = fake.issue_comments(7)
    assert len(comments) == 1
    assert comments[0]["body"] == body(text="once")
    assert not comment.created  # the lost POST had landed; the retry found and updated it
    assert calls(fake) == ["GET comments", "POST comments", "GET comments", "GET /user", "PATCH"]


def test_a_post_whose_answer_is_cut_off_is_checked_before_it_is_sent_again(
    fake: FakeGitHub,
) -> None:
    fake.cut_body_next("POST", r"/issues/7/comments$")
    with client(fake) as gh:
        comment = gh.upsert_comment(PR, body(text="once"), ours())
    assert [c["body"] for c in fake.issue_comments(7)] == [body(text="once")]
    assert not comment.created  # the cut-off POST had landed; the fresh look found it
    assert calls(fake) == ["GET comments", "POST comments", "GET comments", "GET /user", "PATCH"]


def test_a_read_whose_answer_is_cut_off_is_retried(fake: FakeGitHub) -> None:
    with client(fake) as gh:
        gh.upsert_comment(PR, body(), ours())
        fake.cut_body_next("GET", r"/issues/7/comments$")
        comment = gh.upsert_comment(PR, body(text="v2"), ours())
    assert not comment.created
    assert [c["body"] for c in fake.issue_comments(7)] == [body(text="v2")]


def test_a_post_answered_503_is_checked_before_it_is_sent_again(fake: FakeGitHub) -> None:
    fake.fail_next("POST", r"/issues/7/comments$", status=503)
    with client(fake) as gh:
        comment = gh.upsert_comment(PR, body(), ours())
    assert comment.created
    assert len(fake.issue_comments(7)) == 1


def test_server_errors_on_reads_are_retried_with_backoff(fake: FakeGitHub) -> None:
    fake.fail_next("GET", r"/comments$", status=502, times=2)
    with client(fake) as gh:
        gh.upsert_comment(PR, body(), ours())
    assert [r.status for r in fake.requests[:3]] == [502, 502, 200]


def test_secondary_rate_limit_waits_for_retry_after(fake: FakeGitHub) -> None:
    fake.fail_next(
        "POST",
        r"/comments$",
        status=403,
        retry_after=1,
        message="You have exceeded a secondary rate limit",
    )
    started = time.monotonic()
    with client(fake) as gh:
        comment = gh.upsert_comment(PR, body(), ours())
    assert time.monotonic() - started >= 1.0
    assert comment.created and len(fake.issue_comments(7)) == 1


def test_a_wait_longer_than_the_budget_fails_fast_with_a_clear_message(
    fake: FakeGitHub,
) -> None:
    fake.fail_next("GET", r"/comments$", status=429, retry_after=3600)
    started = time.monotonic()
    with (
        client(fake) as gh,
        pytest.raises(ReportError, match="past the 10 s budget; re-run the job later"),
    ):
        gh.upsert_comment(PR, body(), ours())
    assert time.monotonic() - started < 2


def test_commit_comments_by_someone_else_are_left_alone_too(fake: FakeGitHub) -> None:
    target = CommentTarget("commit", sha="d" * 40)
    mallory = fake.add_token("ghp_malloryPersonalToken000", login="mallory")
    with client(fake, token=mallory) as gh:
        planted = gh.upsert_comment(target, body(text="planted"), ours())
    with client(fake) as gh:
        mine = gh.upsert_comment(target, body(text="mine"), ours())
    assert mine.created and mine.id != planted.id
    assert sorted(c["body"] for c in fake.commit_comments("d" * 40)) == [
        body(text="mine"),
        body(text="planted"),
    ]


def test_commit_comments_are_created_then_updated(fake: FakeGitHub) -> None:
    target = CommentTarget("commit", sha="c" * 40)
    with client(fake) as gh:
        first = gh.upsert_comment(target, body(text="1"), ours())
        second = gh.upsert_comment(target, body(text="2"), ours())
    assert first.id == second.id and not second.created
    assert [c["body"] for c in fake.commit_comments("c" * 40)] == [body(text="2")]
    assert "#commitcomment-" in second.url


# ---------------------------------------------------------------- errors a person can fix


def test_bad_token_is_one_clear_line_without_the_token(fake: FakeGitHub) -> None:
    secret = "ghp_thisIsNotAValidToken1234567890"
    with client(fake, token=secret) as gh, pytest.raises(ReportError) as caught:
        gh.upsert_comment(PR, body(), ours())
    message = str(caught.value)
    assert message.startswith("GitHub rejected the token (401: Bad credentials)")
    assert "GITHUB_TOKEN" in message and secret not in message and "\n" not in message


def test_read_only_token_explains_permissions_and_forks(fake: FakeGitHub) -> None:
    token = fake.add_token("ghs_readOnlyForkToken", "read")
    fork_pr = CommentTarget("pr", number=7, from_fork=True)
    with client(fake, token=token) as gh, pytest.raises(ReportError) as caught:
        gh.upsert_comment(fork_pr, body(), ours())
    message = str(caught.value)
    assert message.startswith(
        "token cannot write pull-request comments (403: Resource not accessible"
    )
    assert "`permissions: pull-requests: write`" in message
    assert "fork pull requests get a read-only token: post from a `workflow_run` job" in message
    assert token not in message


def test_unknown_pull_request_is_a_404_naming_what_to_check(fake: FakeGitHub) -> None:
    with (
        client(fake) as gh,
        pytest.raises(ReportError, match=r"GitHub answered 404 .*pull request #99"),
    ):
        gh.upsert_comment(CommentTarget("pr", number=99), body(), ours())


def test_unknown_repository_is_a_404(fake: FakeGitHub) -> None:
    gh = GitHubClient(fake.token, "someone/else", api_url=fake.api_url, policy=FAST)
    with gh, pytest.raises(ReportError, match="check that someone/else and pull request #7 exist"):
        gh.upsert_comment(PR, body(), ours())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_down_gives_up_within_the_time_budget() -> None:
    policy = RetryPolicy(deadline_s=0.6, base_delay_s=0.1, max_delay_s=0.2, max_attempts=20)
    gh = GitHubClient(
        "ghs_secret_value", "o/r", api_url=f"http://127.0.0.1:{free_port()}", policy=policy
    )
    started = time.monotonic()
    with gh, pytest.raises(ReportError) as caught:
        gh.upsert_comment(PR, body(), ours())
    assert time.monotonic() - started < 3
    assert "GitHub API at 127.0.0.1" in str(caught.value) and "ghs_secret_value" not in str(
        caught.value
    )


def test_one_time_budget_covers_every_request_and_pause_of_an_upsert(fake: FakeGitHub) -> None:
    fake.fail_next("POST", r"/issues/7/comments$", status=503, times=100)
    policy = RetryPolicy(deadline_s=1.0, base_delay_s=0.6, max_delay_s=5)
    started = time.monotonic()
    with client(fake, policy=policy) as gh, pytest.raises(ReportError) as caught:
        gh.upsert_comment(PR, body(), ours())
    # Pauses of 0.6 s then 1.2 s between the tries: the second would end past the 1 s budget.
    assert time.monotonic() - started < 1.0
    assert str(caught.value).startswith(
        "GitHub API at 127.0.0.1"
    ) and "no time left for checking the comment on pull request #7" in str(caught.value)
    assert [r.method for r in fake.requests] == ["GET", "POST", "GET", "POST"]


def test_clients_sharing_a_budget_share_one_deadline(fake: FakeGitHub) -> None:
    budget = TimeBudget(0.5)
    time.sleep(0.6)  # the clock starts at the first request, not when the budget is made
    with GitHubClient(fake.token, fake.repository, api_url=fake.api_url, budget=budget) as gh:
        gh.upsert_comment(PR, body(), ours())
    time.sleep(0.6)
    with (
        GitHubClient(fake.token, fake.repository, api_url=fake.api_url, budget=budget) as other,
        pytest.raises(ReportError, match=r"used up the 0\.5 s budget for posting the report"),
    ):
        other.publish_files("cxml-assets", {"a.png": b"x"}, "m")
    assert len(fake.issue_comments(7)) == 1
    assert [r.method for r in fake.requests] == ["GET", "POST"]


@pytest.mark.parametrize(
    ("api_url", "reason"),
    [
        ("api.github.com", "no https:// in front"),
        ("ftp://api.github.com", "only http:// and https:// work"),
        ("https:///api/v3", "no valid host name"),
    ],
)
def test_an_unusable_api_url_names_the_setting_and_an_example(api_url: str, reason: str) -> None:
    secret = "ghs_secretInTheUrlTest"
    with (
        GitHubClient(secret, "o/r", api_url=api_url, policy=FAST) as gh,
        pytest.raises(ReportError) as caught,
    ):
        gh.upsert_comment(PR, body(), ours())
    assert str(caught.value) == (
        f"GITHUB_API_URL / --api-url is {api_url!r}, which is not a usable API URL ({reason}): "
        "it must be a full URL like https://api.github.com "
        "(GitHub Enterprise Server: https://HOST/api/v3)"
    )


def test_missing_token_is_a_clear_error() -> None:
    with pytest.raises(
        ReportError, match="no GitHub token; pass a valid token with --token or GITHUB_TOKEN"
    ):
        GitHubClient("", "o/r")


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds({"Retry-After": "7"}, now=0) == 7
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, now=40) == 60
    assert (
        retry_after_seconds({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "130"}, now=100)
        == 30
    )
    assert retry_after_seconds({}, now=0) is None


# ---------------------------------------------------------------- images on a branch


def test_publishing_creates_the_branch_then_adds_one_commit_per_run(
    fake: FakeGitHub,
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    with client(fake) as gh:
        first = gh.publish_files(
            "cxml-assets", {"aaa/digits/training.png": png}, "report images for aaa"
        )
        second = gh.publish_files(
            "cxml-assets", {"bbb/digits/training.png": png[::-1]}, "report images for bbb"
        )
        url = gh.file_url(second, "bbb/digits/training.png")
    files = fake.branch_files("cxml-assets")
    assert files == {"aaa/digits/training.png": png, "bbb/digits/training.png": png[::-1]}
    assert fake.commits[second]["parents"][0]["sha"] == first
    assert (
        url
        == f"{fake.server_url}/octo-org/octo-repo/blob/{second}/bbb/digits/training.png?raw=true"
    )


def test_publishing_without_contents_permission_says_which_permission(
    fake: FakeGitHub,
) -> None:
    token = fake.add_token("ghs_readonly", "read")
    with client(fake, token=token) as gh, pytest.raises(ReportError) as caught:
        gh.publish_files("cxml-assets", {"a.png": b"x"}, "m")
    assert "`permissions: contents: write`" in str(caught.value)
