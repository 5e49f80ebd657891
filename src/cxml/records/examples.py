"""examples.json: the few test-split examples a release bundle ships for its demo page.

Images are plain files beside model.pt (`example-0.png`, ...) that examples.json lists with their
true labels; a tabular model's example rows (`row-0`, ...) sit in examples.json itself, as the
feature values in the model's order. Both are in SHA256SUMS like every other bundle file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxml.core.errors import RecordError

EXAMPLES_FILE_NAME = "examples.json"
EXAMPLES_FORMAT = "cxml-examples/1"
MAX_EXAMPLES = 12
MAX_EXAMPLE_BYTES = 256 * 1024
"""An example bigger than this is left out: the page shows thumbnails, not photographs."""
EXAMPLE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
EXAMPLE_NAME = re.compile(r"example-[0-9]{1,3}\.(png|jpg|jpeg|gif|webp|bmp)")
ROW_NAME = re.compile(r"row-[0-9]{1,3}")
MAX_INDEX_BYTES = 64 * 1024
"""examples.json's limit: a few rows of a few hundred features, not a data set."""


@dataclass(frozen=True)
class Example:
    """One example image: its file name in the bundle, its true label and its bytes."""

    name: str
    label: str
    data: bytes

    @property
    def media_type(self) -> str:
        return EXAMPLE_TYPES[Path(self.name).suffix]


@dataclass(frozen=True)
class ExampleRow:
    """One example row of a tabular model: its name, its true label and its feature values."""

    name: str
    label: str
    features: tuple[float, ...]


def example_name(index: int, suffix: str) -> str:
    """`example-<index><suffix>`, the only names an examples.json may list."""
    name = f"example-{index}{suffix.lower()}"
    if EXAMPLE_NAME.fullmatch(name) is None:
        raise RecordError(f"example {index}: {suffix!r} is not an image type the page shows")
    return name


def row_name(index: int) -> str:
    """`row-<index>`, the only names an example row may have."""
    name = f"row-{index}"
    if ROW_NAME.fullmatch(name) is None:
        raise RecordError(f"example row {index}: too many example rows")
    return name


def example_files(examples: Sequence[Example], rows: Sequence[ExampleRow] = ()) -> dict[str, bytes]:
    """The files that hold `examples` and `rows` in a bundle: the images and examples.json
    (empty: none); a RecordError when the rows would not fit examples.json's limit."""
    if not examples and not rows:
        return {}
    entries: list[dict[str, object]] = [
        {"file": example.name, "label": example.label} for example in examples
    ]
    entries += [
        {"name": row.name, "label": row.label, "features": list(row.features)} for row in rows
    ]
    index = {"format": EXAMPLES_FORMAT, "examples": entries}
    encoded = (json.dumps(index, indent=1, allow_nan=False) + "\n").encode("utf-8")
    if len(encoded) > MAX_INDEX_BYTES:
        raise RecordError(
            f"{len(rows)} example rows take {len(encoded)} bytes, over examples.json's limit of "
            f"{MAX_INDEX_BYTES}"
        )
    files = {example.name: example.data for example in examples}
    files[EXAMPLES_FILE_NAME] = encoded
    return files


def read_examples(directory: str | Path) -> list[Example]:
    """The example images a bundle directory ships ([] when it has no examples.json)."""
    index_path, entries = _read_index(directory)
    return [_read_example(index_path, entry) for entry in entries if not _is_row(entry)]


def read_example_rows(directory: str | Path) -> list[ExampleRow]:
    """The example rows a tabular model's bundle ships ([] when it has no examples.json)."""
    index_path, entries = _read_index(directory)
    return [
        _read_row(index_path, entry)
        for entry in entries
        if isinstance(entry, dict) and _is_row(entry)
    ]


def _read_index(directory: str | Path) -> tuple[Path, list[object]]:
    index_path = Path(directory) / EXAMPLES_FILE_NAME
    if not index_path.is_file():
        return index_path, []
    try:
        if index_path.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"larger than {MAX_INDEX_BYTES // 1024} KiB")
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise RecordError(f"{index_path}: not readable ({exc}); rebuild the bundle") from None
    if not isinstance(index, dict) or index.get("format") != EXAMPLES_FORMAT:
        raise RecordError(f"{index_path}: not a cxml examples index ({EXAMPLES_FORMAT} expected)")
    entries = index.get("examples")
    if not isinstance(entries, list) or len(entries) > MAX_EXAMPLES:
        raise RecordError(
            f"{index_path}: `examples` must be a list of at most {MAX_EXAMPLES}; rebuild the bundle"
        )
    return index_path, entries


def _is_row(entry: object) -> bool:
    return isinstance(entry, dict) and "features" in entry


def _read_row(index_path: Path, entry: dict[str, object]) -> ExampleRow:
    name, label, features = entry.get("name"), entry.get("label"), entry.get("features")
    if not isinstance(name, str) or ROW_NAME.fullmatch(name) is None:
        raise RecordError(
            f"{index_path}: example row {name!r} is not `row-<n>`; rebuild the bundle"
        )
    if not isinstance(label, str) or not 0 < len(label) <= 200:
        raise RecordError(f"{index_path}: {name} needs a label (text); rebuild the bundle")
    if (
        not isinstance(features, list)
        or not features
        or not all(_is_finite_number(value) for value in features)
    ):
        raise RecordError(
            f"{index_path}: {name}: `features` must be a list of finite numbers; rebuild the bundle"
        )
    values = tuple(float(value) for value in features if isinstance(value, int | float))
    return ExampleRow(name, label, values)


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float's range
        return False


def _read_example(index_path: Path, entry: object) -> Example:
    if not isinstance(entry, dict):
        raise RecordError(f"{index_path}: each example must be an object; rebuild the bundle")
    name, label = entry.get("file"), entry.get("label")
    if not isinstance(name, str) or EXAMPLE_NAME.fullmatch(name) is None:
        raise RecordError(
            f"{index_path}: example file {name!r} is not `example-<n>.<image type>`; "
            "rebuild the bundle"
        )
    if not isinstance(label, str) or not 0 < len(label) <= 200:
        raise RecordError(f"{index_path}: {name} needs a label (text); rebuild the bundle")
    path = index_path.parent / name
    try:
        if path.is_symlink() or path.stat().st_size > MAX_EXAMPLE_BYTES:
            raise RecordError(
                f"{path}: not a plain file of at most {MAX_EXAMPLE_BYTES} bytes; rebuild the bundle"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise RecordError(f"{path}: not readable ({exc.strerror}); rebuild the bundle") from None
    return Example(name, label, data)
