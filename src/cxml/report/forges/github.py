"""GitHub as a forge: comments created or updated in place, images on a branch (REST client)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote

from cxml import __version__
from cxml.core.errors import EXIT_INPUT, ReportError
from cxml.core.redact import redact_uri
from cxml.report.forges.base import (
    UPSERT_TRIES,
    Comment,
    Forge,
    IsOurs,
    PostedComment,
    PublishedImages,
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

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
API_VERSION = "2022-11-28"
PAGE_SIZE = 100
MAX_PAGES = 30
ACTIONS_BOT_LOGIN = "github-actions[bot]"
"""Who comments made with GITHUB_TOKEN are by."""
INSTALLATION_TOKEN_REFUSAL = "Resource not accessible by integration"
"""GitHub's answer to `GET /user` for an installation token (GITHUB_TOKEN, a GitHub App's)."""
FORK_HINT = (
    "fork pull requests get a read-only token: post from a `workflow_run` job, "
    "see workflows-templates/cxml-pr-comment.yml (`cxml init` writes it)"
)
API_URL_SETTING = ApiUrlSetting(
    "GITHUB_API_URL / --api-url",
    f"{DEFAULT_API_URL} (GitHub Enterprise Server: https://HOST/api/v3)",
)
TOKEN_HINT = (
    "pass a valid token with --token or GITHUB_TOKEN "
    "(in a workflow: `github-token: ${{ secrets.GITHUB_TOKEN }}`)"
)


class GitHubError(ReportError):
    """GitHub refused a request; `status` is the HTTP status."""

    def __init__(self, message: str, *, status: int, exit_code: int | None = None) -> None:
        super().__init__(message, exit_code=exit_code)
        self.status = status


@dataclass(frozen=True)
class CommentTarget:
    """Where the report comment goes: a pull request (by number) or a commit (by SHA)."""

    kind: Literal["pr", "commit"]
    number: int | None = None
    sha: str | None = None
    from_fork: bool = False

    def describe(self) -> str:
        return f"pull request #{self.number}" if self.kind == "pr" else f"commit {self.sha}"


def split_repository(repository: str) -> tuple[str, str]:
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise ReportError(
            f"repository {repository!r} is not owner/name; set GITHUB_REPOSITORY or pass --repo",
            exit_code=EXIT_INPUT,
        )
    return owner, name


class GitHubClient:
    """The few REST calls the report needs, against api.github.com or a GitHub Enterprise URL."""

    def __init__(
        self,
        token: str,
        repository: str,
        *,
        api_url: str = DEFAULT_API_URL,
        server_url: str = DEFAULT_SERVER_URL,
        policy: RetryPolicy | None = None,
        budget: TimeBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ReportError(f"no GitHub token; {TOKEN_HINT}", exit_code=EXIT_INPUT)
        token = clean_token(token, source="the GitHub token")
        self.owner, self.repo = split_repository(repository)
        self.repository = f"{self.owner}/{self.repo}"
        # Only for links the comment shows (images), so never with credentials in it.
        self.server_url = redact_uri(server_url).rstrip("/")
        self.http = JsonHttpClient(
            api_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": f"cxml/{__version__}",
            },
            secret=token,
            service="GitHub",
            url_setting=API_URL_SETTING,
            policy=policy,
            budget=budget,
            sleep=sleep,
        )

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @property
    def repo_path(self) -> str:
        return f"/repos/{quote(self.owner)}/{quote(self.repo)}"

    # ------------------------------------------------------------------ comments

    def comments_path(self, target: CommentTarget) -> str:
        if target.kind == "pr":
            return f"{self.repo_path}/issues/{target.number}/comments"
        return f"{self.repo_path}/commits/{target.sha}/comments"

    def comment_path(self, target: CommentTarget, comment_id: int) -> str:
        if target.kind == "pr":
            return f"{self.repo_path}/issues/comments/{comment_id}"
        return f"{self.repo_path}/comments/{comment_id}"

    def list_comments(self, target: CommentTarget) -> Iterator[dict[str, Any]]:
        for page in range(1, MAX_PAGES + 1):
            response = self._call(
                "GET",
                self.comments_path(target),
                params={"per_page": PAGE_SIZE, "page": page},
                action=f"read the comments of {target.describe()}",
                target=target,
            )
            items = response if isinstance(response, list) else []
            yield from (item for item in items if isinstance(item, dict))
            if len(items) < PAGE_SIZE:
                return

    def find_comment(
        self,
        target: CommentTarget,
        is_ours: Callable[[str | None], bool],
        *,
        author: str | None = None,
    ) -> dict[str, Any] | None:
        """Our earlier comment on `target` (see `first_of_ours`); the poster is `author` when
        given, else `token_login`."""
        return first_of_ours(
            self.list_comments(target),
            is_ours,
            lambda comment: self.written_by(comment, author or self.token_login),
        )

    @staticmethod
    def written_by(comment: Mapping[str, Any], login: str) -> bool:
        """Whether GitHub says `login` wrote `comment` (logins ignore case; bots are type Bot)."""
        user = comment.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("login"), str):
            return False  # a deleted account ("ghost") is nobody's
        if login.endswith("[bot]") and user.get("type") != "Bot":
            return False
        return str(user["login"]).lower() == login.lower()

    @cached_property
    def token_login(self) -> str:
        """Who comments made with this token are by: the user of a personal access token, or
        github-actions[bot] for an installation token (GITHUB_TOKEN), which GitHub does not
        let read `GET /user`. A GitHub App's own token posts as APP-SLUG[bot]: pass that as
        --comment-author."""
        return token_owner(self.http, "login", refused=installation_token_or_error)

    def upsert_comment(
        self,
        target: CommentTarget,
        body: str,
        is_ours: Callable[[str | None], bool],
        *,
        author: str | None = None,
    ) -> Comment:
        """Update our earlier comment (watermark and author), or create one; never two copies.

        A create whose outcome is unknown (connection dropped, 5xx) is followed by a fresh look
        for the watermark before anything is sent again, so a retried POST cannot duplicate.
        """

        def update(existing: dict[str, Any]) -> Comment:
            updated = self._call(
                "PATCH",
                self.comment_path(target, int(existing["id"])),
                json={"body": body},
                action=f"update the report comment on {target.describe()}",
                target=target,
            )
            return Comment(int(updated["id"]), str(updated["html_url"]), created=False)

        def create() -> Comment:
            created = self._call(
                "POST",
                self.comments_path(target),
                json={"body": body},
                action=f"comment on {target.describe()}",
                target=target,
                idempotent=False,
            )
            return Comment(int(created["id"]), str(created["html_url"]), created=True)

        return upsert(
            find=lambda: self.find_comment(target, is_ours, author=author),
            update=update,
            create=create,
            pause=lambda attempt: self.http.pause(
                attempt, before=f"checking the comment on {target.describe()}"
            ),
            gave_up=f"GitHub API: could not confirm the report comment on {target.describe()} "
            f"after {UPSERT_TRIES} tries (connection lost or server errors); re-run the job",
        )

    # ------------------------------------------------------------------ images on a branch

    def can_push(self) -> bool | None:
        """Whether the token may write the repository's contents, as `GET /repos` tells a user's
        token (`permissions.push`); None for an installation token (GITHUB_TOKEN), which GitHub
        answers without `permissions`, or when GitHub would not say."""
        try:
            repository = self.http.request("GET", self.repo_path).data
        except HttpStatusError:
            return None
        permissions = repository.get("permissions") if isinstance(repository, dict) else None
        push = permissions.get("push") if isinstance(permissions, dict) else None
        return push if isinstance(push, bool) else None

    def publish_files(self, branch: str, files: Mapping[str, bytes], message: str) -> str:
        """Commit `files` (path -> content) onto `branch` (created as an orphan if missing).

        Uses the git data API (blobs, one tree, one commit, move the ref) so all images land in
        one commit; returns that commit's SHA, which makes stable image URLs.
        """
        for _ in range(3):
            head = self.branch_head(branch)
            base_tree = self.commit_tree(head) if head else None
            entries = [
                {"path": path, "mode": "100644", "type": "blob", "sha": self.create_blob(data)}
                for path, data in files.items()
            ]
            tree_body: dict[str, Any] = {"tree": entries}
            if base_tree:
                tree_body["base_tree"] = base_tree
            tree = self._call(
                "POST", f"{self.repo_path}/git/trees", json=tree_body, action=publish_action(branch)
            )
            commit = self._call(
                "POST",
                f"{self.repo_path}/git/commits",
                json={"message": message, "tree": tree["sha"], "parents": [head] if head else []},
                action=publish_action(branch),
            )
            if self.move_branch(branch, str(commit["sha"]), exists=head is not None):
                return str(commit["sha"])
        raise ReportError(
            f"GitHub API: branch {branch} kept moving while publishing images; re-run the job"
        )

    def branch_head(self, branch: str) -> str | None:
        try:
            ref = self._call(
                "GET",
                f"{self.repo_path}/git/ref/heads/{quote(branch)}",
                action=publish_action(branch),
            )
        except GitHubError as error:
            if error.status == 404:
                return None
            raise
        return str(ref["object"]["sha"])

    def commit_tree(self, sha: str) -> str:
        commit = self._call("GET", f"{self.repo_path}/git/commits/{sha}", action=publish_action(""))
        return str(commit["tree"]["sha"])

    def create_blob(self, data: bytes) -> str:
        blob = self._call(
            "POST",
            f"{self.repo_path}/git/blobs",
            json={"content": base64.b64encode(data).decode("ascii"), "encoding": "base64"},
            action=publish_action(""),
        )
        return str(blob["sha"])

    def move_branch(self, branch: str, sha: str, *, exists: bool) -> bool:
        """Fast-forward (or create) the branch; False when someone else moved it meanwhile."""
        try:
            if exists:
                self._call(
                    "PATCH",
                    f"{self.repo_path}/git/refs/heads/{quote(branch)}",
                    json={"sha": sha, "force": False},
                    action=publish_action(branch),
                )
            else:
                self._call(
                    "POST",
                    f"{self.repo_path}/git/refs",
                    json={"ref": f"refs/heads/{branch}", "sha": sha},
                    action=publish_action(branch),
                )
        except GitHubError as error:
            if error.status == 422:
                return False
            raise
        return True

    def file_url(self, commit_sha: str, path: str) -> str:
        """A URL GitHub renders as an image in comments, also for private repositories."""
        return f"{self.server_url}/{self.repository}/blob/{commit_sha}/{quote(path)}?raw=true"

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        target: CommentTarget | None = None,
        idempotent: bool = True,
    ) -> Any:
        try:
            response = self.http.request(
                method, path, params=params, json=json, idempotent=idempotent
            )
        except HttpStatusError as error:
            message = explain(error, action=action, target=target, repository=self.repository)
            raise GitHubError(message, status=error.status, exit_code=error.exit_code) from None
        return response.data


class GitHubForge(Forge):
    """A pull request or commit on GitHub: the report's comment, and its images on a branch.

    Every client it opens shares one time budget (--timeout), so images and comment together
    end in time. The token is checked when something is sent, so --dry-run needs none.
    """

    images_supported = True

    def __init__(
        self,
        repository: str,
        *,
        token: str | None,
        target: CommentTarget | None,
        api_url: str,
        server_url: str,
        commit: str | None,
        images_branch: str,
        budget: TimeBudget,
    ) -> None:
        self.repository = repository
        self.token = token
        self.target = target
        """None: publish images only (--target none with --publish-images), post no comment."""
        self.api_url = api_url
        self.server_url = server_url
        self.commit = commit
        self.images_branch = images_branch
        self.budget = budget

    def client(self) -> GitHubClient:
        if not self.token:
            raise ReportError(
                "no GitHub token: pass --token or set GITHUB_TOKEN "
                "(in a workflow: `github-token: ${{ secrets.GITHUB_TOKEN }}`), or use --dry-run",
                exit_code=EXIT_INPUT,
            )
        return GitHubClient(
            self.token,
            self.repository,
            api_url=self.api_url,
            server_url=self.server_url,
            budget=self.budget,
        )

    def upsert_comment(
        self, body: str, is_ours: IsOurs, *, author: str | None = None
    ) -> PostedComment:
        if self.target is None:
            return PostedComment("skipped", "--target none")
        with self.client() as client:
            comment = client.upsert_comment(self.target, body, is_ours, author=author)
        return PostedComment.of(comment, f"comment on {self.target.describe()}")

    def can_publish_images(self) -> bool | None:
        with self.client() as client:
            return client.can_push()

    def publish_images(self, files: Mapping[str, bytes], *, message: str) -> PublishedImages:
        with self.client() as client:
            sha = client.publish_files(self.images_branch, files, message)
            urls = tuple(client.file_url(sha, path) for path in files)
        return PublishedImages(urls, f"branch {self.images_branch}")


def installation_token_or_error(error: HttpStatusError) -> str:
    """A refused `GET /user`: an installation token's comments are github-actions[bot]'s;
    anything else is an error."""
    if error.status == 403 and INSTALLATION_TOKEN_REFUSAL in error.api_message:
        return ACTIONS_BOT_LOGIN
    raise GitHubError(
        who_is_the_token_error(error), status=error.status, exit_code=error.exit_code
    ) from None


def who_is_the_token_error(error: HttpStatusError) -> str:
    if error.status == 401:
        return f"GitHub rejected the token ({error.status}: {error.api_message}); {TOKEN_HINT}"
    return (
        f"GitHub would not say who the token belongs to (GET /user: {error.status}: "
        f"{error.api_message}), so cxml cannot tell its own comment from others'; "
        "pass --comment-author LOGIN"
    )


def publish_action(branch: str) -> str:
    return f"push images to branch {branch}" if branch else "push images"


def explain(
    error: HttpStatusError, *, action: str, target: CommentTarget | None, repository: str
) -> str:
    """One line for a person: what GitHub refused and the most likely fix."""
    status, api = error.status, error.api_message
    if status == 401:
        return f"GitHub rejected the token ({status}: {api}); {TOKEN_HINT}"
    if status == 403:
        if target is not None and target.kind == "pr":
            fix = "give the job `permissions: pull-requests: write`"
            fork = FORK_HINT if target.from_fork else f"if this is a fork pull request: {FORK_HINT}"
            return f"token cannot write pull-request comments ({status}: {api}): {fix}; {fork}"
        if target is not None:
            return (
                f"token cannot write commit comments ({status}: {api}): give the job "
                "`permissions: contents: write`, or use --target pr / none"
            )
        return (
            f"token cannot {action} ({status}: {api}): give the job `permissions: contents: write`"
        )
    if status == 404:
        where = target.describe() if target is not None else "the repository"
        return (
            f"GitHub answered 404 to {action} ({api}): check that {repository} and {where} exist "
            "(GITHUB_REPOSITORY, --repo, --pr) and that the token can see the repository"
        )
    if status == 409 and target is None:
        return f"cannot {action} ({status}: {api}): the repository must have at least one commit"
    return f"GitHub refused to {action} ({status}: {api})"
