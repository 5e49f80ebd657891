"""A loopback fake of GitHub's REST API that checks every request against GitHub's own OpenAPI.

What it is for: tests (pytest, and `act` runs of the actions) that must talk to "GitHub" on a
machine with no GitHub. It keeps state in memory the way GitHub does, and it refuses, *and
records as a contract violation*, every request the real API would reject.

Contract: GitHub's published REST description (`api.github.com.json` from the npm package
`@octokit/openapi` 23.0.2), looked up by `load_github_openapi()` in `$CXML_GITHUB_OPENAPI`,
then `../shared/github-rest/` next to the repository, then a cache filled by `npm pack`. Without
npm the contract tests skip; with npm, a failed download raises SpecDownloadError (the tests
error with npm's output) rather than skip, since CI installs npm to run them.
Each request must match an operation (path template and method); its path and query
parameters must satisfy their schemas (unknown query parameters are refused too); its JSON
body must validate against the operation's requestBody schema (jsonschema); it must carry a
User-Agent, a known `X-GitHub-Api-Version` if any, and `Content-Type: application/json` with a
body. Every response the fake sends is validated against the operation's response schema.

Implemented operations (everything else in the spec answers 501 and is recorded as
"not implemented by the fake", so a test never passes by accident):

- the authenticated user: `GET /user` (a PAT's user; 403 for an installation token)
- the repository: `GET /repos/{owner}/{repo}` (with `permissions` for a PAT's user, without
  for an installation token, as GitHub answers)
- issue comments: list (paginated, `per_page`/`page`, Link header), create, get, update, delete
- commit comments: list, create, get, update, delete
- git data: get ref (`/git/ref/{ref}`), matching-refs, create ref, update ref (fast-forward
  check, `force`), delete ref, create/get blob, create/get tree (`base_tree`), create/get commit

Auth: `Authorization: Bearer <t>` or `token <t>`. Tokens are registered with a permission:
`"write"` (default, `FakeGitHub.token`), `"read"` (like the read-only token of fork PRs, which
gets 403 "Resource not accessible by integration" on writes) or `"comments"` (a GITHUB_TOKEN
with `pull-requests: write` but `contents: read`: it writes issue comments only). Unknown
tokens get 401.
A token is an installation token (like GITHUB_TOKEN: its comments are by `github-actions[bot]`,
type Bot, and `GET /user` answers 403 "Resource not accessible by integration", as GitHub does)
unless it is registered with a `login` (`add_token(t, login="octocat")`): then it is that user's
personal access token (comments by the user, type User; `GET /user` answers the user).

Python API::

    from tests.support.github_server import FakeGitHub, github_server  # fixture

    with FakeGitHub(repository="octo-org/octo-repo", pull_requests=[7]) as gh:
        gh.api_url          # http://127.0.0.1:PORT  (set GITHUB_API_URL to this)
        gh.token            # a write token; gh.add_token("ro", "read") for a read-only one
        gh.add_token("ghp_x", login="mallory")   # mallory's personal access token
        gh.issue_comments(7)            # comments on PR/issue 7 (list of dicts, API shape)
        gh.commit_comments(sha)
        gh.branch_files("cxml-assets")  # {path: bytes} at the branch head
        gh.fail_next("POST", r"/issues/\\d+/comments$", status=503, times=1, retry_after=1)
        gh.drop_after_next("POST", r"/comments$")   # apply the request, then cut the connection
        gh.cut_body_next("POST", r"/comments$")     # apply it, then send half the answer and cut
        gh.requests         # every RecordedRequest (authorization header redacted)
        gh.violations       # contract problems; `gh.assert_no_violations()` raises on any
    # leaving the block stops the server and raises AssertionError if there were violations

The pytest fixture `github_server` yields a started FakeGitHub (repository `octo-org/octo-repo`,
pull requests 1 and 7) and fails the test at teardown on any violation; it skips the test when
neither the shared spec nor npm is available, and errors when npm is there but its download fails.

Events: `pull_request_event(...)` and `push_event(...)` build webhook payloads that validate
against `webhooks.schema.json` (`@octokit/webhooks-schemas`); `validate_event(payload)` checks one.

Command line (for `act` tests; Ctrl-C or SIGTERM stops it)::

    python -m tests.support.github_server --port 8765 [--repo owner/name] [--token T] [--pr 1 --pr 7]

prints `http://127.0.0.1:8765` on one line once it is listening, and prints any contract
violation to stderr as it happens.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PACKAGE = "@octokit/openapi@23.0.2"
WEBHOOKS_PACKAGE = "@octokit/webhooks-schemas@7.6.1"
SPEC_URN = "urn:github-rest"
API_VERSIONS = ("2022-11-28", "2026-03-10")
DOCS = "https://docs.github.com/rest"


# --------------------------------------------------------------------------- finding the spec


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxml-tests"


def _shared_file(name: str) -> Path | None:
    for candidate in (
        REPO_ROOT.parent / "shared" / "github-rest" / name,
        REPO_ROOT / "shared" / "github-rest" / name,
    ):
        if candidate.is_file():
            return candidate
    return None


class SpecDownloadError(RuntimeError):
    """npm is installed but could not fetch or unpack a schema package.

    CI installs npm so that the contract tests run: this fails them, where a skip would hide them.
    """


def _npm_file(package: str, member: str) -> Path | None:
    """`npm pack` the package into the cache and extract one file from it.

    None only when npm is not installed (the tests that need the file skip); with npm installed,
    a failed download or extract raises SpecDownloadError carrying npm's output.
    """
    target = cache_dir() / package.replace("/", "__").replace("@", "") / Path(member).name
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    result = _npm_pack(npm, package, target.parent)
    tarball = _packed_tarball(result, target.parent, package)
    _extract_member(tarball, member, target, package)
    tarball.unlink(missing_ok=True)
    return target


def _npm_output(result: subprocess.CompletedProcess[str]) -> str:
    return f"stdout:\n{result.stdout.strip()}\nstderr:\n{result.stderr.strip()}"


def _npm_pack(npm: str, package: str, destination: Path) -> subprocess.CompletedProcess[str]:
    command = [npm, "pack", package, "--pack-destination", str(destination), "--json"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpecDownloadError(f"`{' '.join(command)}` did not run: {exc}") from exc
    if result.returncode != 0:
        raise SpecDownloadError(
            f"`{' '.join(command)}` exited {result.returncode}; check the network or the npm "
            f"registry settings (or provide ../shared/github-rest)\n{_npm_output(result)}"
        )
    return result


def _packed_tarball(
    result: subprocess.CompletedProcess[str], destination: Path, package: str
) -> Path:
    """The .tgz `npm pack --json` reports (npm names scoped packages `scope-name-1.0.0.tgz`)."""
    try:
        name = json.loads(result.stdout)[0]["filename"].replace("/", "-").lstrip("@")
    except (json.JSONDecodeError, LookupError, TypeError, AttributeError):
        name = ""
    tarball = destination / name if name else None
    if tarball is None or not tarball.is_file():
        tarball = next(iter(sorted(destination.glob("*.tgz"))), None)
    if tarball is None:
        raise SpecDownloadError(
            f"`npm pack {package}` left no .tgz in {destination}\n{_npm_output(result)}"
        )
    return tarball


def _extract_member(tarball: Path, member: str, target: Path, package: str) -> None:
    try:
        with tarfile.open(tarball) as archive:
            source = archive.extractfile(f"package/{member}")
            if source is None:
                raise KeyError(member)
            data = source.read()
    except (tarfile.TarError, OSError, KeyError) as exc:
        raise SpecDownloadError(
            f"{tarball.name} (npm package {package}) has no readable package/{member}: {exc!r}"
        ) from exc
    partial = target.with_suffix(target.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(target)  # a cache hit is always a whole file


def github_openapi_path() -> Path | None:
    explicit = os.environ.get("CXML_GITHUB_OPENAPI")
    if explicit and Path(explicit).is_file():
        return Path(explicit)
    return _shared_file("api.github.com.json") or _npm_file(
        OPENAPI_PACKAGE, "generated/api.github.com.json"
    )


def webhooks_schema_path() -> Path | None:
    explicit = os.environ.get("CXML_GITHUB_WEBHOOKS_SCHEMA")
    if explicit and Path(explicit).is_file():
        return Path(explicit)
    return _shared_file("webhooks.schema.json") or _npm_file(WEBHOOKS_PACKAGE, "schema.json")


_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()


def _load_json_once(key: str, find: Callable[[], Path | None]) -> dict[str, Any] | None:
    """Parse the file `find` locates, once per process; a failed npm download is remembered too."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            try:
                path = find()
            except SpecDownloadError as error:
                _CACHE[key] = error
            else:
                _CACHE[key] = json.loads(path.read_text(encoding="utf-8")) if path else None
        found = _CACHE[key]
    if isinstance(found, SpecDownloadError):
        raise SpecDownloadError(str(found))
    return found  # type: ignore[no-any-return]


def load_github_openapi() -> dict[str, Any] | None:
    """GitHub's REST OpenAPI description (shared copy, else npm); None when npm is not installed."""
    return _load_json_once("openapi", github_openapi_path)


def load_webhooks_schema() -> dict[str, Any] | None:
    return _load_json_once("webhooks", webhooks_schema_path)


# --------------------------------------------------------------------------- the contract


def openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 schemas -> JSON Schema: `nullable: true` becomes an explicit null type."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_jsonschema(value) for key, value in node.items()}
    if out.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        elif kind is None:
            out = {"anyOf": [{k: v for k, v in out.items() if k != "nullable"}, {"type": "null"}]}
    return out


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    operation_id: str
    spec: dict[str, Any]
    regex: re.Pattern[str]
    param_names: tuple[str, ...]


class Contract:
    """Matching and validation of requests/responses against the OpenAPI description."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import jsonschema
        import referencing
        from referencing.jsonschema import DRAFT4

        self.spec = openapi_to_jsonschema(spec)
        self._registry: Any = referencing.Registry().with_resource(
            SPEC_URN, DRAFT4.create_resource(self.spec)
        )
        self._validator_cls: Any = jsonschema.Draft4Validator
        self._format_checker = jsonschema.FormatChecker()
        self._validators: dict[str, Any] = {}
        self.operations = self._index(self.spec["paths"])

    @staticmethod
    def _index(paths: Mapping[str, Any]) -> list[Operation]:
        operations = []
        for template, item in paths.items():
            names = tuple(re.findall(r"{([^}]+)}", template))
            pattern = re.escape(template)
            for name in names:
                # `ref` and `path` may hold slashes (heads/main, docs/a.png), like on GitHub.
                segment = (
                    "(.+)"
                    if name in ("ref", "path") and template.endswith(f"{{{name}}}")
                    else "([^/]+)"
                )
                pattern = pattern.replace(re.escape(f"{{{name}}}"), segment)
            regex = re.compile(f"^{pattern}$")
            for method, spec in item.items():
                if method in ("get", "post", "put", "patch", "delete", "head"):
                    operations.append(
                        Operation(
                            method.upper(),
                            template,
                            spec.get("operationId", ""),
                            spec,
                            regex,
                            names,
                        )
                    )
        # Literal segments beat parameters (/git/refs vs /git/{x}): more literal text first.
        operations.sort(key=lambda op: (-len(re.sub(r"{[^}]+}", "", op.template)), op.template))
        return operations

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, path params, path known with another method)."""
        path_known = False
        for operation in self.operations:
            found = operation.regex.match(path)
            if not found:
                continue
            if operation.method == method:
                return (
                    operation,
                    dict(
                        zip(
                            operation.param_names, (unquote(g) for g in found.groups()), strict=True
                        )
                    ),
                    True,
                )
            path_known = True
        return None, {}, path_known

    def validator(self, pointer: str) -> Any:
        if pointer not in self._validators:
            schema = {"$ref": f"{SPEC_URN}#/{pointer}"}
            self._validators[pointer] = self._validator_cls(
                schema, registry=self._registry, format_checker=self._format_checker
            )
        return self._validators[pointer]

    def resolve(self, node: Mapping[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return dict(node)

    def parameters(self, operation: Operation) -> list[dict[str, Any]]:
        return [self.resolve(p) for p in operation.spec.get("parameters", [])]

    def errors(self, pointer: str, instance: Any, limit: int = 3) -> list[str]:
        found = sorted(
            self.validator(pointer).iter_errors(instance), key=lambda e: list(e.absolute_path)
        )
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:200]}"
            for e in found[:limit]
        ]

    def check_request(
        self,
        operation: Operation,
        path_params: Mapping[str, str],
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> list[str]:
        problems: list[str] = []
        params = self.parameters(operation)
        op_pointer = _pointer("paths", operation.template, operation.method.lower())
        for index, param in enumerate(operation.spec.get("parameters", [])):
            resolved = params[index]
            where, name = resolved["in"], resolved["name"]
            if where == "path":
                raw: list[str] | None = [path_params[name]] if name in path_params else None
            elif where == "query":
                raw = query.get(name)
            else:
                continue
            if raw is None:
                if resolved.get("required"):
                    problems.append(f"missing required {where} parameter {name!r}")
                continue
            value = coerce_param(raw[-1], resolved.get("schema", {}), self)
            pointer = (
                param["$ref"].removeprefix("#/") + "/schema"
                if "$ref" in param
                else f"{op_pointer}/parameters/{index}/schema"
            )
            problems += [
                f"{where} parameter {name}={raw[-1]!r}: {e}" for e in self.errors(pointer, value)
            ]
        known_query = {p["name"] for p in params if p["in"] == "query"}
        problems += [
            f"unknown query parameter {name!r}" for name in query if name not in known_query
        ]
        problems += self._check_body(operation, op_pointer, headers, body)
        return problems

    def _check_body(
        self, operation: Operation, op_pointer: str, headers: Mapping[str, str], body: bytes
    ) -> list[str]:
        request_body = operation.spec.get("requestBody")
        if request_body is None:
            return ["this operation takes no request body"] if body.strip() else []
        request_body = self.resolve(request_body)
        if not body.strip():
            return ["missing required JSON body"] if request_body.get("required") else []
        content_type = headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            return [f"body sent as {content_type or 'no Content-Type'}, expected application/json"]
        try:
            instance = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return [f"body is not valid JSON: {exc}"]
        pointer = f"{op_pointer}/requestBody/content/application~1json/schema"
        if "$ref" in operation.spec["requestBody"]:
            pointer = (
                operation.spec["requestBody"]["$ref"].removeprefix("#/")
                + "/content/application~1json/schema"
            )
        return [f"body {e}" for e in self.errors(pointer, instance)]

    def check_response(self, operation: Operation, status: int, body: Any) -> list[str]:
        responses = operation.spec.get("responses", {})
        if str(status) not in responses:
            return [] if status >= 400 else [f"status {status} is not a documented response"]
        response = self.resolve(responses[str(status)])
        if "application/json" not in response.get("content", {}):
            return []
        op_pointer = _pointer(
            "paths", operation.template, operation.method.lower(), "responses", str(status)
        )
        if "$ref" in responses[str(status)]:
            op_pointer = responses[str(status)]["$ref"].removeprefix("#/")
        return [
            f"response {e}"
            for e in self.errors(f"{op_pointer}/content/application~1json/schema", body)
        ]


def coerce_param(raw: str, schema: Mapping[str, Any], contract: Contract) -> Any:
    """Query/path strings -> the schema's type, the way GitHub parses them (invalid stays a string)."""
    schema = contract.resolve(schema)
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if "number" in kinds:
        try:
            return float(raw)
        except ValueError:
            return raw
    if "boolean" in kinds and raw in ("true", "false"):
        return raw == "true"
    if "array" in kinds:
        return raw.split(",")
    return raw


# --------------------------------------------------------------------------- webhook payloads


def instance_from_schema(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    """A minimal instance with every required property, for building valid event payloads."""
    if depth > 40:
        return None
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return instance_from_schema(target, root, depth + 1)
    if "allOf" in schema:
        merged: Any = None
        for part in schema["allOf"]:
            merged = deep_merge(merged, instance_from_schema(part, root, depth + 1))
        return merged
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return instance_from_schema(options[0], root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return next((v for v in schema["enum"] if v is not None), schema["enum"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties", {})
        return {
            name: instance_from_schema(props.get(name, {}), root, depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        item = schema.get("items", {})
        return [
            instance_from_schema(item, root, depth + 1) for _ in range(schema.get("minItems", 0))
        ]
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2026-11-25T11:00:00Z"
        if fmt in ("uri", "uri-template", "url"):
            return "https://github.com/octo-org/octo-repo"
        if fmt == "email":
            return "octocat@example.com"
        return "x"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


def deep_merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = deep_merge(merged.get(key), value) if key in merged else value
        return merged
    return copy.deepcopy(extra)


def _event(definition: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    schema = load_webhooks_schema()
    if schema is None:
        raise RuntimeError("webhooks.schema.json is not available (no ../shared and no npm)")
    payload = instance_from_schema(schema["definitions"][definition], schema)
    payload = deep_merge(payload, overrides)
    validate_event(payload)
    return payload  # type: ignore[no-any-return]


def validate_event(payload: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `payload` is a real webhook event payload."""
    import jsonschema

    schema = load_webhooks_schema()
    if schema is None:
        raise RuntimeError("webhooks.schema.json is not available (no ../shared and no npm)")
    jsonschema.Draft7Validator(schema).validate(payload)


def _repository_fields(repository: str) -> dict[str, Any]:
    owner, name = repository.split("/")
    return {
        "name": name,
        "full_name": repository,
        "html_url": f"https://github.com/{repository}",
        "url": f"https://api.github.com/repos/{repository}",
        "owner": {"login": owner, "type": "Organization"},
        "default_branch": "main",
    }


def pull_request_event(
    number: int = 7,
    *,
    repository: str = "octo-org/octo-repo",
    head_sha: str = "a" * 40,
    base_sha: str = "b" * 40,
    head_ref: str = "feature",
    base_ref: str = "main",
    head_repository: str | None = None,
    action: str = "opened",
) -> dict[str, Any]:
    """A `pull_request` payload as GitHub sends it (validated); `head_repository` makes a fork PR."""
    head_repo = head_repository or repository
    html = f"https://github.com/{repository}/pull/{number}"
    return _event(
        f"pull_request${action}",
        {
            "action": action,
            "number": number,
            "repository": _repository_fields(repository),
            "sender": {"login": "octocat", "type": "User"},
            "pull_request": {
                "number": number,
                "html_url": html,
                "url": f"https://api.github.com/repos/{repository}/pulls/{number}",
                "title": "Try a larger learning rate",
                "head": {
                    "ref": head_ref,
                    "sha": head_sha,
                    "label": f"{head_repo.split('/')[0]}:{head_ref}",
                    "repo": _repository_fields(head_repo),
                },
                "base": {
                    "ref": base_ref,
                    "sha": base_sha,
                    "label": f"{repository.split('/')[0]}:{base_ref}",
                    "repo": _repository_fields(repository),
                },
            },
        },
    )


def push_event(
    *,
    repository: str = "octo-org/octo-repo",
    after: str = "c" * 40,
    before: str = "d" * 40,
    ref: str = "refs/heads/main",
) -> dict[str, Any]:
    """A `push` payload as GitHub sends it (validated)."""
    return _event(
        "push$event",
        {
            "ref": ref,
            "before": before,
            "after": after,
            "repository": _repository_fields(repository),
            "sender": {"login": "octocat", "type": "User"},
            "head_commit": None,
            "commits": [],
        },
    )


# --------------------------------------------------------------------------- the fake server


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0
    operation_id: str = ""


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    times: int
    status: int | None = None
    """Answer with this status instead of handling the request (state unchanged)."""
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: bool = False
    """Handle the request (state changes), then close the connection without an answer."""
    cut_body: bool = False
    """Handle the request (state changes), send the status, headers and half the body, then close."""
    message: str = "Server Error"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_sha(kind: str, data: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()


def user(login: str, user_id: int, server: str, api: str, kind: str = "Bot") -> dict[str, Any]:
    return {
        "login": login,
        "id": user_id,
        "node_id": f"MDQ6VXNlcj{user_id}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": f"{api}/users/{login}",
        "html_url": f"{server}/{login}",
        "followers_url": f"{api}/users/{login}/followers",
        "following_url": f"{api}/users/{login}/following{{/other_user}}",
        "gists_url": f"{api}/users/{login}/gists{{/gist_id}}",
        "starred_url": f"{api}/users/{login}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/users/{login}/subscriptions",
        "organizations_url": f"{api}/users/{login}/orgs",
        "repos_url": f"{api}/users/{login}/repos",
        "events_url": f"{api}/users/{login}/events{{/privacy}}",
        "received_events_url": f"{api}/users/{login}/received_events",
        "type": kind,
        "site_admin": False,
        "user_view_type": "public",
    }


class FakeGitHub:
    """In-memory GitHub (one repository) behind a loopback HTTP server; see the module docstring."""

    def __init__(
        self,
        *,
        repository: str = "octo-org/octo-repo",
        pull_requests: tuple[int, ...] | list[int] = (1, 7),
        token: str = "ghs_fakeWriteToken0123456789",
        host: str = "127.0.0.1",
        port: int = 0,
        spec: Mapping[str, Any] | None = None,
    ) -> None:
        spec = spec if spec is not None else load_github_openapi()
        if spec is None:
            raise RuntimeError(
                "GitHub's OpenAPI description is not available (no ../shared and no npm)"
            )
        self.contract = _contract_for(spec)
        self.repository = repository
        self.token = token
        self.tokens: dict[str, str] = {token: "write"}
        self.token_logins: dict[str, str | None] = {token: None}
        """The user of each personal access token; None: an installation token (the bot)."""
        self._caller: str | None = None
        self._caller_token = ""
        self.pull_requests = set(pull_requests)
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1_000_001)
        self.issue_comment_store: dict[int, dict[str, Any]] = {}
        self.commit_comment_store: dict[int, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.trees: dict[str, list[dict[str, Any]]] = {}
        self.commits: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, str] = {}
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------- lifecycle
    @property
    def api_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    url = api_url

    @property
    def server_url(self) -> str:
        """What GITHUB_SERVER_URL would be (html links point here)."""
        return "https://github.example.com"

    def start(self) -> FakeGitHub:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-github",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits forever on a server never started
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.stop()
        if exc_type is None:
            self.assert_no_violations()

    def assert_no_violations(self) -> None:
        if self.violations:
            raise AssertionError(
                "requests the real GitHub API would reject:\n" + "\n".join(self.violations)
            )

    # ---------------------------------------------------------- test controls
    def add_token(self, token: str, permission: str = "write", *, login: str | None = None) -> str:
        """Register a token: an installation token, or with `login` that user's PAT."""
        self.tokens[token] = permission
        self.token_logins[token] = login
        return token

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 503,
        times: int = 1,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "Server Error",
    ) -> None:
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        with self._lock:
            self._faults.append(
                Fault(method, re.compile(path_pattern), times, status, extra, message=message)
            )

    def drop_after_next(self, method: str, path_pattern: str, *, times: int = 1) -> None:
        with self._lock:
            self._faults.append(Fault(method, re.compile(path_pattern), times, drop_after=True))

    def cut_body_next(self, method: str, path_pattern: str, *, times: int = 1) -> None:
        with self._lock:
            self._faults.append(Fault(method, re.compile(path_pattern), times, cut_body=True))

    def issue_comments(self, number: int) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(c) for c in self.issue_comment_store.values() if c["_issue"] == number
            ]

    def commit_comments(self, sha: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(c)
                for c in self.commit_comment_store.values()
                if c["commit_id"] == sha
            ]

    def branch_files(self, branch: str) -> dict[str, bytes]:
        with self._lock:
            head = self.refs.get(f"refs/heads/{branch}")
            if head is None:
                return {}
            return {
                path: self.blobs[sha]
                for path, sha in self._flatten_tree(self.commits[head]["tree"]["sha"]).items()
            }

    # ---------------------------------------------------------- request handling
    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.pattern.search(path) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def violation(self, message: str) -> None:
        with self._lock:
            self.violations.append(message)
        print(f"fake-github: contract violation: {message}", file=sys.stderr, flush=True)

    def handle(
        self, record: RecordedRequest, raw_body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        method, path = record.method, record.path
        operation, path_params, path_known = self.contract.match(method, path)
        if operation is None:
            problem = (
                "method not allowed for this path"
                if path_known
                else "no operation in the REST description matches"
            )
            self.violation(f"{method} {path}: {problem}")
            return 404, error_body("Not Found"), {}
        record.operation_id = operation.operation_id
        problems = self.check_headers(headers) + self.contract.check_request(
            operation, path_params, record.query, headers, raw_body
        )
        if problems:
            for problem in problems:
                self.violation(f"{method} {path} ({operation.operation_id}): {problem}")
            return 422, error_body("Invalid request.\n\n" + "\n".join(problems)), {}
        token = bearer_token(headers.get("authorization", "")) or ""
        permission = self.tokens.get(token)
        if permission is None:
            return 401, error_body("Bad credentials"), {}
        owner_repo = f"{path_params.get('owner')}/{path_params.get('repo')}"
        if "owner" in path_params and owner_repo != self.repository:
            return 404, error_body("Not Found"), {}
        if method != "GET" and not can_write(permission, operation.operation_id):
            return 403, error_body("Resource not accessible by integration"), {}
        body = json.loads(raw_body) if raw_body.strip() else None
        try:
            with self._lock:
                self._caller = self.token_logins.get(token)
                self._caller_token = token
                status, payload, extra = self.dispatch(
                    operation.operation_id, path_params, record.query, body
                )
        except ApiError as error:
            return error.status, error_body(error.message), error.headers
        for problem in self.contract.check_response(operation, status, payload):
            self.violation(f"fake answered {operation.operation_id} with a bad shape: {problem}")
        return status, payload, extra

    @staticmethod
    def check_headers(headers: Mapping[str, str]) -> list[str]:
        problems = []
        if not headers.get("user-agent"):
            problems.append("no User-Agent header (GitHub answers 403 to requests without one)")
        version = headers.get("x-github-api-version")
        if version is not None and version not in API_VERSIONS:
            problems.append(
                f"X-GitHub-Api-Version {version!r} is not a supported version {API_VERSIONS}"
            )
        accept = headers.get("accept", "*/*")
        if not any(
            kind in accept for kind in ("application/vnd.github", "application/json", "*/*")
        ):
            problems.append(f"Accept {accept!r} is not a media type GitHub serves")
        return problems

    def dispatch(
        self,
        operation_id: str,
        params: Mapping[str, str],
        query: Mapping[str, list[str]],
        body: Any,
    ) -> tuple[int, Any, dict[str, str]]:
        handlers = {
            "users/get-authenticated": self.op_get_authenticated_user,
            "repos/get": self.op_get_repository,
            "issues/list-comments": self.op_list_issue_comments,
            "issues/create-comment": self.op_create_issue_comment,
            "issues/get-comment": self.op_get_issue_comment,
            "issues/update-comment": self.op_update_issue_comment,
            "issues/delete-comment": self.op_delete_issue_comment,
            "repos/list-comments-for-commit": self.op_list_commit_comments,
            "repos/create-commit-comment": self.op_create_commit_comment,
            "repos/get-commit-comment": self.op_get_commit_comment,
            "repos/update-commit-comment": self.op_update_commit_comment,
            "repos/delete-commit-comment": self.op_delete_commit_comment,
            "git/get-ref": self.op_get_ref,
            "git/list-matching-refs": self.op_matching_refs,
            "git/create-ref": self.op_create_ref,
            "git/update-ref": self.op_update_ref,
            "git/delete-ref": self.op_delete_ref,
            "git/create-blob": self.op_create_blob,
            "git/get-blob": self.op_get_blob,
            "git/create-tree": self.op_create_tree,
            "git/get-tree": self.op_get_tree,
            "git/create-commit": self.op_create_commit,
            "git/get-commit": self.op_get_commit,
        }
        handler = handlers.get(operation_id)
        if handler is None:
            self.violation(
                f"{operation_id}: valid request, but not implemented by the fake (add it)"
            )
            raise ApiError(501, "Not implemented by the fake GitHub")
        return handler(params, query, body)

    # ---------------------------------------------------------- comments
    def _repo_api(self) -> str:
        return f"{self.api_url}/repos/{self.repository}"

    def _author(self) -> dict[str, Any]:
        """Who the request's token acts as: github-actions[bot], or a PAT's user."""
        if self._caller is None:
            return user("github-actions[bot]", 41898282, self.server_url, self.api_url)
        user_id = 5_000_000 + int(hashlib.sha1(self._caller.encode()).hexdigest()[:6], 16)
        return user(self._caller, user_id, self.server_url, self.api_url, kind="User")

    def op_get_authenticated_user(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if self._caller is None:  # GitHub's answer to GITHUB_TOKEN and other installation tokens
            raise ApiError(403, "Resource not accessible by integration")
        profile = {
            **self._author(),
            "name": None,
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "public_repos": 1,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": "2020-01-01T00:00:00Z",
            "updated_at": now_iso(),
        }
        return 200, profile, {}

    def op_get_repository(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        schema = self.contract.spec["components"]["schemas"]["full-repository"]
        repository = deep_merge(
            instance_from_schema(schema, self.contract.spec), _repository_fields(self.repository)
        )
        repository["owner"] = user(
            self.repository.split("/")[0], 9_000_001, self.server_url, self.api_url, "Organization"
        )
        repository.pop("permissions", None)
        if self._caller is not None:  # GitHub tells a user their rights, not an installation
            write = self.tokens.get(self._caller_token, "read") == "write"
            repository["permissions"] = {
                "admin": False,
                "maintain": False,
                "push": write,
                "triage": write,
                "pull": True,
            }
        return 200, repository, {}

    def op_list_issue_comments(
        self, params: Mapping[str, str], query: Mapping[str, list[str]], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        number = int(params["issue_number"])
        self._require_issue(number)
        items = sorted(
            (c for c in self.issue_comment_store.values() if c["_issue"] == number),
            key=lambda c: c["id"],
        )
        return self._page(items, query, f"{self._repo_api()}/issues/{number}/comments")

    def _page(
        self, items: list[dict[str, Any]], query: Mapping[str, list[str]], base: str
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(100, int(query.get("per_page", ["30"])[-1]))
        page = max(1, int(query.get("page", ["1"])[-1]))
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, [public(c) for c in chunk], headers

    def _require_issue(self, number: int) -> None:
        if number not in self.pull_requests:
            raise ApiError(404, "Not Found")

    def _issue_comment(self, number: int, text: str) -> dict[str, Any]:
        comment_id = next(self._ids)
        stamp = now_iso()
        return {
            "_issue": number,
            "id": comment_id,
            "node_id": f"IC_kwDO{comment_id}",
            "url": f"{self._repo_api()}/issues/comments/{comment_id}",
            "html_url": f"{self.server_url}/{self.repository}/pull/{number}#issuecomment-{comment_id}",
            "issue_url": f"{self._repo_api()}/issues/{number}",
            "body": text,
            "user": self._author(),
            "created_at": stamp,
            "updated_at": stamp,
            "author_association": "NONE",
        }

    def op_create_issue_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        number = int(params["issue_number"])
        self._require_issue(number)
        check_comment_length(body["body"])
        comment = self._issue_comment(number, body["body"])
        self.issue_comment_store[comment["id"]] = comment
        return 201, public(comment), {"Location": comment["url"]}

    def _get_issue_comment(self, params: Mapping[str, str]) -> dict[str, Any]:
        comment = self.issue_comment_store.get(int(params["comment_id"]))
        if comment is None:
            raise ApiError(404, "Not Found")
        return comment

    def op_get_issue_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        return 200, public(self._get_issue_comment(params)), {}

    def op_update_issue_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        comment = self._get_issue_comment(params)
        check_comment_length(body["body"])
        comment.update(body=body["body"], updated_at=now_iso())
        return 200, public(comment), {}

    def op_delete_issue_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        self.issue_comment_store.pop(self._get_issue_comment(params)["id"])
        return 204, None, {}

    def op_list_commit_comments(
        self, params: Mapping[str, str], query: Mapping[str, list[str]], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        sha = self._commit_sha(params["commit_sha"])
        items = sorted(
            (c for c in self.commit_comment_store.values() if c["commit_id"] == sha),
            key=lambda c: c["id"],
        )
        return self._page(items, query, f"{self._repo_api()}/commits/{sha}/comments")

    @staticmethod
    def _commit_sha(sha: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise ApiError(422, "No commit found for SHA: " + sha)
        return sha

    def op_create_commit_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        sha = self._commit_sha(params["commit_sha"])
        check_comment_length(body["body"])
        comment_id = next(self._ids)
        stamp = now_iso()
        comment = {
            "html_url": f"{self.server_url}/{self.repository}/commit/{sha}#commitcomment-{comment_id}",
            "url": f"{self._repo_api()}/comments/{comment_id}",
            "id": comment_id,
            "node_id": f"CC_kwDO{comment_id}",
            "body": body["body"],
            "path": body.get("path"),
            "position": body.get("position"),
            "line": body.get("line"),
            "commit_id": sha,
            "user": self._author(),
            "created_at": stamp,
            "updated_at": stamp,
            "author_association": "NONE",
        }
        self.commit_comment_store[comment_id] = comment
        return 201, public(comment), {"Location": comment["url"]}

    def _get_commit_comment(self, params: Mapping[str, str]) -> dict[str, Any]:
        comment = self.commit_comment_store.get(int(params["comment_id"]))
        if comment is None:
            raise ApiError(404, "Not Found")
        return comment

    def op_get_commit_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        return 200, public(self._get_commit_comment(params)), {}

    def op_update_commit_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        comment = self._get_commit_comment(params)
        check_comment_length(body["body"])
        comment.update(body=body["body"], updated_at=now_iso())
        return 200, public(comment), {}

    def op_delete_commit_comment(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        self.commit_comment_store.pop(self._get_commit_comment(params)["id"])
        return 204, None, {}

    # ---------------------------------------------------------- git data
    def _ref_json(self, ref: str) -> dict[str, Any]:
        sha = self.refs[ref]
        return {
            "ref": ref,
            "node_id": f"REF_{hashlib.md5(ref.encode()).hexdigest()[:12]}",
            "url": f"{self._repo_api()}/git/{ref}",
            "object": {
                "type": "commit",
                "sha": sha,
                "url": f"{self._repo_api()}/git/commits/{sha}",
            },
        }

    def op_get_ref(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        ref = "refs/" + params["ref"]
        if ref not in self.refs:
            raise ApiError(404, "Not Found")
        return 200, self._ref_json(ref), {}

    def op_matching_refs(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        prefix = "refs/" + params["ref"]
        return 200, [self._ref_json(r) for r in sorted(self.refs) if r.startswith(prefix)], {}

    def op_create_ref(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        ref, sha = body["ref"], body["sha"]
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise ApiError(
                422, "Reference name must start with 'refs/' and have at least two slashes."
            )
        if ref in self.refs:
            raise ApiError(422, "Reference already exists")
        if sha not in self.commits:
            raise ApiError(422, "Object does not exist")
        self.refs[ref] = sha
        return 201, self._ref_json(ref), {"Location": f"{self._repo_api()}/git/{ref}"}

    def op_update_ref(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        ref = "refs/" + params["ref"]
        if ref not in self.refs:
            raise ApiError(422, "Reference does not exist")
        if body["sha"] not in self.commits:
            raise ApiError(422, "Object does not exist")
        if not body.get("force", False) and not self._is_ancestor(self.refs[ref], body["sha"]):
            raise ApiError(422, "Update is not a fast forward")
        self.refs[ref] = body["sha"]
        return 200, self._ref_json(ref), {}

    def op_delete_ref(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        ref = "refs/" + params["ref"]
        if self.refs.pop(ref, None) is None:
            raise ApiError(422, "Reference does not exist")
        return 204, None, {}

    def _is_ancestor(self, ancestor: str, sha: str) -> bool:
        pending = [sha]
        while pending:
            current = pending.pop()
            if current == ancestor:
                return True
            pending += [p["sha"] for p in self.commits.get(current, {}).get("parents", [])]
        return False

    def op_create_blob(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if body.get("encoding", "utf-8") == "base64":
            try:
                data = base64.b64decode(body["content"], validate=True)
            except ValueError:
                raise ApiError(422, "content is not valid Base64") from None
        else:
            data = body["content"].encode()
        sha = git_sha("blob", data)
        self.blobs[sha] = data
        return 201, {"url": f"{self._repo_api()}/git/blobs/{sha}", "sha": sha}, {}

    def op_get_blob(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        sha = params["file_sha"]
        if sha not in self.blobs:
            raise ApiError(404, "Not Found")
        data = self.blobs[sha]
        return (
            200,
            {
                "content": base64.b64encode(data).decode(),
                "encoding": "base64",
                "url": f"{self._repo_api()}/git/blobs/{sha}",
                "sha": sha,
                "size": len(data),
                "node_id": f"B_{sha[:12]}",
            },
            {},
        )

    def _flatten_tree(self, sha: str, prefix: str = "") -> dict[str, str]:
        files: dict[str, str] = {}
        for entry in self.trees[sha]:
            if entry["type"] == "tree":
                files.update(self._flatten_tree(entry["sha"], f"{prefix}{entry['path']}/"))
            else:
                files[f"{prefix}{entry['path']}"] = entry["sha"]
        return files

    def _store_tree(self, files: Mapping[str, str]) -> str:
        """Nested trees from flat `path -> blob sha`, like git; returns the root tree's sha."""
        children: dict[str, dict[str, str]] = {}
        entries: list[dict[str, Any]] = []
        for path, sha in files.items():
            head, _, rest = path.partition("/")
            if rest:
                children.setdefault(head, {})[rest] = sha
            else:
                entries.append({"path": head, "mode": "100644", "type": "blob", "sha": sha})
        for name, sub in children.items():
            entries.append(
                {"path": name, "mode": "040000", "type": "tree", "sha": self._store_tree(sub)}
            )
        entries.sort(key=lambda e: e["path"])
        sha = git_sha("tree", json.dumps(entries, sort_keys=True).encode())
        self.trees[sha] = entries
        return sha

    def _tree_json(self, sha: str) -> dict[str, Any]:
        api = self._repo_api()
        return {
            "sha": sha,
            "url": f"{api}/git/trees/{sha}",
            "truncated": False,
            "tree": [
                {
                    **e,
                    "url": f"{api}/git/{e['type']}s/{e['sha']}",
                    **({"size": len(self.blobs[e["sha"]])} if e["type"] == "blob" else {}),
                }
                for e in self.trees[sha]
            ],
        }

    def op_create_tree(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        files: dict[str, str] = {}
        if "base_tree" in body:
            if body["base_tree"] not in self.trees:
                raise ApiError(422, "base_tree is not a valid tree oid")
            files = self._flatten_tree(body["base_tree"])
        for entry in body["tree"]:
            if entry.get("type") != "blob" or entry.get("mode") not in ("100644", "100755"):
                raise ApiError(422, "the fake only stores blob entries with mode 100644/100755")
            if "sha" in entry and "content" in entry:
                raise ApiError(422, "use either tree.sha or content, not both")
            if "sha" in entry and entry["sha"] is None:
                files.pop(entry["path"], None)
                continue
            if "sha" in entry and entry["sha"] not in self.blobs:
                raise ApiError(422, f"tree.sha {entry['sha']} is not a valid blob")
            if "content" in entry:
                data = entry["content"].encode()
                blob = git_sha("blob", data)
                self.blobs[blob] = data
                files[entry["path"]] = blob
            else:
                files[entry["path"]] = entry["sha"]
        sha = self._store_tree(files)
        return 201, self._tree_json(sha), {}

    def op_get_tree(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if params["tree_sha"] not in self.trees:
            raise ApiError(404, "Not Found")
        return 200, self._tree_json(params["tree_sha"]), {}

    def op_create_commit(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if body["tree"] not in self.trees:
            raise ApiError(422, "Tree SHA does not exist")
        for parent in body.get("parents", []):
            if parent not in self.commits:
                raise ApiError(422, "Parent SHA does not exist or is not a commit object")
        person = {
            "name": "github-actions[bot]",
            "email": "41898282+github-actions[bot]@users.noreply.github.com",
            "date": now_iso(),
        }
        content = json.dumps(
            [
                body["message"],
                body["tree"],
                body.get("parents", []),
                person["date"],
                next(self._ids),
            ]
        ).encode()
        sha = git_sha("commit", content)
        api = self._repo_api()
        self.commits[sha] = {
            "sha": sha,
            "node_id": f"C_{sha[:12]}",
            "url": f"{api}/git/commits/{sha}",
            "html_url": f"{self.server_url}/{self.repository}/commit/{sha}",
            "author": body.get("author", person),
            "committer": body.get("committer", person),
            "message": body["message"],
            "tree": {"sha": body["tree"], "url": f"{api}/git/trees/{body['tree']}"},
            "parents": [
                {
                    "sha": p,
                    "url": f"{api}/git/commits/{p}",
                    "html_url": f"{self.server_url}/{self.repository}/commit/{p}",
                }
                for p in body.get("parents", [])
            ],
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        }
        return 201, self.commits[sha], {"Location": f"{api}/git/commits/{sha}"}

    def op_get_commit(
        self, params: Mapping[str, str], query: Any, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        commit = self.commits.get(params["commit_sha"])
        if commit is None:
            raise ApiError(404, "Not Found")
        return 200, commit, {}


def can_write(permission: str, operation_id: str) -> bool:
    """Whether a token with `permission` may send this write (see the module docstring)."""
    return permission == "write" or (
        permission == "comments" and operation_id.startswith("issues/")
    )


def public(comment: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in comment.items() if not k.startswith("_")}


def check_comment_length(body: str) -> None:
    if len(body) > 65536:
        raise ApiError(422, "Validation Failed: body is too long (maximum is 65536 characters)")


def error_body(message: str) -> dict[str, Any]:
    return {"message": message, "documentation_url": DOCS}


def bearer_token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") and value.strip() else None


_CONTRACTS: dict[int, Contract] = {}


def _contract_for(spec: Mapping[str, Any]) -> Contract:
    with _CACHE_LOCK:
        if id(spec) not in _CONTRACTS:
            _CONTRACTS[id(spec)] = Contract(spec)
        return _CONTRACTS[id(spec)]


def _handler_for(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
        server_version = "fake-github"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body: Any = json.loads(raw) if raw.strip() else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = raw.decode(errors="replace")
            safe_headers = {
                k: ("[redacted]" if k == "authorization" else v) for k, v in headers.items()
            }
            record = RecordedRequest(
                self.command,
                parts.path,
                parse_qs(parts.query, keep_blank_values=True),
                safe_headers,
                body,
            )
            with fake._lock:
                fake.requests.append(record)
            fault = fake.take_fault(self.command, parts.path)
            if fault is not None and fault.status is not None:
                record.status = fault.status
                self._send(fault.status, error_body(fault.message), fault.headers)
                return
            status, payload, extra = fake.handle(record, raw, headers)
            record.status = status
            if fault is not None and fault.drop_after:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._send(status, payload, extra, cut_body=fault is not None and fault.cut_body)

        def _send(
            self, status: int, payload: Any, extra: Mapping[str, str], *, cut_body: bool = False
        ) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            self.send_header("X-RateLimit-Limit", "5000")
            self.send_header("X-RateLimit-Remaining", "4999")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if cut_body:  # Content-Length promised all of it: the client sees a broken answer
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler


# --------------------------------------------------------------------------- pytest fixture


def _pytest_fixture() -> Any:
    import pytest

    @pytest.fixture
    def github_server() -> Iterator[FakeGitHub]:
        """A started FakeGitHub; the test fails at teardown if any request broke the contract."""
        if load_github_openapi() is None:
            pytest.skip(
                "GitHub's OpenAPI description is unavailable: no ../shared/github-rest and no npm"
            )
        fake = FakeGitHub()
        fake.start()
        try:
            yield fake
        finally:
            fake.stop()
        fake.assert_no_violations()

    return github_server


with contextlib.suppress(ImportError):  # standalone use (python -m) works without pytest
    github_server = _pytest_fixture()


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.github_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", default="octo-org/octo-repo")
    parser.add_argument("--token", default="ghs_fakeWriteToken0123456789")
    parser.add_argument(
        "--read-token", action="append", default=[], help="a read-only token (repeatable)"
    )
    parser.add_argument(
        "--pr", type=int, action="append", help="pull-request numbers that exist (default 1 and 7)"
    )
    args = parser.parse_args(argv)
    fake = FakeGitHub(
        repository=args.repo,
        pull_requests=args.pr or (1, 7),
        token=args.token,
        host=args.host,
        port=args.port,
    )
    for token in args.read_token:
        fake.add_token(token, "read")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fake.start()
    print(fake.api_url, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 1 if fake.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
