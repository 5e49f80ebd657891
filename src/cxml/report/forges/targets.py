"""Picking the forge a report goes to: a GitHub PR or commit, a GitLab merge request, or nowhere."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cxml.core import env
from cxml.core.errors import ConfigError
from cxml.report.forges import github, gitlab
from cxml.report.forges.base import Forge, Nowhere
from cxml.report.forges.github import (
    DEFAULT_API_URL,
    DEFAULT_SERVER_URL,
    CommentTarget,
    GitHubForge,
)
from cxml.report.forges.gitlab import GitLabForge
from cxml.report.forges.http import TimeBudget
from cxml.report.forges.tokens import check_api_url_has_no_credentials, clean_optional_token

PR_EVENTS = ("pull_request", "pull_request_target")


def read_event(path: str | None) -> dict[str, Any]:
    """The webhook payload at `$GITHUB_EVENT_PATH` ({} when there is none)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"GITHUB_EVENT_PATH={path}: file not found; run inside GitHub Actions or unset it"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"GITHUB_EVENT_PATH={path}: not valid JSON ({exc.msg}); pass --pr N instead"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"GITHUB_EVENT_PATH={path}: expected a JSON object; pass --pr N instead")
    return data


def pr_number(event_name: str | None, event: dict[str, Any]) -> int | None:
    """The PR number of a pull_request(_target) event, or of a workflow_run triggered by one."""
    candidates: list[Any] = []
    if event_name in PR_EVENTS or "pull_request" in event:
        pull = event.get("pull_request")
        candidates += [pull.get("number") if isinstance(pull, dict) else None, event.get("number")]
    if event_name == "workflow_run":
        run = event.get("workflow_run")
        pulls = run.get("pull_requests") if isinstance(run, dict) else None
        if isinstance(pulls, list) and pulls and isinstance(pulls[0], dict):
            candidates.append(pulls[0].get("number"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def pr_head_sha(event: dict[str, Any]) -> str | None:
    pull = event.get("pull_request")
    head = pull.get("head") if isinstance(pull, dict) else None
    sha = head.get("sha") if isinstance(head, dict) else None
    return sha if isinstance(sha, str) and sha else None


def pr_from_fork(event: dict[str, Any]) -> bool:
    pull = event.get("pull_request")
    if not isinstance(pull, dict):
        return False
    head_repo = (pull.get("head") or {}).get("repo") or {}
    base_repo = (pull.get("base") or {}).get("repo") or {}
    head_name, base_name = head_repo.get("full_name"), base_repo.get("full_name")
    return bool(head_name and base_name and head_name != base_name)


def pick_forge(args: argparse.Namespace, *, commit: str | None) -> Forge:
    """GitHub when running in Actions (or given --repo/--pr), GitLab in an MR pipeline, else none.

    `commit` is the one run.json names; on GitHub the event's own commit comes first.
    """
    in_github = bool(
        env.get(env.GITHUB_EVENT_PATH) or env.in_github_actions() or args.repo or args.pr
    )
    if in_github:
        return github_forge(args, commit)
    if env.get(env.CI_MERGE_REQUEST_IID) and args.target != "none":
        return gitlab_forge(args, commit)
    if args.target == "pr" and not getattr(args, "dry_run", False):
        raise ConfigError(
            "--target pr: no pull request here (not in a GitHub Actions pull_request job or a "
            "GitLab merge-request pipeline); pass --repo OWNER/NAME --pr N, or --dry-run to preview"
        )
    return Nowhere("not in a GitHub Actions job or a GitLab merge-request pipeline", commit)


def github_forge(args: argparse.Namespace, recorded_commit: str | None) -> Forge:
    event_name = env.get(env.GITHUB_EVENT_NAME)
    event = read_event(env.get(env.GITHUB_EVENT_PATH))
    # On pull_request events GITHUB_SHA is the synthetic merge commit nobody looks at; the
    # commit the author pushed is the PR head.
    chosen = getattr(args, "commit", None)  # --target commit/SHA
    commit = chosen or pr_head_sha(event) or env.get(env.GITHUB_SHA) or recorded_commit
    target = github_target(args, event_name, event, commit)
    repository = args.repo or env.get(env.GITHUB_REPOSITORY)
    if target is None and getattr(args, "publish_images", "false") != "true":
        return Nowhere(no_target_reason(args.target, event_name), commit)
    if not repository:
        raise ConfigError("no repository: set GITHUB_REPOSITORY or pass --repo owner/name")
    api_url = args.api_url or env.get(env.GITHUB_API_URL) or DEFAULT_API_URL
    return GitHubForge(
        repository,
        token=github_token(args),
        target=target,
        api_url=check_api_url_has_no_credentials(api_url, setting=github.API_URL_SETTING.name),
        server_url=env.get(env.GITHUB_SERVER_URL) or DEFAULT_SERVER_URL,
        commit=commit,
        images_branch=args.images_branch,
        budget=TimeBudget(args.timeout),
    )


def github_token(args: argparse.Namespace) -> str | None:
    """--token, else GITHUB_TOKEN, checked now so that a malformed one fails before any work."""
    if args.token:
        return clean_optional_token(args.token, source="--token")
    return clean_optional_token(env.get(env.GITHUB_TOKEN), source="GITHUB_TOKEN")


def github_target(
    args: argparse.Namespace, event_name: str | None, event: dict[str, Any], commit: str | None
) -> CommentTarget | None:
    mode = args.target
    if mode == "none":
        return None
    if mode in ("auto", "pr"):
        number = args.pr or pr_number(event_name, event)
        if number is not None:
            return CommentTarget("pr", number=number, from_fork=pr_from_fork(event))
        if mode == "pr" or event_name in PR_EVENTS:
            raise ConfigError(
                f"no pull-request number: the {event_name or 'current'} event at $GITHUB_EVENT_PATH "
                "has no pull_request.number; pass --pr N, or --target commit"
            )
    if mode == "commit" or (mode == "auto" and event_name == "push"):
        if not commit:
            raise ConfigError("no commit to comment on: set GITHUB_SHA, or use --target none")
        return CommentTarget("commit", sha=commit)
    return None


def no_target_reason(mode: str, event_name: str | None) -> str:
    if mode == "none":
        return "--target none"
    return f"{event_name or 'this'} event has no pull request or pushed commit to comment on"


def gitlab_forge(args: argparse.Namespace, commit: str | None) -> Forge:
    iid_text = env.get(env.CI_MERGE_REQUEST_IID) or ""
    project_id, api_url = env.get(env.CI_PROJECT_ID), env.get(env.CI_API_V4_URL)
    if not iid_text.isdigit() or not project_id or not api_url:
        raise ConfigError(
            "GitLab merge-request pipeline variables incomplete: CI_MERGE_REQUEST_IID, CI_PROJECT_ID "
            "and CI_API_V4_URL must all be set (run in a merge-request pipeline)"
        )
    check_api_url_has_no_credentials(api_url, setting=gitlab.API_URL_SETTING.name)
    personal = clean_optional_token(args.token, source="--token") or clean_optional_token(
        env.get(env.GITLAB_TOKEN), source="GITLAB_TOKEN"
    )
    token = personal or clean_optional_token(env.get(env.CI_JOB_TOKEN), source="CI_JOB_TOKEN")
    return GitLabForge(
        api_url,
        project_id,
        int(iid_text),
        token=token,
        job_token=personal is None and token is not None,
        commit=commit,
        budget=TimeBudget(args.timeout),
    )
