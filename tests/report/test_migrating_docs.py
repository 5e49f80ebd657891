"""docs/migrating-from-cml.md: every `cxml ...` line of its `sh` examples runs as documented.

The lines are taken from the doc itself, so a changed option breaks this test, not a reader's
workflow. Each runs through `cxml`'s own entry point in a pull-request job's environment,
against the contract-checked fake GitHub, and must create or update exactly one comment (or
send nothing, for `--dry-run` and `--target none`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cxml.cli import main as cxml_main
from cxml.core.console import run_entry_point
from tests.support.github_server import FakeGitHub, github_server, pull_request_event  # noqa: F401
from tests.support.report import clean_env, in_actions  # noqa: F401

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-cml.md"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
ENV_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")
HEAD_SHA = "e" * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def documented_commands() -> list[str]:
    """The `cxml` lines (with any `VAR=value` in front) of the doc's ```sh blocks."""
    lines = [
        line.strip()
        for block in SH_BLOCK.findall(DOC.read_text(encoding="utf-8"))
        for line in block.splitlines()
    ]
    return [line for line in lines if line and not line.startswith("#")]


def split_command(line: str, variables: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(`VAR=value` assignments, cxml's arguments); `$NAME` is expanded from `variables`."""
    words = shlex.split(line)
    assignments: dict[str, str] = {}
    while words and ENV_ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        assignments[name] = re.sub(r"\$(\w+)", lambda m: variables[m[1]], value)
    assert words[:1] == ["cxml"], f"not a cxml command: {line}"
    return assignments, words[1:]


def comment_writes(fake: FakeGitHub) -> int:
    return sum(
        1
        for r in fake.requests
        if r.method in ("POST", "PATCH") and re.search(r"/comments(/\d+)?$", r.path)
    )


def test_the_doc_has_the_examples_it_promises() -> None:
    commands = documented_commands()
    assert len(commands) >= 8
    joined = "\n".join(commands)
    for option in ("--name", "--pr", "--target commit", "--publish-images", "--dry-run", "--repo"):
        assert option in joined, option


@pytest.fixture
def pr_job(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,  # noqa: F811
    github_server: FakeGitHub,  # noqa: F811
) -> Path:
    root = tmp_path / "work"
    (root / "plots").mkdir(parents=True)
    (root / "plots" / "confusion.png").write_bytes(PNG)
    (root / "report.md").write_text(
        "## Metrics\n\n| metric | value |\n|---|---|\n| accuracy | 0.93 |\n\n"
        "![confusion](plots/confusion.png)\n",
        encoding="utf-8",
    )
    clean_env.chdir(root)
    event = pull_request_event(7, head_sha=HEAD_SHA)
    in_actions(clean_env, github_server, tmp_path, "pull_request", event)
    return root


def run_documented(line: str, fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> int:
    assignments, argv = split_command(line, {"TOKEN": fake.token})
    with monkeypatch.context() as scoped:
        for name, value in assignments.items():
            scoped.setenv(name, value)
        if "--repo" in argv:  # outside Actions: nothing but what the line gives
            for name in ("GITHUB_ACTIONS", "GITHUB_EVENT_PATH", "GITHUB_EVENT_NAME"):
                scoped.delenv(name, raising=False)
            scoped.setenv("GITHUB_API_URL", fake.api_url)
        return run_entry_point(cxml_main, argv)


@pytest.mark.parametrize("line", documented_commands())
def test_each_documented_example_posts_as_it_says(
    line: str,
    pr_job: Path,
    github_server: FakeGitHub,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = github_server
    for attempt in ("first", "again"):
        before, requests_before = comment_writes(fake), len(fake.requests)
        assert run_documented(line, fake, monkeypatch) == 0, f"{attempt}: {line}"
        if "--dry-run" in line or "--target none" in line:
            assert len(fake.requests) == requests_before, line
            continue
        assert comment_writes(fake) == before + 1, f"{attempt}: {line}"
        comments = list(fake.issue_comment_store.values()) + list(
            fake.commit_comment_store.values()
        )
        assert len(comments) == 1, f"{attempt} run of {line!r} left {len(comments)} comments"
        body = comments[0]["body"]
        assert "| accuracy | 0.93 |" in body
        assert "plots/confusion.png)" not in body  # published or a note, never a broken link
        name = "digits" if "--name digits" in line else "report.md"
        sha = re.search(r"--target commit(?:/([0-9a-f]{40}))?", line)
        if sha:  # on the named commit, else on the pull request's head
            assert comments[0]["commit_id"] == (sha[1] or HEAD_SHA)
        else:
            assert comments[0]["_issue"] == 7
        assert body.startswith(f"<!-- cxml-report: {name} -->")
