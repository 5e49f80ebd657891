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


def append_summary(markdown: str) -> None:
    """Append markdown to the job summary (`$GITHUB_STEP_SUMMARY`), if there is one."""
    path = env.get(env.GITHUB_STEP_SUMMARY)
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(markdown.rstrip("\n") + "\n\n")


def escape_annotation(message: str) -> str:
    return message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def error_annotation(message: str) -> str:
    return f"::error::{escape_annotation(message)}"


def warning_annotation(message: str) -> str:
    return f"::warning::{escape_annotation(message)}"
