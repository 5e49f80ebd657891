"""The host's progress lines: stderr, since stdout carries the one JSON result the client reads."""

from __future__ import annotations

import sys
from datetime import UTC, datetime


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
