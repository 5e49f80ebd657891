"""A fork pull request's report, carried from its untrusted job to a trusted one that comments.

A pull request from a fork gets a read-only token, so its own job cannot comment. It uploads
`pr-number` and `report.md` as the artifact `cxml-pr-report`; a job triggered by `workflow_run`
(workflows-templates/cxml-pr-comment.yml) downloads it and runs `cxml report --from-artifact DIR`.
Everything in the artifact was written by the pull request's code, so it is data, read with
limits and never run: regular files only (no links), sizes capped, UTF-8, the number a plain
positive integer. The markdown is posted under a header the trusted job writes from the event
GitHub sent, with mentions defanged, images that point at files dropped, and watermarks of its
own removed; its watermark names the fork, so one fork can never update another's comment.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxml.core import console, env, ghactions
from cxml.core.errors import EXIT_INPUT, ReportError
from cxml.report.escape import defang_mentions
from cxml.report.forges.targets import pick_forge, read_event
from cxml.report.markdown import GITHUB_COMMENT_LIMIT, has_watermark, watermark

ARTIFACT_NAME = "cxml-pr-report"
PR_NUMBER_FILE = "pr-number"
REPORT_FILE = "report.md"
MAX_REPORT_BYTES = 1024 * 1024
MAX_NUMBER_BYTES = 64
PR_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
REPOSITORY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
ANY_WATERMARK = re.compile(r"<!--\s*cxml-report:.*?-->", re.DOTALL)
# An image whose destination is not a web address (a PNG next to report.md) shows as broken.
FILE_IMAGE = re.compile(r"!\[([^\]\n]*)\]\((?!https://)[^)\n]*\)")


@dataclass(frozen=True)
class PullRequestReport:
    """What the fork's job handed over: the pull request it says it is, and its report."""

    number: int
    markdown: str


def artifact_error(message: str) -> ReportError:
    return ReportError(
        f"{message}; the artifact {ARTIFACT_NAME} is written by the pull request's job "
        "(workflows-templates/cxml-pull-request.yml)",
        exit_code=EXIT_INPUT,
    )


def read_artifact_file(folder: Path, name: str, limit: int) -> str:
    """One file of the artifact: a regular file (never a link), at most `limit` bytes, UTF-8."""
    path = folder / name
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise artifact_error(f"{path}: not in the artifact") from None
    except OSError as exc:
        raise artifact_error(f"{path}: not a regular file ({exc.strerror})") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise artifact_error(f"{path}: not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise artifact_error(f"{path}: larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise artifact_error(f"{path}: not UTF-8 text") from None


def parse_pr_number(text: str, *, label: str) -> int:
    value = text.strip()
    if not PR_NUMBER.fullmatch(value):
        raise artifact_error(f"{label}: expected a pull-request number, got {value[:20]!r}")
    return int(value)


def read_pr_artifact(folder: Path) -> PullRequestReport:
    if not folder.is_dir():
        raise artifact_error(f"{folder}: no such folder (was the artifact downloaded?)")
    number_text = read_artifact_file(folder, PR_NUMBER_FILE, MAX_NUMBER_BYTES)
    number = parse_pr_number(number_text, label=str(folder / PR_NUMBER_FILE))
    markdown = read_artifact_file(folder, REPORT_FILE, MAX_REPORT_BYTES)
    return PullRequestReport(number, markdown)


def triggering_run(event: dict[str, Any]) -> dict[str, Any]:
    run = event.get("workflow_run")
    return run if isinstance(run, dict) else {}


def check_number_against_event(number: int, event: dict[str, Any]) -> None:
    """GitHub lists the run's pull requests for branches of this repository (not for forks)."""
    pulls = triggering_run(event).get("pull_requests")
    if not isinstance(pulls, list) or not pulls:
        return
    listed = {pull.get("number") for pull in pulls if isinstance(pull, dict)}
    if number not in listed:
        raise ReportError(
            f"the artifact names pull request #{number}, but the run that wrote it belongs to "
            f"{', '.join(f'#{n}' for n in sorted(n for n in listed if isinstance(n, int)))}; "
            "nothing posted",
            exit_code=EXIT_INPUT,
        )


def source_of(event: dict[str, Any]) -> tuple[str, str]:
    """(fork `owner/name`, short commit) of the run that wrote the artifact, from GitHub's event."""
    run = triggering_run(event)
    head = run.get("head_repository")
    repository = head.get("full_name") if isinstance(head, dict) else None
    sha = run.get("head_sha")
    name = (
        repository if isinstance(repository, str) and REPOSITORY_NAME.fullmatch(repository) else ""
    )
    commit = sha[:12] if isinstance(sha, str) and COMMIT_SHA.fullmatch(sha) else ""
    return name or "an unknown repository", commit or "an unknown commit"


def comment_body(report: PullRequestReport, name: str, source: tuple[str, str]) -> str:
    """The trusted header, then the pull request's own markdown made inert where it matters."""
    repository, commit = source
    header = (
        f"{watermark(name)}\n"
        f"> [!NOTE]\n> Report written by the pull request's own job (`{repository}` at `{commit}`) "
        "and posted unchanged by a trusted job; the pull request's checks are what count.\n\n"
    )
    markdown = ANY_WATERMARK.sub("", report.markdown)
    markdown = FILE_IMAGE.sub(
        lambda m: f"*(chart: {m[1] or 'image'}, in the job's artifact)*", markdown
    )
    markdown = defang_mentions(markdown)
    room = GITHUB_COMMENT_LIMIT - len(header)
    if len(markdown) > room:
        tail = (
            "\n\n…\n\n> ✂️ Cut at GitHub's comment limit; the full report is in the job summary.\n"
        )
        markdown = markdown[: room - len(tail)] + tail
    return header + markdown


def post_pull_request_artifact(args: argparse.Namespace) -> int:
    """`cxml report --from-artifact DIR`: post a fork pull request's report on it."""
    report = read_pr_artifact(Path(args.from_artifact))
    event = read_event(env.get(env.GITHUB_EVENT_PATH))
    check_number_against_event(report.number, event)
    source = source_of(event)
    # The watermark names the fork: a fork that lies about its number cannot take over the
    # comment of another pull request, only add one of its own, under this header.
    name = f"{args.name or 'cxml-model'} from {source[0]}"
    body = comment_body(report, name, source)
    if args.dry_run:
        console.info(body)
        return 0
    forge = pick_forge(replace_pr(args, report.number), commit=None)
    posted = forge.upsert_comment(body, lambda text: has_watermark(text, name))
    console.info(f"report: {posted.summary()}")
    if posted.url:
        ghactions.set_output("comment-url", posted.url)
    return 0


def replace_pr(args: argparse.Namespace, number: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "pr": number, "target": "pr"})
