"""The fork pull-request report, handed from the untrusted job to the trusted comment job.

What `cxml report --from-artifact DIR` (the report action's `from-artifact` input, used by
workflows-templates/cxml-pr-comment.yml) does with an artifact a pull request's code wrote: the
number must be a plain integer, the files regular UTF-8 files of bounded size, links are refused,
and the markdown is posted (to the contract-checked fake GitHub) under a header written from the
event, with mentions defanged and watermarks of its own removed. Bad artifacts are one `error:`
line, exit 2, nothing posted.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cxml.core.console import run_entry_point
from cxml.report.step import main
from tests.support.actions import PYTHON
from tests.support.github_server import FakeGitHub, github_server  # noqa: F401

FORK = "mallory/octo-repo"
HEAD_SHA = "c" * 40
REPORT = (
    "<!-- cxml-report: cxml-model -->\n"
    "## 📊 Model report: cxml-model\n\n"
    "### ✅ Gate passed\n\n| metric | value |\n|---|---|\n| accuracy | 0.97 |\n\n"
    "![Training curves](report-training.png)\n\ncc @octo-org/maintainers\n"
)


@pytest.fixture
def fake(github_server: FakeGitHub) -> FakeGitHub:  # noqa: F811
    return github_server


def workflow_run_event(
    fake: FakeGitHub, *, pull_requests: list[int] | None = None
) -> dict[str, Any]:
    """What GitHub sends the comment job: the fork's run (its pull_requests list is empty)."""
    return {
        "action": "completed",
        "repository": {"full_name": fake.repository},
        "workflow_run": {
            "id": 99,
            "event": "pull_request",
            "conclusion": "success",
            "head_sha": HEAD_SHA,
            "head_branch": "feature",
            "head_repository": {"full_name": FORK},
            "pull_requests": [{"number": n} for n in pull_requests or []],
        },
    }


def in_comment_job(
    monkeypatch: pytest.MonkeyPatch, fake: FakeGitHub, tmp_path: Path, event: dict[str, Any]
) -> Path:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event), encoding="utf-8")
    output = tmp_path / "github_output"
    output.write_text("", encoding="utf-8")
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "workflow_run",
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": fake.repository,
        "GITHUB_API_URL": fake.api_url,
        "GITHUB_SERVER_URL": fake.server_url,
        "GITHUB_TOKEN": fake.token,
        "GITHUB_SHA": "f" * 40,
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the comment job has no checkout
    return output


def artifact(tmp_path: Path, number: str = "7\n", markdown: str = REPORT) -> Path:
    folder = tmp_path / "cxml-pr-report"
    folder.mkdir(exist_ok=True)
    (folder / "pr-number").write_text(number, encoding="utf-8")
    (folder / "report.md").write_text(markdown, encoding="utf-8")
    return folder


def post(folder: Path) -> int:
    return run_entry_point(main, ["--from-artifact", str(folder)])


def test_the_fork_report_is_posted_on_its_pull_request_under_a_trusted_header(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = in_comment_job(monkeypatch, fake, tmp_path, workflow_run_event(fake))
    folder = artifact(tmp_path)
    assert post(folder) == 0
    (comment,) = fake.issue_comments(7)
    body = comment["body"]
    assert body.startswith(f"<!-- cxml-report: cxml-model from {FORK} -->\n> [!NOTE]\n")
    assert f"`{FORK}` at `{HEAD_SHA[:12]}`" in body
    assert body.count("<!-- cxml-report:") == 1, "the artifact's own watermark is removed"
    assert "| accuracy | 0.97 |" in body
    assert "report-training.png" not in body  # a file of the job, not a web image
    assert "@octo-org/maintainers" not in body and "@\u200docto-org/maintainers" in body
    assert "comment-url=" in output.read_text(encoding="utf-8")

    (folder / "report.md").write_text(REPORT.replace("0.97", "0.98"), encoding="utf-8")
    assert post(folder) == 0
    (updated,) = fake.issue_comments(7)
    assert updated["id"] == comment["id"] and "| accuracy | 0.98 |" in updated["body"]


def test_a_fork_cannot_take_over_the_comment_of_another_report(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lying about the number reaches only comments carrying this fork's own watermark."""
    in_comment_job(monkeypatch, fake, tmp_path, workflow_run_event(fake))
    assert post(artifact(tmp_path, number="1")) == 0
    other = workflow_run_event(fake)
    other["workflow_run"]["head_repository"]["full_name"] = "eve/octo-repo"
    in_comment_job(monkeypatch, fake, tmp_path, other)
    assert post(artifact(tmp_path, number="1")) == 0
    bodies = [c["body"] for c in fake.issue_comments(1)]
    assert len(bodies) == 2
    assert {b.splitlines()[0] for b in bodies} == {
        f"<!-- cxml-report: cxml-model from {FORK} -->",
        "<!-- cxml-report: cxml-model from eve/octo-repo -->",
    }


def test_a_number_the_event_contradicts_is_refused(
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_comment_job(monkeypatch, fake, tmp_path, workflow_run_event(fake, pull_requests=[7]))
    assert post(artifact(tmp_path, number="1")) == 2
    assert "belongs to #7; nothing posted" in capsys.readouterr().err
    assert fake.issue_comments(1) == [] and fake.issue_comments(7) == []


def make_link(folder: Path) -> None:
    (folder / "report.md").unlink()
    (folder / "report.md").symlink_to("/etc/passwd")


def make_fifo(folder: Path) -> None:
    (folder / "report.md").unlink()
    os.mkfifo(folder / "report.md")


BAD_ARTIFACTS = [
    ("number with a command", {"number": "7; rm -rf ~\n"}, "expected a pull-request number"),
    ("negative number", {"number": "-7"}, "expected a pull-request number"),
    ("zero", {"number": "0"}, "expected a pull-request number"),
    ("huge number", {"number": "9" * 5000}, "larger than 64 bytes"),
    ("json number", {"number": '{"number": 7}'}, "expected a pull-request number"),
    ("empty number", {"number": ""}, "expected a pull-request number"),
    ("not utf-8", {"markdown_bytes": b"\xff\xfe r\x00e\x00"}, "not UTF-8 text"),
    ("too big", {"markdown": "x" * (1024 * 1024 + 1)}, "larger than 1048576 bytes"),
    ("link to a runner file", {"change": make_link}, "not a regular file"),
    ("fifo", {"change": make_fifo}, "not a regular file"),
    ("missing report", {"remove": "report.md"}, "report.md: not in the artifact"),
    ("missing number", {"remove": "pr-number"}, "pr-number: not in the artifact"),
]


@pytest.mark.parametrize(
    ("case", "spec", "message"), BAD_ARTIFACTS, ids=[case[0] for case in BAD_ARTIFACTS]
)
def test_a_bad_artifact_is_one_clear_error_and_nothing_is_posted(
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    spec: dict[str, Any],
    message: str,
) -> None:
    in_comment_job(monkeypatch, fake, tmp_path, workflow_run_event(fake))
    folder = artifact(
        tmp_path, number=spec.get("number", "7\n"), markdown=spec.get("markdown", REPORT)
    )
    if "markdown_bytes" in spec:
        (folder / "report.md").write_bytes(spec["markdown_bytes"])
    if "change" in spec:
        spec["change"](folder)
    if "remove" in spec:
        (folder / spec["remove"]).unlink()
    assert post(folder) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert fake.issue_comments(7) == []


def test_the_action_entry_point_posts_from_the_artifact(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the report action runs it: `python -m cxml.action report` with its `env:`."""
    in_comment_job(monkeypatch, fake, tmp_path, workflow_run_event(fake))
    folder = artifact(tmp_path)
    env = {**os.environ, "CXML_REPORT_FROM_ARTIFACT": str(folder), "CXML_REPORT_TARGET": "auto"}
    result = subprocess.run(
        [PYTHON, "-m", "cxml.action", "report"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake.issue_comments(7)) == 1
