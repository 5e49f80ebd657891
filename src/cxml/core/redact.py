"""Credential redaction for URIs and the messages that quote them."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"//[^/@\s]*@")
_SECRET_QUERY_VALUE = re.compile(
    r"([?&][^=&#\s]*(?:password|passwd|secret|token|key|signature|sig)[^=&#\s]*=)[^&#\s]*",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """`text` (a URI, or a message quoting one) without credentials: `user:pass@` dropped,
    secret-looking query values masked. For run.json, release.json (world-readable on the
    serving host) and error messages."""
    return _SECRET_QUERY_VALUE.sub(r"\1***", _USERINFO.sub("//", text))
