"""Credential redaction for URIs and the messages that quote them.

Every URL cxml prints, writes to a file (run.json, release.json, report.md, the job summary,
step outputs) or posts (the report comment) goes through `redact_uri` (one URL) or
`redact_text` (free text that may quote URLs; the same function, named for the reader):

- userinfo (`https://user:password@host`) is dropped, up to the last `@` of the authority, so a
  raw `@` inside a password cannot leave its tail behind;
- the value of a query (`?token=`, `&sig=`), fragment (`#access_token=`) or matrix (`;key=`)
  parameter whose name looks secret becomes `***`. Names are matched case-insensitively, after
  percent-decoding and ignoring `-`/`_`, on the words in `SECRET_PARAMETER_WORDS`, so
  `X-Amz-Signature`, `api_key`, `apiKey` and `client_secret` are all caught. Matching is
  deliberately broad: masking a harmless value costs a less useful link, leaking one costs a
  secret.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

SECRET_PARAMETER_WORDS = (
    "token",
    "auth",
    "pass",
    "pwd",
    "key",
    "secret",
    "credential",
    "sig",
    "session",
)
"""A parameter whose normalised name contains one of these has a secret value.

`auth` covers `authorization`, `pass` covers `password`/`passwd`, `sig` covers `signature` and
`X-Amz-Signature`, `credential` covers `credentials` and `X-Amz-Credential`, `key` covers
`api_key`/`apikey`, `token` covers `access_token` and `X-Amz-Security-Token`."""

# `//`, then the authority up to its last `@` (greedy, stopping where the authority ends).
_USERINFO = re.compile(r"//[^/?#\s]*@")
# A query or fragment parameter: its value runs to the next `&`, `#`, whitespace, or a quote or
# angle bracket that closes a quoted URL in a message (a `;` or `/` in it is kept inside the
# value, so a secret containing them is masked whole). The name's length is bounded so that
# text full of `?` stays linear to scan.
_QUERY_PARAMETER = re.compile(r"(?P<lead>[?&#](?P<name>[^=&#\s]{0,256})=)(?P<value>[^&#\s'\"`<>]*)")
# A matrix parameter (`/path;jsessionid=...`): its value runs to the next `;`, `/`, `?`, `&`,
# `#`, whitespace, quote or angle bracket.
_MATRIX_PARAMETER = re.compile(r"(?P<lead>;(?P<name>[^=;/?&#\s]*)=)(?P<value>[^;/?&#\s'\"`<>]*)")


def is_secret_parameter(name: str) -> bool:
    """Whether a URL parameter's value should be masked, judged by its name alone."""
    normalised = re.sub(r"[-_.\s]", "", unquote(name)).casefold()
    return any(word in normalised for word in SECRET_PARAMETER_WORDS)


def _mask_secret_value(match: re.Match[str]) -> str:
    if match.group("value") and is_secret_parameter(match.group("name")):
        return match.group("lead") + MASK
    return match.group(0)


def redact_uri(text: str) -> str:
    """`text` (a URI, or a message quoting one) without credentials: `user:pass@` dropped,
    secret-looking query, fragment and matrix parameter values masked as `***`.

    Idempotent, never raises, and leaves text without URL credentials unchanged."""
    without_userinfo = _USERINFO.sub("//", text)
    masked = _QUERY_PARAMETER.sub(_mask_secret_value, without_userinfo)
    return _MATRIX_PARAMETER.sub(_mask_secret_value, masked)


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL in it redacted by `redact_uri`."""
    return redact_uri(text)


def without_query(uri: str) -> str:
    """`uri` with its query and fragment cut off, for building a link under it."""
    return re.split(r"[?#]", uri, maxsplit=1)[0]
