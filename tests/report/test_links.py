"""The report's link to the staging service's demo page, read from a real deploy.yaml."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cxml.core.console import run_entry_point
from cxml.report.links import demo_page_url, staging_demo_page, staging_page_url
from cxml.report.markdown import demo_page_line
from cxml.report.model import DemoPage
from cxml.report.step import main
from tests.support.github_server import FakeGitHub, github_server, pull_request_event  # noqa: F401
from tests.support.report import Workspace, clean_env, in_actions, workspace  # noqa: F401

DEPLOY_YAML = textwrap.dedent(
    """\
    service: digits
    serve:
      proxy: {upstream_file: /etc/nginx/up.conf}
    environments:
      staging:
        hosts: [staging-1]
        proxy: {public_url: "%s"}
      production:
        hosts: [prod-1]
    """
)
STAGING_URL = "http://staging.example.com:8080/api/"
LINE = f"▶ Try the staging model: [http\\://staging.example.com:8080/api/]({STAGING_URL})"


def report(*args: str) -> int:
    return run_entry_point(main, list(args))


def write_deploy_file(path: Path, public_url: str = STAGING_URL) -> Path:
    path.write_text(DEPLOY_YAML % public_url)
    return path


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:  # noqa: F811
    return workspace


def test_the_report_links_the_staging_page(tmp_path: Path) -> None:
    deploy_file = tmp_path / "deploy.yaml"
    assert staging_page_url(deploy_file) is None
    write_deploy_file(deploy_file)
    assert staging_page_url(deploy_file) == STAGING_URL
    assert staging_page_url(deploy_file, "production") is None
    assert staging_page_url(deploy_file, "nowhere") is None
    assert demo_page_url("https://u:secret@host.example/?token=abc") == "https://host.example/"


def test_a_broken_deploy_file_means_no_link_and_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_file = tmp_path / "deploy.yaml"
    deploy_file.write_text("service: [unclosed\n")
    assert staging_page_url(deploy_file) is None
    assert "links no demo page" in capsys.readouterr().err


def test_credentials_in_the_public_url_never_reach_the_link(tmp_path: Path) -> None:
    deploy_file = write_deploy_file(
        tmp_path / "deploy.yaml", "https://ci:Passw0rdQz@staging.example.com/?token=T0kenQz#x"
    )
    page = staging_demo_page(deploy_file)
    assert page == DemoPage("staging", "https://staging.example.com/")


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "ftp://staging.example.com/", "//staging.example.com/"]
)
def test_only_http_and_https_pages_are_linked(url: str) -> None:
    assert demo_page_line(DemoPage("staging", url)) == ""


def test_the_link_cannot_break_out_of_its_markdown() -> None:
    line = demo_page_line(DemoPage("sta[ging]", "https://host.example/a b)(<x>/"))
    assert line == (
        "▶ Try the sta\\[ging\\] model: "
        "[https\\://host.example/a b)(\\<x\\>/](https://host.example/a%20b%29%28%3Cx%3E/)"
    )


def test_the_line_sits_under_the_verdict(ws: Workspace) -> None:
    write_deploy_file(ws.root / "deploy.yaml")
    assert report("--dry-run", "--no-images", "--target", "none") == 0
    text = (ws.root / "report.md").read_text()
    rest = text.split("### ✅ Gate passed", 1)[1].split("\n\n", 2)[2]
    assert rest.startswith(LINE + "\n\n")


def test_no_deploy_file_means_no_line_and_no_warning(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report("--dry-run", "--no-images", "--target", "none") == 0
    out = capsys.readouterr()
    assert "Try the" not in out.out and "warning" not in out.err
    assert "Try the" not in (ws.root / "report.md").read_text()


def test_a_broken_deploy_file_warns_and_the_report_goes_out_without_the_line(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    (ws.root / "deploy.yaml").write_text("service: [unclosed\n")
    assert report("--dry-run", "--no-images", "--target", "none") == 0
    out = capsys.readouterr()
    assert "links no demo page" in out.err and "Try the" not in out.out


def test_a_missing_deploy_file_option_is_one_error_line(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report("--dry-run", "--deploy-file", "nowhere/deploy.yaml") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --deploy-file nowhere/deploy.yaml does not exist")
    assert len(err.strip().splitlines()) == 1
    assert not (ws.root / "report.md").exists()


def test_the_pull_request_comment_links_the_staging_page(
    ws: Workspace,
    github_server: FakeGitHub,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deploy_file = write_deploy_file(tmp_path / "elsewhere.yaml")
    in_actions(monkeypatch, github_server, tmp_path, "pull_request", pull_request_event(7))
    assert report("--no-images", "--deploy-file", str(deploy_file)) == 0
    (comment,) = github_server.issue_comments(7)
    assert LINE in comment["body"]
    assert LINE in (ws.root / "report.md").read_text()


def test_cxml_runs_report_md_links_it_too(ws: Workspace) -> None:
    from cxml.core.config import load_params
    from cxml.report.build import write_report

    write_deploy_file(ws.root / "deploy.yaml")
    path = write_report(load_params("params.yaml"), Path("params.yaml"), images=False)
    assert LINE in path.read_text()
