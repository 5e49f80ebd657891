"""The one interface of a place a report goes (a forge): post its comment, host its images."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cxml.core.errors import ReportError
from cxml.report.forges.http import AmbiguousRequestError, HttpStatusError, JsonHttpClient

IsOurs = Callable[[str | None], bool]
"""Tells this report's comment (its watermark) from everyone else's."""
UPSERT_TRIES = 3


@dataclass(frozen=True)
class Comment:
    """A comment (GitHub) or note (GitLab) as the forge answered it."""

    id: int
    url: str
    created: bool
    """True when this run created the comment, False when it updated an existing one."""


@dataclass(frozen=True)
class PostedComment:
    """What posting the report did: created or updated a comment, or posted nothing."""

    outcome: Literal["created", "updated", "skipped"]
    describes: str
    """The comment's place (`comment on pull request #7`), or why nothing was posted."""
    url: str | None = None

    @classmethod
    def of(cls, comment: Comment, describes: str) -> PostedComment:
        return cls("created" if comment.created else "updated", describes, comment.url)

    def summary(self) -> str:
        """One line for the log: `created comment on pull request #7: <url>`."""
        if self.outcome == "skipped":
            return f"{self.describes}; nothing posted"
        return f"{self.outcome} {self.describes}: {self.url}"


@dataclass(frozen=True)
class PublishedImages:
    urls: tuple[str, ...]
    """One URL per published file, in the order given."""
    location: str
    """Where they went, for the log (`branch cxml-assets`)."""


class Forge(ABC):
    """Where a report is posted: GitHub, GitLab, or nowhere (see `targets.pick_forge`)."""

    commit: str | None
    """The commit the report is about, as this forge knows it (None: unknown)."""
    images_supported: bool = False
    """Whether `publish_images` can host PNGs that the comment then links."""

    @abstractmethod
    def upsert_comment(
        self, body: str, is_ours: IsOurs, *, author: str | None = None
    ) -> PostedComment:
        """Update the comment `is_ours` recognises *that the poster wrote*, or create one.

        The poster is `author` when given, else who the token is (see each forge); a comment
        someone else wrote is never edited, whatever it says. Never leaves two copies.
        """

    def can_publish_images(self) -> bool | None:
        """Whether the token may host images here: True, False, or None when only trying tells."""
        return None if self.images_supported else False

    def publish_images(self, files: Mapping[str, bytes], *, message: str) -> PublishedImages:
        """Host `files` (path -> PNG bytes) and return their URLs; only where images_supported."""
        raise ReportError(f"{type(self).__name__} cannot host images; {message} not published")


class Nowhere(Forge):
    """No place to post: `--target none`, or not in a pull/merge-request pipeline."""

    def __init__(self, reason: str, commit: str | None = None) -> None:
        self.reason = reason
        self.commit = commit

    def upsert_comment(
        self, body: str, is_ours: IsOurs, *, author: str | None = None
    ) -> PostedComment:
        return PostedComment("skipped", self.reason)


# --------------------------------------------------------------------------- shared by the forges


def first_of_ours(
    comments: Iterable[dict[str, Any]],
    is_ours: IsOurs,
    written_by_poster: Callable[[dict[str, Any]], bool],
) -> dict[str, Any] | None:
    """The first comment with our watermark that the poster wrote.

    Anyone can paste the watermark into a comment of their own; updating that one would put the
    report under their name. Who wrote it is asked only of a comment with the watermark, so the
    forge asks who the poster is only once one turns up.
    """
    for comment in comments:
        if is_ours(comment.get("body")) and written_by_poster(comment):
            return comment
    return None


def token_owner(
    http: JsonHttpClient, field: str, *, refused: Callable[[HttpStatusError], str]
) -> str:
    """Who the token acts as: `GET /user`'s `field` (GitHub's `login`, GitLab's `username`).

    `refused` answers a refused `GET /user`: with the name to use anyway, or by raising the
    forge's own error (what it says depends on the forge and the token kind).
    """
    try:
        user = http.request("GET", "/user").data
    except HttpStatusError as error:
        return refused(error)
    name = user.get(field) if isinstance(user, dict) else None
    if not isinstance(name, str) or not name:
        raise ReportError(
            f"{http.service} API: GET /user answered without a {field}; "
            f"pass --comment-author {field.upper()}"
        )
    return name


def upsert(
    *,
    find: Callable[[], dict[str, Any] | None],
    update: Callable[[dict[str, Any]], Comment],
    create: Callable[[], Comment],
    pause: Callable[[int], None],
    gave_up: str,
) -> Comment:
    """Update our earlier comment (`find`), or create one; never two copies.

    A create whose outcome is unknown (connection dropped, 5xx: `AmbiguousRequestError`) is
    followed by a fresh look before anything is sent again, so a retried create cannot duplicate.
    `pause(attempt)` waits before each new look; `gave_up` is the error after the last try.
    """
    for attempt in range(UPSERT_TRIES):
        if attempt:
            pause(attempt)
        existing = find()
        if existing is not None:
            return update(existing)
        try:
            return create()
        except AmbiguousRequestError:
            continue
    raise ReportError(gave_up)
