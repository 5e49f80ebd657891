"""`python -m cxml.report`: the pull-request report (markdown + charts), posted as one comment."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cxml.core import console, ghactions
from cxml.core.config import Params, default_params_path, load_params
from cxml.core.console import run_entry_point
from cxml.core.errors import ReportError
from cxml.core.files import write_text
from cxml.report.forges.targets import (
    Destination,
    GitHubDestination,
    GitLabDestination,
    NoDestination,
    resolve_destination,
)
from cxml.report.markdown import (
    GITHUB_COMMENT_LIMIT,
    SUMMARY_LIMIT,
    ChartImage,
    ReportData,
    build_report,
    fit_to_limit,
    has_watermark,
    render,
)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params_path = args.params or default_params_path()
    params = load_params(params_path)
    report_path = args.output or Path(params.outputs.report)
    data = load_report_data(params, params_path, name=args.name or params.tracking.model_name)
    data = replace(data, model_unchanged=args.model_unchanged)
    destination = resolve_destination(args, data.links, data.name)
    data = replace(data, links=replace(data.links, commit=destination.commit or data.links.commit))
    local_images = [] if args.no_images else draw_charts(data, report_path)
    posted_images = publish_images(destination, local_images, args) if args.publish_images else None

    write_text(report_path, full_markdown(data, posted_images or local_images, report_path))
    comment_data = with_images(
        data, posted_images or [], report_path, hint=images_hint(local_images, args)
    )
    hint = f"the job summary and `{report_path.as_posix()}`"
    ghactions.append_summary(
        fit_to_limit(build_report(comment_data), limit=SUMMARY_LIMIT, hint=hint)
    )
    comment = fit_to_limit(build_report(comment_data), limit=GITHUB_COMMENT_LIMIT, hint=hint)
    console.info(f"report: wrote {report_path} ({len(local_images)} chart images)")
    if args.dry_run:
        console.info(comment)
        return 0
    url = post_comment(destination, comment, data.name)
    if url:
        ghactions.set_output("comment-url", url)
    return 0


def write_report(params: Params, params_path: Path, *, images: bool = True) -> Path:
    """report.md (and its PNG charts) for `cxml run`: the same report, posted nowhere."""
    report_path = Path(params.outputs.report)
    data = load_report_data(params, params_path, name=params.tracking.model_name)
    charts = draw_charts(data, report_path) if images else []
    write_text(report_path, full_markdown(data, charts, report_path))
    return report_path


def full_markdown(data: ReportData, images: list[ChartImage], report_path: Path) -> str:
    """report.md itself: never trimmed, images by URL or by path relative to report.md."""
    return render(build_report(with_images(data, images, report_path, hint=None)))


def draw_charts(data: ReportData, report_path: Path) -> list[ChartImage]:
    """PNG charts next to report.md; a missing matplotlib only costs the images (a warning)."""
    try:
        from cxml.report.images import write_charts

        per_class_baseline = {
            key.removeprefix("per_class_accuracy."): value
            for key, value in (data.gate.baseline_metrics or {}).items()
            if key.startswith("per_class_accuracy.")
        }
        charts = write_charts(
            report_path,
            curve=data.train_curve,
            baseline_curve=data.baseline_train_curve,
            baseline_label=data.gate.baseline_label,
            confusion=data.confusion,
            per_class=data.per_class,
            baseline_per_class=per_class_baseline or None,
        )
    except ImportError:
        console.warn("matplotlib is not installed (pip install 'cxml[report]'); no PNG charts")
        return []
    return [ChartImage(chart.title, chart.path.as_posix()) for chart in charts]


def publish_images(
    destination: Destination, images: list[ChartImage], args: argparse.Namespace
) -> list[ChartImage] | None:
    """Push the PNGs to the images branch; a failure warns and the comment goes without them."""
    if not images:
        return None
    if not isinstance(destination, GitHubDestination):
        console.warn("--publish-images works on GitHub only; the comment links no images")
        return None
    if args.dry_run:
        console.info(f"report: --dry-run, not publishing {len(images)} images")
        return None
    folder = f"{destination.commit or 'local'}/{destination.name_slug}"
    files = {f"{folder}/{Path(img.src).name}": Path(img.src).read_bytes() for img in images}
    try:
        with destination.client() as client:
            sha = client.publish_files(
                args.images_branch, files, f"cxml report images for {folder}"
            )
            links = [client.file_url(sha, path) for path in files]
    except ReportError as error:
        console.warn(f"images not published: {error}")
        return None
    console.info(f"report: published {len(files)} images to branch {args.images_branch}")
    return [ChartImage(img.title, link) for img, link in zip(images, links, strict=True)]


def with_images(
    data: ReportData, images: list[ChartImage], report_path: Path, *, hint: str | None
) -> ReportData:
    base = report_path.parent
    relative = [
        ChartImage(img.title, img.src if "://" in img.src else relative_to(img.src, base))
        for img in images
    ]
    return replace(data, images=tuple(relative), images_note=None if images else hint)


def relative_to(path: str, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def images_hint(local_images: list[ChartImage], args: argparse.Namespace) -> str | None:
    if not local_images or args.publish_images:
        return None
    return "PNG charts are next to report.md; pass --publish-images to show them here."


def post_comment(destination: Destination, body: str, name: str) -> str | None:
    """Create or update this report's comment; returns its URL (None when nothing is posted)."""
    if isinstance(destination, GitHubDestination) and destination.target is not None:
        with destination.client() as client:
            comment = client.upsert_comment(
                destination.target, body, lambda text: has_watermark(text, name)
            )
        verb = "created" if comment.created else "updated"
        console.info(f"report: {verb} comment on {destination.target.describe()}: {comment.url}")
        return comment.url
    if isinstance(destination, GitLabDestination):
        with destination.client() as client:
            note = client.upsert_note(destination.iid, body, lambda text: has_watermark(text, name))
        verb = "created" if note.created else "updated"
        console.info(f"report: {verb} note on merge request !{destination.iid}: {note.url}")
        return note.url
    reason = destination.reason if isinstance(destination, NoDestination) else "--target none"
    console.info(f"report: {reason}; nothing posted")
    return None


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
