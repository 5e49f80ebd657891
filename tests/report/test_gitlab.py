"""cxml.report.forges.gitlab and `cxml report` in a GitLab merge-request pipeline, against a loopback fake GitLab.

GitLab publishes no machine-readable REST description we can check against here, so the fake
checks what its v4 docs state for the three note endpoints and `GET /user`: the paths,
`PRIVATE-TOKEN` or `JOB-TOKEN`, a JSON body with a string `body`, and `per_page` <= 100. Notes
carry their `author` as GitLab's do; each token acts as one user (a project access token's is
a bot user, `project_<id>_bot_<hash>`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from cxml.core.console import run_entry_point
from cxml.core.errors import ReportError
from cxml.report.forges.gitlab import GitLabClient
from cxml.report.forges.http import RetryPolicy
from cxml.report.step import main
from tests.support.report import Workspace, clean_env, workspace  # noqa: F401 - fixtures `ws` uses

TOKEN = "glpat-fakeProjectToken123"
OTHER_TOKEN = "glpat-someoneElsesToken456"
USERS = {
    TOKEN: {"id": 71, "username": "project_42_bot_0a1b2c", "name": "cxml", "bot": True},
    OTHER_TOKEN: {"id": 72, "username": "mallory", "name": "Mallory", "bot": False},
}
PROJECT = "group/model-repo"
FAST = RetryPolicy(deadline_s=5, base_delay_s=0.01, max_delay_s=0.05)


class FakeGitLab:
    """Merge request !5 of one project; notes kept in memory like GitLab."""

    def __init__(self) -> None:
        self.notes: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.violations: list[str] = []
        self.ids = itertools.count(301)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v4"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def serve(self) -> None:
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append((self.command, parts.path))
                status, payload = fake.handle(
                    self.command, parts.path, parse_qs(parts.query), dict(self.headers), raw
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = serve

        return Handler

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
    ) -> tuple[int, Any]:
        token = headers.get("PRIVATE-TOKEN") or headers.get("JOB-TOKEN")
        if token not in USERS:
            return 401, {"message": "401 Unauthorized"}
        if path == "/api/v4/user" and method == "GET":
            return 200, {**USERS[token], "state": "active", "web_url": "https://gitlab.example.com"}
        match = re.fullmatch(
            r"/api/v4/projects/([^/]+)/merge_requests/(\d+)(/notes(?:/(\d+))?)?", path
        )
        if match is None or unquote(match.group(1)) != PROJECT:
            return 404, {"message": "404 Project Not Found"}
        if int(match.group(2)) != 5:
            return 404, {"message": "404 Not found"}
        if int(query.get("per_page", ["20"])[0]) > 100:
            self.violations.append("per_page above 100")
        if match.group(3) is None:
            return (
                (
                    200,
                    {
                        "iid": 5,
                        "web_url": "https://gitlab.example.com/group/model-repo/-/merge_requests/5",
                    },
                )
                if method == "GET"
                else (405, {})
            )
        body: Any = None
        if method in ("POST", "PUT"):
            if not headers.get("Content-Type", "").startswith("application/json"):
                self.violations.append(f"{method} {path}: body is not JSON")
            body = json.loads(raw or b"{}")
            if not isinstance(body.get("body"), str):
                self.violations.append(f"{method} {path}: 'body' must be a string")
                return 400, {"message": "400 Bad request - body is missing"}
        note_id = match.group(4)
        if method == "GET" and note_id is None:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("per_page", ["20"])[0])
            items = sorted(self.notes.values(), key=lambda n: n["id"])
            return 200, items[(page - 1) * per_page : page * per_page]
        if method == "POST" and note_id is None:
            note = {
                "id": next(self.ids),
                "body": body["body"],
                "author": USERS[token],
                "system": False,
                "noteable_iid": 5,
            }
            self.notes[note["id"]] = note
            return 201, note
        if method == "PUT" and note_id is not None and int(note_id) in self.notes:
            self.notes[int(note_id)]["body"] = body["body"]
            return 200, self.notes[int(note_id)]
        return 404, {"message": "404 Not found"}


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    fake = FakeGitLab()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    assert fake.violations == []


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
    for key, value in {
        "CI_MERGE_REQUEST_IID": "5",
        "CI_PROJECT_ID": PROJECT,
        "CI_API_V4_URL": gitlab.api_url,
        "GITLAB_TOKEN": TOKEN,
    }.items():
        monkeypatch.setenv(key, value)
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
    for key, value in {
        "CI_MERGE_REQUEST_IID": "5",
        "CI_PROJECT_ID": PROJECT,
        "CI_API_V4_URL": gitlab.api_url,
        "GITLAB_TOKEN": TOKEN,
    }.items():
        monkeypatch.setenv(key, value)
    assert run_entry_point(main, ["--publish-images"]) == 0
    out = capsys.readouterr()
    assert "warning: --publish-images works on GitHub only; the comment links no images" in out.err
    assert "created note on merge request !5" in out.out
    (note,) = gitlab.notes.values()
    assert "![" not in note["body"]
