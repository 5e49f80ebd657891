"""`cxml report --markdown FILE`: any markdown posted like cxml's report (CML's `comment create`).

Real files in a temporary working directory, posted to the contract-checked fake GitHub.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxml.core.console import run_entry_point
from cxml.report.step import main
from tests.support.github_server import FakeGitHub, github_server, pull_request_event  # noqa: F401
from tests.support.report import clean_env, in_actions, step_outputs  # noqa: F401

HEAD_SHA = "e" * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def fake(github_server: FakeGitHub) -> FakeGitHub:  # noqa: F811
    return github_server


@pytest.fixture
def workdir(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A working directory with `report.md` linking `plots/a.png` and an HTML `plots/b.png`."""
    root = tmp_path / "work"
    (root / "plots").mkdir(parents=True)
    (root / "plots" / "a.png").write_bytes(PNG)
    (root / "plots" / "b.png").write_bytes(PNG + b"b")
    (root / "report.md").write_text(
        "## My metrics\n\n| metric | value |\n|---|---|\n| acc | 0.91 |\n\n"
        "![confusion](plots/a.png)\n\n<img src='plots/b.png' alt='roc' width=300>\n\n"
        "![remote](https://example.com/x.png)\n",
        encoding="utf-8",
    )
    clean_env.chdir(root)
    return root


@pytest.fixture
def pr(
    workdir: Path, fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Path]:
    """A pull_request job for PR 7 against the fake GitHub; its output and summary files."""
    return in_actions(
        monkeypatch, fake, tmp_path, "pull_request", pull_request_event(7, head_sha=HEAD_SHA)
    )


def report(*args: str) -> int:
    return run_entry_point(main, list(args))


def test_the_file_is_posted_then_updated_in_place(
    pr: dict[str, Path], workdir: Path, fake: FakeGitHub
) -> None:
    assert report("--markdown", "report.md", "--publish-images=false") == 0
    (comment,) = fake.issue_comments(7)
    assert comment["body"].startswith("<!-- cxml-report: report.md -->\n")
    assert "| acc | 0.91 |" in comment["body"]
    (workdir / "report.md").write_text("## My metrics\n\nacc 0.95\n", encoding="utf-8")
    assert report("--markdown", "report.md") == 0
    (updated,) = fake.issue_comments(7)
    assert updated["id"] == comment["id"]
    assert "acc 0.95" in updated["body"] and "0.91" not in updated["body"]
    outputs = step_outputs(pr["output"])
    assert outputs["report-file"] == "report.md"
    assert outputs["comment-url"] == updated["html_url"]
    assert "acc 0.95" in pr["summary"].read_text()


def test_unpublished_local_images_become_notes_never_broken_links(
    pr: dict[str, Path], fake: FakeGitHub
) -> None:
    assert report("--markdown", "report.md", "--publish-images=false") == 0
    body = fake.issue_comments(7)[0]["body"]
    assert "plots/a.png)" not in body and "src='plots/b.png'" not in body
    assert "*(image `plots/a.png`: confusion)*" in body
    assert "*(image `plots/b.png`: roc)*" in body
    assert "![remote](https://example.com/x.png)" in body  # a web image is left alone
    assert "`publish-images: true`" in body and "contents: write" in body
    assert "--publish-images" not in body  # a workflow's note names the action input
    assert fake.branch_files("cxml-assets") == {}


def test_published_local_images_are_linked_from_the_assets_branch(
    pr: dict[str, Path], fake: FakeGitHub
) -> None:
    assert report("--markdown", "report.md", "--publish-images") == 0
    files = fake.branch_files("cxml-assets")
    assert files == {
        f"{HEAD_SHA}/report.md/plots/a.png": PNG,
        f"{HEAD_SHA}/report.md/plots/b.png": PNG + b"b",
    }
    head = fake.refs["refs/heads/cxml-assets"]
    base = f"{fake.server_url}/octo-org/octo-repo/blob/{head}/{HEAD_SHA}/report.md/plots"
    body = fake.issue_comments(7)[0]["body"]
    assert f"![confusion]({base}/a.png?raw=true)" in body
    assert f"<img src='{base}/b.png?raw=true' alt='roc' width=300>" in body
    assert "*(image" not in body


def test_each_name_is_its_own_comment(pr: dict[str, Path], fake: FakeGitHub) -> None:
    assert report("--markdown", "report.md", "--name", "model A") == 0
    assert report("--markdown", "report.md", "--name", "model B") == 0
    assert report("--markdown", "report.md", "--name", "model A") == 0
    marks = sorted(c["body"].splitlines()[0] for c in fake.issue_comments(7))
    assert marks == ["<!-- cxml-report: model A -->", "<!-- cxml-report: model B -->"]


def test_a_watermark_inside_the_file_cannot_take_over_another_comment(
    pr: dict[str, Path], workdir: Path, fake: FakeGitHub
) -> None:
    assert report("--markdown", "report.md", "--name", "other") == 0
    (workdir / "mine.md").write_text("<!-- cxml-report: other -->\nmine\n", encoding="utf-8")
    assert report("--markdown", "mine.md") == 0
    bodies = sorted(c["body"] for c in fake.issue_comments(7))
    assert len(bodies) == 2
    assert sum("<!-- cxml-report: other -->" in body for body in bodies) == 1


def test_a_long_file_is_trimmed_to_the_comment_limit_and_summarised_whole(
    pr: dict[str, Path], workdir: Path, fake: FakeGitHub
) -> None:
    rows = "".join(f"| row {i} | {i / 7:.6f} |\n" for i in range(8000))
    (workdir / "long.md").write_text("| a | b |\n|---|---|\n" + rows, encoding="utf-8")
    assert report("--markdown", "long.md") == 0
    body = fake.issue_comments(7)[0]["body"]
    assert len(body) <= 65_536
    assert "Cut at GitHub's size limit; the full report is in the job summary" in body
    assert "| row 7999 |" in pr["summary"].read_text()


def test_a_server_error_on_create_is_retried_without_a_duplicate(
    pr: dict[str, Path], fake: FakeGitHub
) -> None:
    fake.drop_after_next("POST", r"/issues/\d+/comments$")
    fake.fail_next("GET", r"/issues/\d+/comments$", status=502)
    assert report("--markdown", "report.md") == 0
    assert len(fake.issue_comments(7)) == 1


def test_dry_run_prints_the_comment_and_sends_nothing(
    pr: dict[str, Path], fake: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report("--markdown", "report.md", "--dry-run", "--output", "out/comment.md") == 0
    assert fake.requests == []
    printed = capsys.readouterr().out
    assert "<!-- cxml-report: report.md -->" in printed and "| acc | 0.91 |" in printed
    assert Path("out/comment.md").read_text().startswith("<!-- cxml-report: report.md -->")


def test_outside_ci_nothing_is_posted_and_the_note_names_the_flag(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report("--markdown", "report.md") == 0
    assert "nothing posted" in capsys.readouterr().out
    assert report("--markdown", "report.md", "--dry-run") == 0
    assert "pass --publish-images to show them here" in capsys.readouterr().out


# ---------------------------------------------------------------- bad input: one line, exit 2


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda root: None, "--markdown missing.md: file not found"),
        (lambda root: (root / "missing.md").mkdir(), "--markdown missing.md: is a folder"),
        (
            lambda root: (root / "missing.md").write_bytes("caf\xe9".encode("latin-1")),
            "--markdown missing.md: not UTF-8 text; save it as UTF-8",
        ),
    ],
    ids=["missing", "folder", "latin-1"],
)
def test_an_unusable_file_is_one_error_line(
    pr: dict[str, Path],
    workdir: Path,
    fake: FakeGitHub,
    capsys: pytest.CaptureFixture[str],
    setup: object,
    expected: str,
) -> None:
    setup(workdir)  # type: ignore[operator]
    assert report("--markdown", "missing.md") == 2
    assert expected in one_error_line(capsys)
    assert fake.requests == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_one_error_line(
    pr: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = workdir / "locked.md"
    locked.write_text("x", encoding="utf-8")
    locked.chmod(0)
    try:
        code = report("--markdown", "locked.md")
    finally:
        locked.chmod(0o600)
    assert code == 2
    assert "--markdown locked.md: cannot be read" in one_error_line(capsys)


@pytest.mark.parametrize(
    "link",
    ["../secret.png", "/etc/hostname", "plots/../../secret.png", "link.png"],
)
def test_an_image_outside_the_working_directory_is_refused(
    pr: dict[str, Path],
    workdir: Path,
    fake: FakeGitHub,
    capsys: pytest.CaptureFixture[str],
    link: str,
) -> None:
    (workdir.parent / "secret.png").write_bytes(PNG)
    (workdir / "link.png").symlink_to(workdir.parent / "secret.png")
    (workdir / "leak.md").write_text(f"![x]({link})\n", encoding="utf-8")
    assert report("--markdown", "leak.md", "--publish-images") == 2
    assert "is outside the working directory" in one_error_line(capsys)
    assert fake.requests == []


def test_a_missing_image_is_one_error_line_and_nothing_is_posted(
    pr: dict[str, Path], workdir: Path, fake: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "typo.md").write_text("![x](plots/c.png)\n", encoding="utf-8")
    assert report("--markdown", "typo.md") == 2
    assert "image 'plots/c.png' not found" in one_error_line(capsys)
    assert fake.requests == []


def test_markdown_and_from_artifact_together_are_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report("--markdown", "report.md", "--from-artifact", "x") == 2
    assert "--markdown and --from-artifact" in one_error_line(capsys)


def test_cml_target_forms_name_the_pull_request_or_commit(
    pr: dict[str, Path], fake: FakeGitHub
) -> None:
    assert report("--markdown", "report.md", "--target", "pr/1") == 0
    assert report("--markdown", "report.md", "--target", "issue/1") == 0
    assert len(fake.issue_comments(1)) == 1 and fake.issue_comments(7) == []
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert report("--markdown", "report.md", "--target", f"commit/{sha}") == 0
    assert len(fake.commit_comments(sha)) == 1


@pytest.mark.parametrize("target", ["issue/0", "commit/f00bar", "mr/3", "everywhere"])
def test_a_bad_target_is_one_error_line(
    pr: dict[str, Path], fake: FakeGitHub, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    assert report("--markdown", "report.md", "--target", target) == 2
    assert f"--target {target!r}: expected one of auto, pr, commit, none" in one_error_line(capsys)
    assert fake.requests == []
