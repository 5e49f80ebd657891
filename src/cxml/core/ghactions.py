"""GitHub Actions I/O: step outputs, the job summary and error annotations."""

from __future__ import annotations

import uuid
from pathlib import Path

from cxml.core import env


def set_output(name: str, value: str) -> None:
    """Write a step output to `$GITHUB_OUTPUT` (no-op outside Actions)."""
    path = env.get(env.GITHUB_OUTPUT)
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as handle:
        if "\n" in value:
            delimiter = f"cxml_{uuid.uuid4().hex}"
            handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            handle.write(f"{name}={value}\n")


STEP_SUMMARY_LIMIT_BYTES = 1024 * 1024
"""GitHub shows no summary at all for a step whose `$GITHUB_STEP_SUMMARY` is over 1 MiB (bytes)."""
SUMMARY_CUT_NOTE = "\n\n… (cut at GitHub's 1 MiB job-summary limit)\n\n"


def summary_room() -> int:
    """Bytes this step's job summary can still take (earlier appends count too)."""
    path = env.get(env.GITHUB_STEP_SUMMARY)
    if not path:
        return STEP_SUMMARY_LIMIT_BYTES
    try:
        used = Path(path).stat().st_size
    except OSError:
        used = 0
    return max(0, STEP_SUMMARY_LIMIT_BYTES - used)


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest start of `text` that is at most `max_bytes` in UTF-8, never half a character."""
    return text.encode("utf-8")[: max(0, max_bytes)].decode("utf-8", errors="ignore")


def append_summary(markdown: str) -> None:
    """Append markdown to the job summary (`$GITHUB_STEP_SUMMARY`), if there is one.

    What would take the file past GitHub's 1 MiB is cut (at a character boundary), since an
    oversized summary is dropped whole.
    """
    path = env.get(env.GITHUB_STEP_SUMMARY)
    if not path:
        return
    text = markdown.rstrip("\n") + "\n\n"
    room = summary_room()
    if len(text.encode("utf-8")) > room:
        note_size = len(SUMMARY_CUT_NOTE.encode("utf-8"))
        text = cut_utf8(text, room - note_size) + SUMMARY_CUT_NOTE if room > note_size else ""
    if not text:
        return
    with Path(path).open("a", encoding="utf-8", newline="") as handle:
        handle.write(text)


def escape_annotation(message: str) -> str:
    return message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def error_annotation(message: str) -> str:
    return f"::error::{escape_annotation(message)}"


def warning_annotation(message: str) -> str:
    return f"::warning::{escape_annotation(message)}"
