"""cxml.core.redact: no URL credential survives `redact_uri` / `redact_text` (examples and properties)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxml.core.redact import is_secret_parameter, redact_text, redact_uri, without_query

# Secrets start with "QZ" and go on in upper case, which the rest of a generated URL never holds
# (lower-case hosts and paths; no parameter name contains "qz"), so "the secret is not in the
# output" can only hold because it was removed, never because it was hard to find.
secrets = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=4, max_size=40).map(
    lambda s: f"QZ{s}"
)
# Userinfo may hold what a pasted password holds, raw `@`, `:`, `;`, `=` and `&` included.
password_punctuation = st.text(alphabet="@:;=&!$'()*+,~%-._", max_size=6)
passwords = st.tuples(password_punctuation, secrets, password_punctuation).map("".join)
hosts = st.from_regex(r"[a-z]{1,12}(\.[a-z]{2,8}){0,2}(:[1-9][0-9]{1,4})?", fullmatch=True)
paths = st.from_regex(r"(/[a-z0-9._-]{0,10}){0,4}", fullmatch=True)
schemes = st.sampled_from(["http", "https", "postgresql", "mysql+pymysql", "databricks", "s3"])
harmless_names = st.sampled_from(["page", "per_page", "workspace", "o", "ref", "experiment", "x"])
harmless_values = st.from_regex(r"[a-z0-9._~-]{0,12}", fullmatch=True)
SECRET_NAMES = [
    "token",
    "access_token",
    "auth",
    "password",
    "pwd",
    "passwd",
    "key",
    "api_key",
    "apikey",
    "secret",
    "client_secret",
    "credentials",
    "sig",
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "sessionid",
]


@st.composite
def secret_names(draw: st.DrawFn) -> str:
    """A secret parameter name in any letter case, sometimes percent-encoded."""
    name = draw(st.sampled_from(SECRET_NAMES))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = "".join(c.upper() if flip else c.lower() for c, flip in zip(name, flips, strict=True))
    if draw(st.booleans()):
        name = f"%{ord(name[0]):02X}{name[1:]}"
    return name


@st.composite
def harmless_query(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(harmless_names, harmless_values), max_size=3))
    return "&".join(f"{k}={v}" for k, v in pairs)


@st.composite
def urls_with_userinfo(draw: st.DrawFn) -> tuple[str, str]:
    password = draw(passwords)
    user = draw(st.sampled_from(["", "ci", "deploy", "x-access-token"]))
    url = f"{draw(schemes)}://{user}:{password}@{draw(hosts)}{draw(paths)}"
    return url, password


@st.composite
def urls_with_secret_parameter(draw: st.DrawFn) -> tuple[str, str]:
    """A secret in the query, the fragment or a matrix parameter, among harmless ones."""
    secret = draw(secrets)
    name = draw(secret_names())
    before, after = draw(harmless_query()), draw(harmless_query())
    base = f"{draw(schemes)}://{draw(hosts)}{draw(paths)}"
    place = draw(st.sampled_from(["query", "fragment", "matrix"]))
    if place == "query":
        parts = [p for p in (before, f"{name}={secret}", after) if p]
        url = f"{base}?{'&'.join(parts)}"
    elif place == "fragment":
        url = f"{base}#{name}={secret}&token_type=bearer"
    else:
        url = f"{base}/api;{name}={secret}/runs" + (f"?{after}" if after else "")
    return url, secret


@settings(max_examples=300, deadline=None)
@given(urls_with_userinfo())
def test_userinfo_never_survives(case: tuple[str, str]) -> None:
    url, password = case
    public = redact_uri(url)
    assert password not in public
    assert "@" not in public


@settings(max_examples=300, deadline=None)
@given(urls_with_secret_parameter())
def test_secret_parameter_values_never_survive(case: tuple[str, str]) -> None:
    url, secret = case
    public = redact_uri(url)
    assert secret not in public
    assert "***" in public


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="abcdefghij ,.:()'\"\n", max_size=30),
    urls_with_secret_parameter(),
    urls_with_userinfo(),
    st.text(alphabet="abcdefghij ,.:()'\"\n", max_size=30),
)
def test_urls_inside_free_text_lose_their_secrets_and_the_text_stays(
    before: str, query_case: tuple[str, str], userinfo_case: tuple[str, str], after: str
) -> None:
    text = f"{before} {query_case[0]} failed; also {userinfo_case[0]} {after}"
    public = redact_text(text)
    assert query_case[1] not in public and userinfo_case[1] not in public
    assert public.startswith(f"{before} ") and public.endswith(f" {after}")


@settings(max_examples=300, deadline=None)
@given(schemes, hosts, paths, harmless_query())
def test_urls_without_credentials_are_unchanged(
    scheme: str, host: str, path: str, query: str
) -> None:
    url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    assert redact_uri(url) == url


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_redacted_without_error_and_idempotently(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        ("https://deploy:s3cr3t@mlflow.example.com/", "https://mlflow.example.com/"),
        ("https://u:p@ss:w@rd@mlflow.example.com:5000/x", "https://mlflow.example.com:5000/x"),
        ("https://:tok@h/", "https://h/"),
        ("https://h/api?Token=abc&page=2", "https://h/api?Token=***&page=2"),
        ("https://h/?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d&X-Amz-Date=1", "https://h/?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=1"),
        ("https://h/cb#access_token=abc&token_type=bearer", "https://h/cb#access_token=***&token_type=***"),
        ("https://h/app;jsessionid=abc;apiKey=def/x", "https://h/app;jsessionid=***;apiKey=***/x"),
        ("https://h/?page=1;token=abc", "https://h/?page=1;token=***"),
        ("https://h/?token=a;b/c&page=1", "https://h/?token=***&page=1"),
        ("https://h/?%74oken=abc", "https://h/?%74oken=***"),
        ("https://h/?PWD=abc&passwd=def&auth=ghi", "https://h/?PWD=***&passwd=***&auth=***"),
        ("sqlite:////srv/mlflow/mlflow.db", "sqlite:////srv/mlflow/mlflow.db"),
        ("deploy@10.0.0.5", "deploy@10.0.0.5"),
        ("error at 'http://ci:pw@10.0.0.5:5000/api?key=abc': refused", "error at 'http://10.0.0.5:5000/api?key=***': refused"),
    ],
)  # fmt: skip
def test_examples(uri: str, public: str) -> None:
    assert redact_uri(uri) == public


@pytest.mark.parametrize("name", [*SECRET_NAMES, "API-KEY", "Private_Token", "AUTHORIZATION"])
def test_secret_parameter_names(name: str) -> None:
    assert is_secret_parameter(name)


@pytest.mark.parametrize("name", ["page", "per_page", "ref", "experiment", "o", "run_id"])
def test_harmless_parameter_names(name: str) -> None:
    assert not is_secret_parameter(name)


def test_without_query_keeps_scheme_host_and_path() -> None:
    assert without_query("https://u:p@h:1/mlflow/?token=x#frag") == "https://u:p@h:1/mlflow/"


def test_a_long_run_of_question_marks_is_scanned_quickly() -> None:
    import time

    text = "?" * 200_000
    started = time.monotonic()
    assert redact_text(text) == text
    assert time.monotonic() - started < 5
