"""`python -m cxml.report`: the pull-request report (markdown + charts), posted as one comment."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from cxml.core import console, env, ghactions
from cxml.core.config import default_params_path, load_params
from cxml.core.console import run_entry_point
from cxml.core.errors import ConfigError, ReportError
from cxml.core.files import write_text
from cxml.core.git import current_commit
from cxml.deploy.config import DEFAULT_DEPLOY_FILE
from cxml.report.build import draw_charts, full_markdown, with_images
from cxml.report.escape import code
from cxml.report.forges.base import Forge, Nowhere
from cxml.report.forges.targets import pick_forge
from cxml.report.links import staging_demo_page
from cxml.report.markdown import (
    GITHUB_COMMENT_LIMIT,
    Report,
    Section,
    build_report,
    fit_to_limit,
    has_watermark,
    watermark,
)
from cxml.report.model import ChartImage, ReportData
from cxml.report.pr_artifact import ANY_WATERMARK, post_pull_request_artifact
from cxml.report.sources import load_markdown_file, load_report_data, rewrite_local_images
from cxml.tracking.background import collect_eval_metrics

DEFAULT_IMAGES_BRANCH = "cxml-assets"
PUBLISH_CHOICES = ("auto", "true", "false")
TARGETS = ("auto", "pr", "commit", "none")
PERMISSION_HINT = (
    "give the job `permissions: contents: write` (the report action's `publish-images: auto` "
    "then shows them; `publish-images: true` insists)"
)


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
        "--markdown",
        type=Path,
        metavar="FILE",
        help="post this markdown file as it is instead of cxml's report (like `cml comment "
        "create FILE`); images it links by a path under the working directory are published "
        "with --publish-images, else replaced by a note (default --name: the file's name)",
    )
    parser.add_argument(
        "--target",
        default="auto",
        metavar="auto|pr|commit|none",
        help="auto: the PR on pull_request events, the commit on push (default); CML's "
        "pr/N, issue/N and commit/SHA also work",
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
    parser.add_argument(
        "--deploy-file",
        type=Path,
        metavar="FILE",
        help="deploy.yaml whose staging environment's public URL the report links as the demo "
        f"page (default: ./{DEFAULT_DEPLOY_FILE} when there is one)",
    )
    parser.add_argument("--no-images", action="store_true", help="do not draw PNG charts")
    parser.add_argument(
        "--model-unchanged",
        action="store_true",
        help="say that DVC reused the model (nothing the train stage depends on changed)",
    )
    parser.add_argument(
        "--publish-images",
        nargs="?",
        const="true",
        default="false",
        choices=PUBLISH_CHOICES,
        metavar="auto|true|false",
        help="push the PNGs to a branch through the GitHub API and link them in the comment: "
        "true (alone: --publish-images), auto (when the token can write the repository's "
        "contents; the report action's default), false (default: keep the Mermaid charts)",
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


def with_target(args: argparse.Namespace) -> argparse.Namespace:
    """--target checked, CML's forms unpacked: `pr/N` and `issue/N` -> pr N, `commit/SHA`."""
    kind, slash, value = str(args.target).partition("/")
    if not slash and kind in TARGETS:
        return argparse.Namespace(**{**vars(args), "commit": None})
    if kind in ("pr", "issue") and re.fullmatch(r"[1-9][0-9]{0,9}", value):
        return argparse.Namespace(
            **{**vars(args), "target": "pr", "pr": int(value), "commit": None}
        )
    if kind == "commit" and re.fullmatch(r"[0-9a-f]{40}", value):
        return argparse.Namespace(**{**vars(args), "target": "commit", "commit": value})
    raise ConfigError(
        f"--target {args.target!r}: expected one of {', '.join(TARGETS)}, pr/N, issue/N or "
        "commit/SHA (the full 40-character SHA: `git rev-parse SHA`)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = with_target(parse_args(argv))
    author = comment_author(args.comment_author)
    if args.from_artifact is not None:
        if args.markdown is not None:
            raise ConfigError("--markdown and --from-artifact post different reports; pass one")
        posted = post_pull_request_artifact(args)
        collect_pending_tracking(args.params)
        return posted
    if args.markdown is not None:
        posted = post_markdown_file(args, author=author)
        collect_pending_tracking(args.params)
        return posted
    if args.deploy_file is not None and not args.deploy_file.is_file():
        raise ConfigError(
            f"--deploy-file {args.deploy_file} does not exist; give the path of deploy.yaml, "
            "or leave the option out (the report then links no demo page)"
        )
    params_path = args.params or default_params_path()
    params = load_params(params_path)
    report_path = args.output or Path(params.outputs.report)
    data = load_report_data(params, params_path, name=args.name or params.tracking.model_name)
    data = replace(data, demo_page=staging_demo_page(args.deploy_file))
    forge = pick_forge(args, commit=data.links.commit)
    data = about_this_change(data, forge, model_unchanged=args.model_unchanged)

    local_images = [] if args.no_images else draw_charts(data, report_path)
    files = {Path(img.src).name: Path(img.src).read_bytes() for img in local_images}
    published = publish_images(forge, files, data.name, args)
    posted_images = [
        ChartImage(img.title, published.urls[Path(img.src).name])
        for img in local_images
        if Path(img.src).name in published.urls
    ]
    write_text(report_path, full_markdown(data, posted_images or local_images, report_path))

    hint = images_hint(published, forge) if local_images and not posted_images else None
    comment_data = with_images(data, posted_images or [], report_path, hint=hint)
    comment = write_summary_and_fit_comment(comment_data, report_path)
    console.info(f"report: wrote {report_path} ({len(local_images)} chart images)")
    ghactions.set_output("report-file", str(report_path))
    if args.dry_run:
        console.info(comment)
    else:
        post_comment(forge, comment, data.name, author=author)
    collect_eval_metrics(params)  # what evaluate left logging in the background, after the post
    return 0


def collect_pending_tracking(params_path: Path | None) -> None:
    """What evaluate left logging in the background (`--tracking-in-background`), when it did."""
    from cxml.tracking.background import HANDOFF

    if HANDOFF.exists():
        collect_eval_metrics(load_params(params_path or default_params_path()))


def about_this_change(data: ReportData, forge: Forge, *, model_unchanged: bool) -> ReportData:
    """The commit the forge reports on (a PR's head, not its merge commit) and DVC's reuse."""
    links = replace(data.links, commit=forge.commit or data.links.commit)
    return replace(data, links=links, model_unchanged=model_unchanged)


@dataclass(frozen=True)
class Published:
    """What became of the report's images: their URLs by file name, or why there are none."""

    urls: Mapping[str, str]
    why_not: Literal["", "off", "no-permission", "failed", "unsupported", "dry-run"] = ""


def publish_images(
    forge: Forge, files: Mapping[str, bytes], name: str, args: argparse.Namespace
) -> Published:
    """Host the images (file name -> bytes) as --publish-images says; a failure never stops the
    comment: it warns (`true`) or says so quietly (`auto`, where it is the usual answer to a
    token without `contents: write`)."""
    mode = args.publish_images
    if mode == "false" or not files:
        return Published({}, "off")
    if not forge.images_supported:
        if mode == "true":
            console.warn("--publish-images works on GitHub only; the comment links no images")
        return Published({}, "unsupported")
    if args.dry_run:
        console.info(f"report: --dry-run, not publishing {len(files)} images")
        return Published({}, "dry-run")
    if mode == "auto" and forge.can_publish_images() is False:
        console.info(
            "report: the token cannot write the repository's contents; images not published"
        )
        return Published({}, "no-permission")
    folder = f"{forge.commit or 'local'}/{slug(name)}"
    paths = {f"{folder}/{file}": data for file, data in files.items()}
    try:
        hosted = forge.publish_images(paths, message=f"cxml report images for {folder}")
    except ReportError as error:
        (console.warn if mode == "true" else console.info)(f"images not published: {error}")
        return Published({}, "failed")
    console.info(f"report: published {len(paths)} images to {hosted.location}")
    return Published(dict(zip(files, hosted.urls, strict=True)))


def slug(name: str) -> str:
    """The report name as one safe path segment of the images folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "report"


def images_hint(published: Published, forge: Forge) -> str:
    """Why the comment shows no images, and what shows them: in a workflow the report action's
    input and the job's permission (a CLI flag means nothing to someone editing a workflow)."""
    if published.why_not == "unsupported" and not isinstance(forge, Nowhere):
        return (
            "PNG images are next to report.md in the job's workspace; only GitHub shows them here."
        )
    if not env.in_github_actions():
        return "PNG images are next to report.md; pass --publish-images to show them here."
    if published.why_not == "off":
        return (
            "PNG images are not shown: set the report action's `publish-images: true` (or "
            "`auto`); the job needs `permissions: contents: write`."
        )
    if published.why_not == "dry-run":
        return "PNG images are next to report.md (dry run: nothing published)."
    return f"PNG images are not shown: the job's token cannot write contents; {PERMISSION_HINT}."


def post_markdown_file(args: argparse.Namespace, *, author: str | None) -> int:
    """`cxml report --markdown FILE`: post a markdown file as it is, like `cml comment create`."""
    markdown = load_markdown_file(args.markdown)
    name = args.name or markdown.path.name
    forge = pick_forge(args, commit=current_commit())
    files = {image.name: image.data for image in markdown.images}
    published = publish_images(forge, files, name, args)
    hint = images_hint(published, forge) if files and not published.urls else None
    body = rewrite_local_images(
        markdown,
        published.urls,
        lambda alt, file: f"*(image {code(file)}{': ' + alt if alt else ''})*",
    )
    report = Report(
        (
            Section("title", watermark(name)),
            Section("body", ANY_WATERMARK.sub("", body).strip("\n")),
            Section("images", f"_{hint}_" if hint else ""),
        )
    )
    comment = write_summary_and_fit(report, markdown.path)
    if args.output is not None:
        write_text(args.output, comment)
    console.info(f"report: {markdown.path} ({len(files)} local images)")
    ghactions.set_output("report-file", str(markdown.path))
    if args.dry_run:
        console.info(comment)
        return 0
    post_comment(forge, comment, name, author=author)
    return 0


def write_summary_and_fit_comment(data: ReportData, report_path: Path) -> str:
    return write_summary_and_fit(build_report(data), report_path)


def write_summary_and_fit(report: Report, report_path: Path) -> str:
    """Append the report to the job summary and return it cut to fit one comment.

    The summary's room is counted in bytes (what is left of GitHub's 1 MiB for this step, less
    the blank line `append_summary` adds), a comment's in characters.
    """
    report_file = code(report_path.as_posix())
    room = ghactions.summary_room() - 2
    summary = fit_to_limit(report, limit=room, hint=report_file, unit="bytes")
    ghactions.append_summary(summary)
    hint = f"the job summary and {report_file}"
    return fit_to_limit(report, limit=GITHUB_COMMENT_LIMIT, hint=hint)


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
