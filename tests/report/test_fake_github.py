"""The fake GitHub itself: it must refuse (and record) what the real API would refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import requests

from tests.support.github_server import (
    REPO_ROOT,
    FakeGitHub,
    SpecDownloadError,
    load_github_openapi,
    load_webhooks_schema,
    openapi_to_jsonschema,
    pull_request_event,
    push_event,
    validate_event,
)


@pytest.fixture
def github_spec() -> None:
    """Skip without the spec and without npm; a failed npm download errors the test instead."""
    if load_github_openapi() is None:
        pytest.skip("GitHub's OpenAPI description unavailable (no ../shared, no npm)")


@pytest.fixture
def fake(github_spec: None) -> Iterator[FakeGitHub]:
    """A fake whose violations the test inspects itself (the shared fixture would fail on them)."""
    server = FakeGitHub()
    server.start()
    yield server
    server.stop()


def send(fake: FakeGitHub, method: str, path: str, **kwargs: object) -> requests.Response:
    headers = {
        "Authorization": f"Bearer {fake.token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "cxml-tests",
    }
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return requests.request(method, fake.api_url + path, headers=headers, timeout=5, **kwargs)  # type: ignore[arg-type]


REPO = "/repos/octo-org/octo-repo"


def test_a_valid_comment_round_trip_has_no_violations(fake: FakeGitHub) -> None:
    created = send(fake, "POST", f"{REPO}/issues/7/comments", json={"body": "hi"})
    assert created.status_code == 201
    comment = created.json()
    assert comment["body"] == "hi" and comment["user"]["login"] == "github-actions[bot]"
    patched = send(fake, "PATCH", f"{REPO}/issues/comments/{comment['id']}", json={"body": "there"})
    assert patched.status_code == 200 and patched.json()["body"] == "there"
    listed = send(fake, "GET", f"{REPO}/issues/7/comments", params={"per_page": 100})
    assert [c["body"] for c in listed.json()] == ["there"]
    assert fake.violations == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected"),
    [
        (
            "POST",
            f"{REPO}/issues/7/comment",
            {"json": {"body": "x"}},
            "no operation in the REST description",
        ),
        ("PUT", f"{REPO}/issues/7/comments", {"json": {"body": "x"}}, "method not allowed"),
        (
            "POST",
            f"{REPO}/issues/7/comments",
            {"json": {"text": "x"}},
            "'body' is a required property",
        ),
        ("POST", f"{REPO}/issues/7/comments", {"json": {"body": 5}}, "5 is not of type 'string'"),
        ("POST", f"{REPO}/issues/7/comments", {"data": "body=x"}, "expected application/json"),
        ("POST", f"{REPO}/issues/7/comments", {}, "missing required JSON body"),
        (
            "GET",
            f"{REPO}/issues/7/comments",
            {"params": {"perpage": 100}},
            "unknown query parameter 'perpage'",
        ),
        ("GET", f"{REPO}/issues/7/comments", {"params": {"page": "two"}}, "page='two'"),
        ("GET", f"{REPO}/issues/seven/comments", {}, "issue_number='seven'"),
        (
            "PATCH",
            f"{REPO}/git/refs/heads/x",
            {"json": {"force": True}},
            "'sha' is a required property",
        ),
        (
            "POST",
            f"{REPO}/git/trees",
            {"json": {"tree": [{"path": "a", "mode": "644"}]}},
            "'644' is not one of",
        ),
        (
            "GET",
            f"{REPO}/issues/7/comments",
            {"headers": {"User-Agent": ""}},
            "no User-Agent header",
        ),
        (
            "GET",
            f"{REPO}/issues/7/comments",
            {"headers": {"X-GitHub-Api-Version": "2020-01-01"}},
            "not a supported",
        ),
    ],
)
def test_requests_the_real_api_rejects_are_violations(
    fake: FakeGitHub, method: str, path: str, kwargs: dict[str, object], expected: str
) -> None:
    response = send(fake, method, path, **kwargs)
    assert response.status_code in (404, 422)
    assert any(expected in v for v in fake.violations), fake.violations
    with pytest.raises(AssertionError, match="requests the real GitHub API would reject"):
        fake.assert_no_violations()


def test_a_valid_but_unmodelled_operation_is_a_violation_not_a_silent_pass(
    fake: FakeGitHub,
) -> None:
    response = send(fake, "GET", f"{REPO}/pulls/7")
    assert response.status_code == 501
    assert any("pulls/get" in v and "not implemented by the fake" in v for v in fake.violations)


def test_auth_and_permissions_behave_like_github(fake: FakeGitHub) -> None:
    fake.add_token("ghs_ro", "read")
    bad = send(fake, "GET", f"{REPO}/issues/7/comments", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"
    read_only = send(
        fake,
        "POST",
        f"{REPO}/issues/7/comments",
        json={"body": "x"},
        headers={"Authorization": "token ghs_ro"},
    )
    assert read_only.status_code == 403
    assert read_only.json()["message"] == "Resource not accessible by integration"
    assert send(fake, "GET", "/repos/other/repo/issues/7/comments").status_code == 404
    assert send(fake, "GET", f"{REPO}/issues/99/comments").status_code == 404
    assert fake.violations == []  # refused for auth, but well-formed requests


def test_pagination_follows_github_link_headers(fake: FakeGitHub) -> None:
    for i in range(5):
        send(fake, "POST", f"{REPO}/issues/7/comments", json={"body": str(i)})
    page = send(fake, "GET", f"{REPO}/issues/7/comments", params={"per_page": 2, "page": 2})
    assert [c["body"] for c in page.json()] == ["2", "3"]
    assert 'rel="next"' in page.headers["Link"] and "page=3" in page.headers["Link"]
    assert fake.violations == []


def test_refs_only_fast_forward_unless_forced(fake: FakeGitHub) -> None:
    blob = send(
        fake, "POST", f"{REPO}/git/blobs", json={"content": "aGk=", "encoding": "base64"}
    ).json()
    tree = send(
        fake,
        "POST",
        f"{REPO}/git/trees",
        json={"tree": [{"path": "a/b.txt", "mode": "100644", "type": "blob", "sha": blob["sha"]}]},
    ).json()
    first = send(
        fake,
        "POST",
        f"{REPO}/git/commits",
        json={"message": "1", "tree": tree["sha"], "parents": []},
    ).json()
    other = send(
        fake,
        "POST",
        f"{REPO}/git/commits",
        json={"message": "2", "tree": tree["sha"], "parents": []},
    ).json()
    assert (
        send(
            fake, "POST", f"{REPO}/git/refs", json={"ref": "refs/heads/assets", "sha": first["sha"]}
        ).status_code
        == 201
    )
    again = send(
        fake, "POST", f"{REPO}/git/refs", json={"ref": "refs/heads/assets", "sha": first["sha"]}
    )
    assert again.status_code == 422 and again.json()["message"] == "Reference already exists"
    not_ff = send(
        fake, "PATCH", f"{REPO}/git/refs/heads/assets", json={"sha": other["sha"], "force": False}
    )
    assert not_ff.status_code == 422
    forced = send(
        fake, "PATCH", f"{REPO}/git/refs/heads/assets", json={"sha": other["sha"], "force": True}
    )
    assert forced.status_code == 200 and forced.json()["object"]["sha"] == other["sha"]
    assert fake.branch_files("assets") == {"a/b.txt": b"hi"}
    assert send(fake, "GET", f"{REPO}/git/ref/heads/assets").json()["ref"] == "refs/heads/assets"
    assert fake.violations == []


def test_nullable_becomes_an_explicit_null_type() -> None:
    converted = openapi_to_jsonschema({"type": "string", "nullable": True, "enum": ["a"]})
    assert converted["type"] == ["string", "null"] and converted["enum"] == ["a", None]
    wrapped = openapi_to_jsonschema({"allOf": [{"$ref": "#/x"}], "nullable": True})
    assert wrapped == {"anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]}


# ---------------------------------------------------------------- event payloads


def test_event_payloads_are_real_webhook_payloads() -> None:
    if load_webhooks_schema() is None:
        pytest.skip("webhooks.schema.json unavailable (no ../shared, no npm)")
    pull = pull_request_event(12, head_sha="1" * 40, head_repository="fork-owner/octo-repo")
    assert (
        pull["pull_request"]["number"] == 12
        and pull["pull_request"]["head"]["repo"]["full_name"] == "fork-owner/octo-repo"
    )
    push = push_event(after="2" * 40)
    assert push["after"] == "2" * 40
    broken = json.loads(json.dumps(pull))
    del broken["pull_request"]["number"]
    with pytest.raises(jsonschema.ValidationError):
        validate_event(broken)


# ---------------------------------------------------------------- standalone use


@pytest.mark.usefixtures("github_spec")
def test_runs_standalone_and_prints_its_url(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.github_server", "--port", "0", "--pr", "3"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = requests.post(
            f"{url}{REPO}/issues/3/comments",
            json={"body": "from act"},
            headers={"Authorization": "Bearer ghs_fakeWriteToken0123456789", "User-Agent": "t"},
            timeout=5,
        )
        assert response.status_code == 201
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


@pytest.mark.slow
def test_without_the_shared_copy_the_spec_comes_from_npm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback CI uses when ../shared is absent: `npm pack @octokit/openapi` into a cache."""
    import shutil

    from tests.support import github_server

    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = github_server._npm_file(github_server.OPENAPI_PACKAGE, "generated/api.github.com.json")
    assert path is not None and path.is_relative_to(tmp_path)
    spec = json.loads(path.read_text())
    assert spec["info"]["version"] == "23.0.2"
    assert "/repos/{owner}/{repo}/issues/{issue_number}/comments" in spec["paths"]
    assert not list(tmp_path.glob("**/*.tgz"))


# ---------------------------------------------------------------- where the spec comes from

FAILING_NPM = """\
import sys
print("npm error code E404", file=sys.stderr)
print("npm error 404 Not Found - GET https://registry.npmjs.org/@octokit%2fopenapi", file=sys.stderr)
sys.exit(1)
"""

NPM_PACKING_THE_WRONG_FILES = """\
import io, json, sys, tarfile
from pathlib import Path
destination = Path(sys.argv[sys.argv.index("--pack-destination") + 1])
with tarfile.open(destination / "octokit-openapi-23.0.2.tgz", "w:gz") as archive:
    data = b"{}"
    info = tarfile.TarInfo("package/README.md")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
print(json.dumps([{"filename": "@octokit/openapi-23.0.2.tgz"}]))
"""


def put_npm_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str | None) -> None:
    """PATH with only a stand-in `npm` running `script` (no npm at all when `script` is None)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if script is not None:
        npm = bin_dir / "npm"
        npm.write_text(f"#!{sys.executable}\n{script}")
        npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def without_shared_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a CI runner without ../shared: the spec must come from npm."""
    from tests.support import github_server

    monkeypatch.delenv("CXML_GITHUB_OPENAPI", raising=False)
    monkeypatch.setattr(github_server, "_shared_file", lambda name: None)
    monkeypatch.setattr(github_server, "_CACHE", {})


@pytest.mark.usefixtures("without_shared_spec")
def test_without_npm_the_contract_tests_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_npm_on_path(monkeypatch, tmp_path, None)
    assert load_github_openapi() is None  # the `github_server` fixture skips on None


@pytest.mark.usefixtures("without_shared_spec")
def test_a_failed_npm_download_is_an_error_with_npms_output_not_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_npm_on_path(monkeypatch, tmp_path, FAILING_NPM)
    with pytest.raises(SpecDownloadError) as caught:
        load_github_openapi()
    message = str(caught.value)
    assert "exited 1" in message and "npm error 404 Not Found" in message
    with pytest.raises(SpecDownloadError):  # remembered: npm is not run again for every test
        load_github_openapi()


@pytest.mark.usefixtures("without_shared_spec")
def test_a_package_without_the_spec_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_npm_on_path(monkeypatch, tmp_path, NPM_PACKING_THE_WRONG_FILES)
    with pytest.raises(
        SpecDownloadError, match=r"has no readable package/generated/api\.github\.com"
    ):
        load_github_openapi()
    assert not list((tmp_path / "cache").glob("**/api.github.com.json"))
