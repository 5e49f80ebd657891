"""How every entry point reports: plain lines, warnings, and the top-level error handler."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from cxml.core import env, ghactions
from cxml.core.errors import CxmlError
from cxml.core.redact import redact_text


def info(message: str) -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    message = redact_text(message)  # warnings quote third-party errors, which quote URLs
    if env.in_github_actions():
        print(ghactions.warning_annotation(message), flush=True)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def report_error(error: CxmlError) -> None:
    message = redact_text(str(error))
    if env.in_github_actions():
        print(ghactions.error_annotation(message), flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)


def run_entry_point(
    main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> int:
    """Call a step's main; a CxmlError becomes one `error:` line and its kind's exit code."""
    try:
        return main(argv)
    except CxmlError as exc:
        report_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
