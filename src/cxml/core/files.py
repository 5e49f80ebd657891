"""Atomic file writes (temp file + rename) and the small readers that pair with them.

The readers are bounded: every file they read may come from a pull request, so text that is
not UTF-8, JSON nested deeper than any record needs, numbers no float can hold and CSV
fields past the csv module's limit are each one clear error, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cxml.core.errors import ConfigError, CxmlError, RecordError

MAX_JSON_DEPTH = 64
"""No file cxml writes nests deeper than a few levels; deeper is damage or an attack."""
MAX_JSON_NUMBER_DIGITS = 300
"""A float holds at most ~1.8e308: longer integers cannot be a metric, only an overflow."""
MAX_CSV_FIELD = 16 * 1024 * 1024
"""Generous for any plot cell (class names), bounded so one field cannot eat the memory."""


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `target`; on success rename it over `target`, else remove it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; the result must read like any file the user writes (a model
        # file served by a non-root container, a report uploaded as an artifact).
        tmp.chmod(_mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable_file(target: str | Path, *, key: str | None = None) -> None:
    """Refuse, before any work, a file path that is a directory or lies under a file.

    Steps call it on their outputs up front, so a bad path fails in a second, not after
    minutes of training with nothing written."""
    target = Path(target)
    named = f"{key}: {target}" if key else str(target)
    if target.is_dir():
        raise ConfigError(f"{named}: is a directory, not a file; remove it or choose another path")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(
                f"{named}: {parent} is a file, not a directory; remove it or choose another path"
            )


def _mode_for(target: Path) -> int:
    """The existing file's permissions, else what the process umask gives a new file."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, *, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: {what} not found; run the step that writes it first")
    fix = "re-run the step that writes it"
    return parse_json(read_utf8(path, fix=fix), label=f"{path}: {what}", fix=fix)


def read_utf8(
    path: str | Path, *, fix: str, error: type[CxmlError] = RecordError, label: str | None = None
) -> str:
    """A text file's content; not UTF-8 (UTF-16, Latin-1, binary) or unreadable is `error`."""
    named = label or str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{named}: not UTF-8 text; save it as UTF-8 or {fix}") from None
    except OSError as exc:
        raise error(f"{named}: cannot be read ({exc.strerror}); {fix}") from None


def parse_json(text: str, *, label: str, fix: str, error: type[CxmlError] = RecordError) -> Any:
    """JSON text -> data, bounded in depth and number size; anything else is one clear error."""
    try:
        data = json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise error(f"{label}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    except RecursionError:
        raise error(f"{label}: JSON nested too deeply; {fix}") from None
    except ValueError as exc:  # _bounded_int, or Python's own integer-digits limit
        raise error(f"{label}: not usable JSON ({exc}); {fix}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise error(f"{label}: JSON nested deeper than {MAX_JSON_DEPTH} levels; {fix}")
    return data


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_JSON_NUMBER_DIGITS:
        raise ValueError(f"a number with {len(digits.lstrip('-'))} digits is too large")
    return int(digits)


def json_depth(data: Any) -> int:
    """How deeply lists and objects nest (0 for a scalar), without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:
        item, depth = pending.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            pending += [(value, depth + 1) for value in item.values()]
        elif isinstance(item, list):
            pending += [(value, depth + 1) for value in item]
    return deepest


def write_csv(target: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(target, buffer.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    fix = "re-run the step that writes it"
    return parse_csv(read_utf8(path, fix=fix), label=str(path), fix=fix)


def parse_csv(text: str, *, label: str, fix: str) -> list[dict[str, str]]:
    """CSV text with a header -> rows; a malformed file or an oversized field is a RecordError."""
    # The csv module's limit is process-wide; raising it is safe because the text is already
    # in memory, and a field larger than MAX_CSV_FIELD is still refused.
    csv.field_size_limit(MAX_CSV_FIELD)
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise RecordError(f"{label}: not a usable CSV file ({exc}); {fix}") from None
