"""The one interface of a place a report goes (a forge): post its comment, host its images."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from cxml.core.errors import ReportError

IsOurs = Callable[[str | None], bool]
"""Tells this report's comment (its watermark) from everyone else's."""


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
