"""How every entry point reports: plain lines, warnings, and the top-level error handler."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from cxml.core import env, ghactions
from cxml.core.errors import CxmlError
from cxml.core.redact import redact_text

PROGRESS_HELP = (
    "a live progress bar (default: on a terminal, except in CI, where CI=true or "
    "GITHUB_ACTIONS=true asks for plain lines)"
)
NO_PROGRESS_HELP = "plain lines, one per epoch (default in CI and when output is not a terminal)"


def want_progress(flag: bool | None, stream: TextIO | None = None) -> bool:
    """--progress/--no-progress when given; else a bar only on a terminal outside CI, since CI
    logs (even through a pseudo-terminal) keep every redraw of a bar as a line."""
    if flag is not None:
        return flag
    return (stream or sys.stderr).isatty() and not env.in_ci()


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
        file, line = ghactions.error_location(message) or (None, None)
        print(ghactions.error_annotation(message, file=file, line=line), flush=True)
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
