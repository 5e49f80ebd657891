"""No secret is ever printed, written or posted: tokens are checked up front, URLs are redacted.

Planted secrets (a token, a tracking URI with user, password and `?token=`, an API URL and a
server URL with userinfo) go in through every door the report step has; every channel out of it
(stdout, stderr, the job summary, step outputs, every file in the work dir, the posted comment
and images) is searched for them. GitHub is the contract-checked fake; GitLab a loopback server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxml.report.forges.gitlab import GitLabClient
from tests.conftest import FAST_PARAMS, PYTHON, git, write_params
from tests.support.github_server import FakeGitHub, github_server, pull_request_event  # noqa: F401
from tests.support.report import (  # noqa: F401 - fixtures `ws` uses
    FakeGitLab,
    Workspace,
    actions_env,
    clean_env,
    in_gitlab_pipeline,
    in_pull_request,
    report,
    workspace,
)

RUN_ID = "4f1c2b9a0d8e47c6b1a2c3d4e5f60718"
TRACKING_USER = "trackUserQz"
TRACKING_PASSWORD = "TrackPassw0rdQz"
TRACKING_QUERY_TOKEN = "TrackQueryTok3nQz"
PLANTED_TRACKING_URI = (
    f"https://{TRACKING_USER}:{TRACKING_PASSWORD}@mlflow.example.com/mlflow"
    f"?token={TRACKING_QUERY_TOKEN}"
)
API_USER = "apiUserQz"
API_PASSWORD = "ApiPassw0rdQz"
SERVER_PASSWORD = "ServerPassw0rdQz"
PLANTED_GITLAB_TOKEN = "glpat-PlantedGitLabQz01"


@pytest.fixture
def fake(github_server: FakeGitHub) -> FakeGitHub:  # noqa: F811
    return github_server


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:  # noqa: F811
    return workspace


def pull_request_env(fake: FakeGitHub, folder: Path, *, token: str) -> dict[str, str]:
    """What GitHub Actions gives the report step of a pull_request job, pointed at the fake."""
    return actions_env(fake, folder, "pull_request", pull_request_event(7), token=token)


def forget_tracking_uri(root: Path) -> None:
    """run.json as train writes it without tracking: the footer falls back to the environment."""
    run = json.loads((root / "run.json").read_text())
    run["tracking_uri"] = None
    (root / "run.json").write_text(json.dumps(run))


def leaks(secrets: list[str], channels: dict[str, bytes]) -> list[str]:
    """`secret in channel` for every planted secret found anywhere."""
    return [
        f"{secret!r} in {channel}"
        for channel, content in channels.items()
        for secret in secrets
        if secret.encode() in content
    ]


def files_under(root: Path) -> dict[str, bytes]:
    """Every file written under `root` (the git database aside: it holds only committed files)."""
    return {
        str(path): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


# ---------------------------------------------------------------- tokens, checked up front


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_github_token_with_a_trailing_newline_posts_the_report(
    ws: Workspace,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ending: str,
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, token=fake.token + ending)
    assert report("--no-images") == 0
    assert len(fake.issue_comments(7)) == 1
    out = capsys.readouterr()
    assert fake.token not in out.out + out.err


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("ghp_Planted Secret0123", "whitespace at character 12 of 22"),
        ("ghp_Planted\tSecret0123", "whitespace at character 12"),
        ("ghp_Planted\nSecret0123", "a line break at character 12"),
        ("ghp_PlantedSecret0123\n\n", "a line break at character 22"),
        ("ghp_PlantedSecret0123\r", "a line break at character 22"),
        ("ghp_Planted\x01Secret0123", "a control character at character 12"),
        ("ghp_Planted\x7fSecret0123", "a control character at character 12"),
        ("ghp_PlantedSécret0123", "a non-ASCII character at character 13"),
        ("\n", "is empty apart from a line break"),
    ],
)
def test_a_malformed_github_token_is_one_error_line_that_does_not_echo_it(
    ws: Workspace,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    token: str,
    problem: str,
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, token=token)
    assert report("--no-images") == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: GITHUB_TOKEN ") and problem in out.err
    assert len(out.err.strip().splitlines()) == 1
    for piece in ("Planted", "Secret0123", "Sécret0123"):
        assert piece not in out.out + out.err
    assert fake.requests == []  # refused before anything was sent
    assert not (ws.root / "report.md").exists()  # and before anything was written


def test_a_malformed_token_option_is_named_as_the_option(
    ws: Workspace,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, token=fake.token)
    assert report("--no-images", "--token", "ghp_Planted Secret0123") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --token has whitespace") and "Planted" not in err
    assert fake.requests == []


@pytest.fixture
def gitlab(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitLab]:
    """A fake GitLab that knows only the planted token; merge request !5's pipeline variables."""
    users = {PLANTED_GITLAB_TOKEN: {"id": 5, "username": "project_bot"}}
    with FakeGitLab(users=users) as server:
        in_gitlab_pipeline(monkeypatch, server, token=None)
        yield server


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_gitlab_token_with_a_trailing_newline_posts_the_note(
    ws: Workspace,
    gitlab: FakeGitLab,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ending: str,
) -> None:
    monkeypatch.setenv("GITLAB_TOKEN", PLANTED_GITLAB_TOKEN + ending)
    assert report("--no-images") == 0
    assert len(gitlab.notes) == 1 and set(gitlab.tokens_seen) == {PLANTED_GITLAB_TOKEN}
    out = capsys.readouterr()
    assert PLANTED_GITLAB_TOKEN not in out.out + out.err


@pytest.mark.parametrize("variable", ["GITLAB_TOKEN", "CI_JOB_TOKEN"])
def test_a_malformed_gitlab_token_is_one_error_line_that_does_not_echo_it(
    ws: Workspace,
    gitlab: FakeGitLab,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
) -> None:
    monkeypatch.setenv(variable, "glpat-Planted\x1bGitLabQz01")
    assert report("--no-images") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {variable} has a control character at character 14")
    assert "Planted" not in err and "GitLabQz01" not in err
    assert gitlab.tokens_seen == []


def test_the_gitlab_client_cleans_its_token_too() -> None:
    client = GitLabClient("https://gitlab.example.com/api/v4", "42", token="glpat-abc\r\n")
    assert client.http._session.headers["PRIVATE-TOKEN"] == "glpat-abc"


# ---------------------------------------------------------------- URLs, redacted


@pytest.mark.parametrize(
    "api_url",
    [
        "http://{user}:{password}@127.0.0.1:{port}",
        "ftp://{user}:{password}@127.0.0.1:{port}",
        "http://127.0.0.1:{port}/?access_token={password}",
    ],
)
def test_an_api_url_with_credentials_is_refused_without_printing_them(
    ws: Workspace,
    fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    api_url: str,
) -> None:
    in_pull_request(monkeypatch, fake, tmp_path, token=fake.token)
    port = fake.api_url.rsplit(":", 1)[1]
    url = api_url.format(user=API_USER, password=API_PASSWORD, port=port)
    assert report("--no-images", "--api-url", url) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: GITHUB_API_URL / --api-url is '") and "127.0.0.1" in out.err
    assert "has credentials in it" in out.err
    assert API_USER not in out.out + out.err and API_PASSWORD not in out.out + out.err
    assert fake.requests == []


def test_a_gitlab_api_url_with_credentials_is_refused_without_printing_them(
    ws: Workspace,
    gitlab: FakeGitLab,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GITLAB_TOKEN", PLANTED_GITLAB_TOKEN)
    monkeypatch.setenv(
        "CI_API_V4_URL", gitlab.api_url.replace("//", f"//{API_USER}:{API_PASSWORD}@")
    )
    assert report("--no-images") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CI_API_V4_URL is 'http://127.0.0.1:") and API_PASSWORD not in err
    assert gitlab.tokens_seen == []


def test_the_footer_never_posts_tracking_credentials_from_the_environment(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forget_tracking_uri(ws.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", PLANTED_TRACKING_URI)
    monkeypatch.setenv("GITHUB_SERVER_URL", f"https://ci:{SERVER_PASSWORD}@github.example.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "octo-org/octo-repo")
    monkeypatch.setenv("GITHUB_RUN_ID", "77")
    assert report("--dry-run", "--no-images", "--target", "none") == 0
    footer = capsys.readouterr().out.strip().splitlines()[-1]
    assert "[workflow run](https://github.example.com/octo-org/octo-repo/actions/runs/77)" in footer
    assert f"(https://mlflow.example.com/mlflow/#/experiments/1/runs/{RUN_ID})" in footer
    report_md = (ws.root / "report.md").read_text()
    for secret in (TRACKING_USER, TRACKING_PASSWORD, TRACKING_QUERY_TOKEN, SERVER_PASSWORD):
        assert secret not in footer and secret not in report_md


def test_the_gitlab_pipeline_link_never_posts_credentials(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = f"https://ci:{SERVER_PASSWORD}@gitlab.example.com/g/p/-/pipelines/9?private_token=X"
    monkeypatch.setenv("CI_PIPELINE_URL", pipeline)
    assert report("--dry-run", "--no-images", "--target", "none") == 0
    footer = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(https://gitlab.example.com/g/p/-/pipelines/9?private_token=***)" in footer
    assert SERVER_PASSWORD not in footer


# ---------------------------------------------------------------- every channel, searched


def run_report(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "cxml.report", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_no_planted_secret_reaches_any_output_channel(
    ws: Workspace, fake: FakeGitHub, tmp_path: Path
) -> None:
    forget_tracking_uri(ws.root)
    env = pull_request_env(fake, tmp_path, token=fake.token + "\n")
    env["MLFLOW_TRACKING_URI"] = PLANTED_TRACKING_URI
    env["GITHUB_SERVER_URL"] = f"https://ci:{SERVER_PASSWORD}@github.example.com"
    port = fake.api_url.rsplit(":", 1)[1]
    runs = {
        "posting": (["--publish-images"], 0),
        "dry run": (["--dry-run", "--no-images"], 0),
        "api url with userinfo": (
            ["--no-images", "--api-url", f"http://{API_USER}:{API_PASSWORD}@127.0.0.1:{port}"],
            2,
        ),
        "api url with a token parameter": (
            ["--no-images", "--api-url", f"http://127.0.0.1:{port}/?token={API_PASSWORD}"],
            2,
        ),
    }
    channels: dict[str, bytes] = {}
    for name, (args, expected) in runs.items():
        result = run_report(args, env, ws.root)
        assert result.returncode == expected, (name, result.stderr)
        assert "Traceback" not in result.stderr, (name, result.stderr)
        channels[f"stdout of {name}"] = result.stdout.encode()
        channels[f"stderr of {name}"] = result.stderr.encode()

    comments = fake.issue_comments(7)
    assert len(comments) == 1 and f"/#/experiments/1/runs/{RUN_ID}" in comments[0]["body"]
    images = fake.branch_files("cxml-assets")
    assert images, "the posting run published its charts"
    channels["posted comments"] = json.dumps(comments).encode()
    channels.update({f"published {path}": data for path, data in images.items()})
    channels["requests sent to GitHub"] = json.dumps(
        [[r.method, r.path, r.query, r.body] for r in fake.requests]
    ).encode()
    channels.update(files_under(ws.root))  # report.md, PNGs, and anything else written there
    channels.update(files_under(tmp_path))  # GITHUB_STEP_SUMMARY, GITHUB_OUTPUT, the event
    assert (tmp_path / "step_summary").read_text() and (tmp_path / "github_output").read_text()

    secrets = [
        fake.token,
        TRACKING_USER,
        TRACKING_PASSWORD,
        TRACKING_QUERY_TOKEN,
        API_USER,
        API_PASSWORD,
        SERVER_PASSWORD,
    ]
    assert leaks(secrets, channels) == []


@pytest.mark.slow
def test_train_evaluate_and_report_print_no_planted_secret(
    fake: FakeGitHub, tmp_path: Path
) -> None:
    """The whole pipeline, tracking off, with the secrets a real job's environment holds."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    write_params(work, FAST_PARAMS)
    ci = tmp_path / "ci"
    ci.mkdir()
    env = pull_request_env(fake, ci, token=fake.token + "\n")
    env["MLFLOW_TRACKING_URI"] = PLANTED_TRACKING_URI
    env["GITHUB_SERVER_URL"] = f"https://ci:{SERVER_PASSWORD}@github.example.com"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    channels: dict[str, bytes] = {}
    # `cxml run` may end 1 (three epochs can fail the gate); the report is posted either way.
    for step, codes in ((["cxml.cli", "run"], (0, 1)), (["cxml.report", "--no-images"], (0,))):
        result = subprocess.run(
            [PYTHON, "-m", *step],
            cwd=work,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode in codes, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        channels[f"stdout of {step}"] = result.stdout.encode()
        channels[f"stderr of {step}"] = result.stderr.encode()
    assert len(fake.issue_comments(7)) == 1
    channels["posted comments"] = json.dumps(fake.issue_comments(7)).encode()
    channels.update(files_under(work))
    channels.update(files_under(ci))
    secrets = [fake.token, TRACKING_USER, TRACKING_PASSWORD, TRACKING_QUERY_TOKEN, SERVER_PASSWORD]
    assert leaks(secrets, channels) == []
