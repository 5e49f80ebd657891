"""`python -m cxml.report`: the pull-request report (markdown + charts), posted as one comment."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cxml.core import console, ghactions
from cxml.core.config import default_params_path, load_params
from cxml.core.console import run_entry_point
from cxml.core.errors import ConfigError, ReportError
from cxml.core.files import write_text
from cxml.report.build import draw_charts, full_markdown, with_images
from cxml.report.escape import code
from cxml.report.forges.base import Forge
from cxml.report.forges.targets import pick_forge
from cxml.report.markdown import (
    GITHUB_COMMENT_LIMIT,
    build_report,
    fit_to_limit,
    has_watermark,
)
from cxml.report.model import ChartImage, ReportData
from cxml.report.pr_artifact import post_pull_request_artifact
from cxml.report.sources import load_report_data

DEFAULT_IMAGES_BRANCH = "cxml-assets"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cxml report",
        description="Build report.md from train/evaluate outputs and post it as a PR comment "
        "(updated in place on the next run).",
    )
    parser.add_argument(
        "--params", type=Path, default=None, help="params.yaml (default: ./params.yaml)"
    )
    parser.add_argument(
        "--name", help="report name in the hidden watermark (default: tracking.model_name)"
    )
    parser.add_argument(
        "--output", type=Path, help="where to write the markdown (default: outputs.report)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the comment; post nothing")
    parser.add_argument(
        "--target",
        choices=("auto", "pr", "commit", "none"),
        default="auto",
        help="auto: the PR on pull_request events, the commit on push (default)",
    )
    parser.add_argument(
        "--pr", type=int, help="pull-request number (default: from $GITHUB_EVENT_PATH)"
    )
    parser.add_argument("--repo", help="owner/name (default: $GITHUB_REPOSITORY)")
    parser.add_argument(
        "--api-url",
        help="GitHub REST API URL (default: $GITHUB_API_URL, else https://api.github.com)",
    )
    parser.add_argument(
        "--token", help="API token (default: $GITHUB_TOKEN, or $GITLAB_TOKEN on GitLab)"
    )
    parser.add_argument(
        "--comment-author",
        metavar="LOGIN",
        help="update only an earlier comment by this login (default: the token's own user, "
        "or github-actions[bot] for GITHUB_TOKEN; a GitHub App's token: APP-SLUG[bot])",
    )
    parser.add_argument(
        "--from-artifact",
        type=Path,
        metavar="DIR",
        help="post a fork pull request's report from its downloaded artifact (pr-number, "
        "report.md) instead of building one; for the workflow_run job of cxml-pr-comment.yml",
    )
    parser.add_argument("--no-images", action="store_true", help="do not draw PNG charts")
    parser.add_argument(
        "--model-unchanged",
        action="store_true",
        help="say that DVC reused the model (nothing the train stage depends on changed)",
    )
    parser.add_argument(
        "--publish-images",
        action="store_true",
        help="push the PNGs to a branch through the GitHub API and link them in the comment",
    )
    parser.add_argument(
        "--images-branch",
        default=DEFAULT_IMAGES_BRANCH,
        help=f"branch for images (default: {DEFAULT_IMAGES_BRANCH})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds for posting the report: every API call, retry and wait together "
        "(default: 120)",
    )
    return parser.parse_args(argv)


def comment_author(value: str | None) -> str | None:
    """--comment-author checked: a GitHub or GitLab login such as `octocat` or `my-app[bot]`."""
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(\[bot\])?", value):
        raise ConfigError(
            f"--comment-author {value!r} is not a login; give one like octocat or my-app[bot]"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    author = comment_author(args.comment_author)
    if args.from_artifact is not None:
        return post_pull_request_artifact(args)
    params_path = args.params or default_params_path()
    params = load_params(params_path)
    report_path = args.output or Path(params.outputs.report)
    data = load_report_data(params, params_path, name=args.name or params.tracking.model_name)
    forge = pick_forge(args, commit=data.links.commit)
    data = about_this_change(data, forge, model_unchanged=args.model_unchanged)

    local_images = [] if args.no_images else draw_charts(data, report_path)
    posted_images = publish_images(forge, local_images, data.name, args)
    write_text(report_path, full_markdown(data, posted_images or local_images, report_path))

    hint = images_hint(local_images, args)
    comment_data = with_images(data, posted_images or [], report_path, hint=hint)
    comment = write_summary_and_fit_comment(comment_data, report_path)
    console.info(f"report: wrote {report_path} ({len(local_images)} chart images)")
    ghactions.set_output("report-file", str(report_path))
    if args.dry_run:
        console.info(comment)
        return 0
    post_comment(forge, comment, data.name, author=author)
    return 0


def about_this_change(data: ReportData, forge: Forge, *, model_unchanged: bool) -> ReportData:
    """The commit the forge reports on (a PR's head, not its merge commit) and DVC's reuse."""
    links = replace(data.links, commit=forge.commit or data.links.commit)
    return replace(data, links=links, model_unchanged=model_unchanged)


def publish_images(
    forge: Forge, images: list[ChartImage], name: str, args: argparse.Namespace
) -> list[ChartImage] | None:
    """Host the PNGs (--publish-images); a failure warns and the comment goes without them."""
    if not args.publish_images or not images:
        return None
    if not forge.images_supported:
        console.warn("--publish-images works on GitHub only; the comment links no images")
        return None
    if args.dry_run:
        console.info(f"report: --dry-run, not publishing {len(images)} images")
        return None
    folder = f"{forge.commit or 'local'}/{slug(name)}"
    files = {f"{folder}/{Path(img.src).name}": Path(img.src).read_bytes() for img in images}
    try:
        published = forge.publish_images(files, message=f"cxml report images for {folder}")
    except ReportError as error:
        console.warn(f"images not published: {error}")
        return None
    console.info(f"report: published {len(files)} images to {published.location}")
    return [ChartImage(img.title, url) for img, url in zip(images, published.urls, strict=True)]


def slug(name: str) -> str:
    """The report name as one safe path segment of the images folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "report"


def images_hint(local_images: list[ChartImage], args: argparse.Namespace) -> str | None:
    if not local_images or args.publish_images:
        return None
    return "PNG charts are next to report.md; pass --publish-images to show them here."


def write_summary_and_fit_comment(data: ReportData, report_path: Path) -> str:
    """Append the report to the job summary and return it cut to fit one comment.

    The summary's room is counted in bytes (what is left of GitHub's 1 MiB for this step, less
    the blank line `append_summary` adds), a comment's in characters.
    """
    report_file = code(report_path.as_posix())
    room = ghactions.summary_room() - 2
    summary = fit_to_limit(build_report(data), limit=room, hint=report_file, unit="bytes")
    ghactions.append_summary(summary)
    hint = f"the job summary and {report_file}"
    return fit_to_limit(build_report(data), limit=GITHUB_COMMENT_LIMIT, hint=hint)


def post_comment(forge: Forge, body: str, name: str, *, author: str | None = None) -> None:
    """Create or update this report's comment; its URL becomes the `comment-url` output.

    Only a comment that carries this report's watermark *and* was written by the poster (or
    `author`) is updated: anyone can paste the watermark into a comment of their own.
    """
    posted = forge.upsert_comment(body, lambda text: has_watermark(text, name), author=author)
    console.info(f"report: {posted.summary()}")
    if posted.url:
        ghactions.set_output("comment-url", posted.url)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
