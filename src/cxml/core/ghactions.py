"""GitHub Actions I/O: step outputs, the job summary and error annotations."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


def error_annotation(message: str, *, file: str | None = None, line: int | None = None) -> str:
    """`::error::`, with `file=` and `line=` when known, so GitHub marks the line in the diff."""
    where = []
    if file:
        where.append(f"file={escape_property(file)}")
        if line:
            where.append(f"line={line}")
    properties = f" {','.join(where)}" if where else ""
    return f"::error{properties}::{escape_annotation(message)}"


def escape_property(value: str) -> str:
    return escape_annotation(value).replace(":", "%3A").replace(",", "%2C")


YAML_MESSAGE = re.compile(
    r"^(?P<file>[^\s:][^:]*\.ya?ml): (?:not valid YAML at line (?P<line>\d+)|(?P<key>[A-Za-z_][\w.-]*(?:\[\d+\])*):)"
)
MAX_LOCATED_BYTES = 1024 * 1024


def error_location(message: str) -> tuple[str, int | None] | None:
    """The YAML file and line an error is about: `params.yaml: train.lr: expected a number`
    -> ("params.yaml", the line of `lr:` under `train:`). None when it names no such file."""
    match = YAML_MESSAGE.match(message)
    if not match:
        return None
    path = Path(match["file"])
    if not path.is_file():
        return None
    if match["line"]:
        return annotation_path(path), int(match["line"])
    return annotation_path(path), yaml_key_line(path, match["key"])


def annotation_path(path: Path) -> str:
    """Relative to the working directory where it can be (GitHub wants repository paths)."""
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def yaml_key_line(path: Path, key: str) -> int | None:
    """1-based line of `key` (`train.lr`, `evaluate.gate[1]`): of its deepest part found."""
    import yaml

    try:
        if path.stat().st_size > MAX_LOCATED_BYTES:
            return None
        node: object = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        return None
    line: int | None = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        found = child_node(node, part)
        if found is None:
            break
        line, node = found
    return line


def child_node(node: object, part: str) -> tuple[int, object] | None:
    """(line of the entry, its value node) for a mapping key or a `[index]` of a sequence."""
    import yaml

    if isinstance(node, yaml.MappingNode) and not part.startswith("["):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                return key_node.start_mark.line + 1, value_node
    if isinstance(node, yaml.SequenceNode) and part.startswith("["):
        index = int(part[1:-1])
        if 0 <= index < len(node.value):
            item = node.value[index]
            return item.start_mark.line + 1, item
    return None


def warning_annotation(message: str) -> str:
    return f"::warning::{escape_annotation(message)}"


@contextmanager
def log_group(title: str, *, enabled: bool = True) -> Iterator[None]:
    """Fold what is printed inside into one collapsible `::group::` in a GitHub Actions log
    (long output like `dvc repro`'s or one line per epoch); plain output elsewhere."""
    if not (enabled and env.in_github_actions()):
        yield
        return
    print(f"::group::{escape_annotation(title)}", flush=True)
    try:
        yield
    finally:
        print("::endgroup::", flush=True)
