"""GitLab as a forge: one merge-request note, created or updated in place (REST v4 client)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any, NoReturn
from urllib.parse import quote

from cxml import __version__
from cxml.core.errors import EXIT_INPUT, ReportError
from cxml.report.forges.base import (
    UPSERT_TRIES,
    Comment,
    Forge,
    IsOurs,
    PostedComment,
    first_of_ours,
    token_owner,
    upsert,
)
from cxml.report.forges.http import (
    ApiUrlSetting,
    HttpStatusError,
    JsonHttpClient,
    RetryPolicy,
    TimeBudget,
)
from cxml.report.forges.tokens import clean_token

PAGE_SIZE = 100
MAX_PAGES = 30
API_URL_SETTING = ApiUrlSetting("CI_API_V4_URL", "https://gitlab.example.com/api/v4")
TOKEN_HINT = (
    "set GITLAB_TOKEN (a project access token with the `api` scope and at least the Reporter role)"
)


class GitLabClient:
    """Merge-request notes through `$CI_API_V4_URL`; authenticates with GITLAB_TOKEN or a job token."""

    def __init__(
        self,
        api_url: str,
        project_id: str,
        *,
        token: str,
        job_token: bool = False,
        policy: RetryPolicy | None = None,
        budget: TimeBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ReportError(f"no GitLab token; {TOKEN_HINT}", exit_code=EXIT_INPUT)
        token = clean_token(token, source="the GitLab token")
        self.project_id = project_id
        header = "JOB-TOKEN" if job_token else "PRIVATE-TOKEN"
        self.http = JsonHttpClient(
            api_url,
            headers={header: token, "User-Agent": f"cxml/{__version__}"},
            secret=token,
            service="GitLab",
            url_setting=API_URL_SETTING,
            policy=policy,
            budget=budget,
            sleep=sleep,
        )

    def __enter__(self) -> GitLabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def mr_path(self, iid: int) -> str:
        return f"/projects/{quote(self.project_id, safe='')}/merge_requests/{iid}"

    def list_notes(self, iid: int) -> Iterator[dict[str, Any]]:
        for page in range(1, MAX_PAGES + 1):
            items = self._call(
                "GET",
                f"{self.mr_path(iid)}/notes",
                params={
                    "per_page": PAGE_SIZE,
                    "page": page,
                    "sort": "asc",
                    "order_by": "created_at",
                },
                action=f"read the notes of merge request !{iid}",
            )
            items = items if isinstance(items, list) else []
            yield from (item for item in items if isinstance(item, dict))
            if len(items) < PAGE_SIZE:
                return

    def merge_request_url(self, iid: int) -> str:
        data = self._call("GET", self.mr_path(iid), action=f"read merge request !{iid}")
        return str(data.get("web_url") or "") if isinstance(data, dict) else ""

    def find_note(
        self, iid: int, is_ours: Callable[[str | None], bool], *, author: str | None = None
    ) -> dict[str, Any] | None:
        """The first note with our watermark (`is_ours`) that the poster wrote.

        `author` overrides who the poster is (default: the token's user, `GET /user`); see
        `first_of_ours`.
        """
        return first_of_ours(
            self.list_notes(iid),
            is_ours,
            lambda note: written_by(note, author or self.token_username),
        )

    @cached_property
    def token_username(self) -> str:
        """The user this token acts as (a project or group access token has a bot user)."""
        return token_owner(self.http, "username", refused=who_is_the_token_error)

    def upsert_note(
        self,
        iid: int,
        body: str,
        is_ours: Callable[[str | None], bool],
        *,
        author: str | None = None,
    ) -> Comment:
        """Update our earlier note (watermark and author) or create one; never two copies."""

        def update(existing: dict[str, Any]) -> Comment:
            note = self._call(
                "PUT",
                f"{self.mr_path(iid)}/notes/{int(existing['id'])}",
                json={"body": body},
                action=f"update the report note on merge request !{iid}",
            )
            return Comment(int(note["id"]), self.note_url(iid, int(note["id"])), created=False)

        def create() -> Comment:
            note = self._call(
                "POST",
                f"{self.mr_path(iid)}/notes",
                json={"body": body},
                action=f"comment on merge request !{iid}",
                idempotent=False,
            )
            return Comment(int(note["id"]), self.note_url(iid, int(note["id"])), created=True)

        return upsert(
            find=lambda: self.find_note(iid, is_ours, author=author),
            update=update,
            create=create,
            pause=lambda attempt: self.http.pause(
                attempt, before=f"checking the note on merge request !{iid}"
            ),
            gave_up=f"GitLab API: could not confirm the report note on merge request !{iid} "
            f"after {UPSERT_TRIES} tries; re-run the job",
        )

    def note_url(self, iid: int, note_id: int) -> str:
        web_url = self.merge_request_url(iid)
        return f"{web_url}#note_{note_id}" if web_url else f"note {note_id}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: dict[str, str | int] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> Any:
        try:
            return self.http.request(
                method, path, params=params, json=json, idempotent=idempotent
            ).data
        except HttpStatusError as error:
            message = explain(error, action=action, project_id=self.project_id)
            raise ReportError(message, exit_code=error.exit_code) from None


class GitLabForge(Forge):
    """A merge request on GitLab: the report's note. GitLab has no image branch here (no images)."""

    def __init__(
        self,
        api_url: str,
        project_id: str,
        iid: int,
        *,
        token: str | None,
        job_token: bool,
        commit: str | None,
        budget: TimeBudget,
    ) -> None:
        self.api_url = api_url
        self.project_id = project_id
        self.iid = iid
        self.token = token
        self.job_token = job_token
        self.commit = commit
        self.budget = budget

    def client(self) -> GitLabClient:
        if not self.token:
            raise ReportError(
                "no GitLab token: set GITLAB_TOKEN (a token with the `api` scope)",
                exit_code=EXIT_INPUT,
            )
        return GitLabClient(
            self.api_url,
            self.project_id,
            token=self.token,
            job_token=self.job_token,
            budget=self.budget,
        )

    def upsert_comment(
        self, body: str, is_ours: IsOurs, *, author: str | None = None
    ) -> PostedComment:
        with self.client() as client:
            note = client.upsert_note(self.iid, body, is_ours, author=author)
        return PostedComment.of(note, f"note on merge request !{self.iid}")


def written_by(note: dict[str, Any], username: str) -> bool:
    """Whether GitLab says `username` wrote `note` (usernames ignore case)."""
    note_author = note.get("author")
    name = note_author.get("username") if isinstance(note_author, dict) else None
    return isinstance(name, str) and name.lower() == username.lower()


def who_is_the_token_error(error: HttpStatusError) -> NoReturn:
    raise ReportError(
        f"GitLab would not say who the token belongs to (GET /user: {error.status}: "
        f"{error.api_message}), so cxml cannot tell its own note from others'; "
        f"{TOKEN_HINT}, or pass --comment-author USERNAME",
        exit_code=error.exit_code,
    ) from None


def explain(error: HttpStatusError, *, action: str, project_id: str) -> str:
    status, api = error.status, error.api_message
    if status == 401:
        return f"GitLab rejected the token ({status}: {api}); {TOKEN_HINT}"
    if status == 403:
        return f"token cannot {action} ({status}: {api}): CI_JOB_TOKEN cannot write notes; {TOKEN_HINT}"
    if status == 404:
        return (
            f"GitLab answered 404 to {action} ({api}): check CI_PROJECT_ID ({project_id}) and "
            "CI_MERGE_REQUEST_IID, and that the token can see the project"
        )
    return f"GitLab refused to {action} ({status}: {api})"
