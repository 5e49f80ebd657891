"""API tokens checked before they reach an HTTP header, and API URLs without credentials.

A token pasted into a secret often ends in a newline. Sent as is, the HTTP library refuses the
header and its exception text quotes the whole header, `Bearer <token>`: a traceback that
prints the secret. So a token is cleaned once, where it is read: one trailing newline is
dropped, and anything else that cannot be part of a header value is refused with a message that
says where the token came from and what is wrong with it, never the token itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cxml.core.errors import ConfigError
from cxml.core.redact import redact_uri


def clean_token(raw: str, *, source: str) -> str:
    """`raw` without one trailing newline (`\\n` or `\\r\\n`); ConfigError if anything else in it
    is whitespace, a control character or not ASCII. `source` names where it came from
    (`GITHUB_TOKEN`, `--token`) for the message, which never quotes the token."""
    token = raw.removesuffix("\n").removesuffix("\r") if raw.endswith("\n") else raw
    if not token:
        raise ConfigError(f"{source} is empty apart from a line break; set it to the token itself")
    for position, char in enumerate(token, start=1):
        problem = unusable_character(char)
        if problem:
            raise ConfigError(
                f"{source} has {problem} at character {position} of {len(token)}; "
                "set the secret to the token alone, on one line, without spaces or quotes"
            )
    return token


def unusable_character(char: str) -> str | None:
    """Why `char` cannot be in a token (None when it can): tokens are printable ASCII."""
    if char in "\r\n":
        return "a line break"
    if char.isspace():
        return "whitespace"
    if not char.isascii():
        return "a non-ASCII character"
    if not char.isprintable():
        return "a control character"
    return None


def clean_optional_token(raw: str | None, *, source: str) -> str | None:
    return clean_token(raw, source=source) if raw else None


def check_api_url_has_no_credentials(url: str, *, setting: str) -> str:
    """`url` unchanged; ConfigError (which shows the URL without them) when it holds a user name,
    a password or a secret-looking parameter.

    The token is what authenticates: credentials in the URL would replace its Authorization
    header (requests sends them as Basic auth) and end up in every message that names the URL.
    """
    public = redact_uri(url)
    if public != url or "@" in urlsplit_netloc(url):
        raise ConfigError(
            f"{setting} is {public!r} but has credentials in it (a user name, password or "
            "token): remove them; cxml authenticates with the token (--token, GITHUB_TOKEN or "
            "GITLAB_TOKEN)"
        )
    return url


def urlsplit_netloc(url: str) -> str:
    """The authority part of `url` ('' when it cannot be parsed)."""
    try:
        return urlsplit(url).netloc
    except ValueError:
        return ""
