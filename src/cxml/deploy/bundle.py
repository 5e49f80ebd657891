"""Building a release on the client: its record, described from what train and evaluate wrote.

The bundle's files and their formats belong to `cxml.records.release`; this module only decides
what goes into a new release record.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxml.core.config import DataConfig
from cxml.core.console import warn
from cxml.core.errors import CxmlError
from cxml.records.examples import (
    EXAMPLE_TYPES,
    MAX_EXAMPLE_BYTES,
    Example,
    ExampleRow,
    example_files,
    example_name,
    row_name,
)
from cxml.records.gate import GateResult
from cxml.records.release import ReleaseInfo, ServingConfig, release_name
from cxml.records.run import RunRecord


def describe_release(
    model_sha256: str,
    model_metadata: dict[str, Any],
    run: RunRecord | None,
    gate: GateResult | None,
    metrics: Mapping[str, Any],
    *,
    version: str | None,
    forced_reason: str | None,
    created_at: str,
    serving: ServingConfig,
) -> ReleaseInfo:
    """The release record of a model file: its version, where it came from, what it scored."""
    run = run or RunRecord()
    model_version = version or run.model_version or "local"
    return ReleaseInfo(
        release=release_name(model_version, model_sha256, serving),
        model_version=model_version,
        model_name=run.model_name,
        run_id=run.run_id,
        tracking_uri=run.tracking_uri,
        git_commit=run.git_commit or _text(model_metadata.get("git_commit")),
        created_at=created_at,
        model_sha256=model_sha256,
        model_metadata=model_metadata,
        metrics=numeric_metrics(metrics),
        gate_decision=gate.decision if gate is not None else None,
        forced_reason=forced_reason,
        serving=serving,
    )


def release_metrics(
    eval_metrics: Mapping[str, Any] | None, gate: GateResult | None
) -> Mapping[str, Any]:
    """The metrics a release records: evaluate's metrics file, else the ones in gate.json."""
    if eval_metrics:
        return eval_metrics
    if gate is not None and gate.metrics:
        return gate.metrics
    return {}


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# --- the demo page's examples ----------------------------------------------------------------

EXAMPLES_PER_BUNDLE = 6
TEST_SPLIT_FOLDERS = ("test", "evaluation", "eval")
"""The imagefolder test split's folder names, in the order cxml.ml.data looks for them."""


def bundle_example_files(data: DataConfig, count: int = EXAMPLES_PER_BUNDLE) -> dict[str, bytes]:
    """The files of a few test-split examples (images, or a tabular model's rows) for the bundle;
    none (with a warning) when they cannot be read: the page loses its examples, the release is
    still right."""
    try:
        return example_files(pick_examples(data, count), pick_example_rows(data, count))
    except (CxmlError, OSError, ImportError, ValueError, csv.Error) as exc:
        warn(f"the release ships no examples for its demo page ({exc})")
        return {}


def pick_examples(data: DataConfig, count: int = EXAMPLES_PER_BUNDLE) -> list[Example]:
    """`count` test-split images with their true labels, one class after another."""
    if data.source == "imagefolder":
        return imagefolder_examples(Path(data.path or "."), count)
    if data.source == "digits":
        return digits_examples(data, count)
    return []


def imagefolder_examples(root: Path, count: int) -> list[Example]:
    test_dir = next((root / n for n in TEST_SPLIT_FOLDERS if (root / n).is_dir()), None)
    if test_dir is None:
        return []
    per_class = {
        class_dir.name: sorted(
            f
            for f in class_dir.iterdir()
            if f.suffix.lower() in EXAMPLE_TYPES
            and f.is_file()
            and not f.is_symlink()
            and f.stat().st_size <= MAX_EXAMPLE_BYTES
        )
        for class_dir in sorted(test_dir.iterdir())
        if class_dir.is_dir() and not class_dir.name.startswith(".")
    }
    chosen = round_robin(per_class, count)
    return [
        Example(example_name(i, path.suffix), label, path.read_bytes())
        for i, (label, path) in enumerate(chosen)
    ]


def digits_examples(data: DataConfig, count: int) -> list[Example]:
    """Digits of the test split (scikit-learn ships them), as 8x8 greyscale PNGs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target
    test = test_split_indices(labels, data.val_fraction, data.test_fraction, data.split_seed)
    per_class = {str(label): [int(i) for i in test if labels[i] == label] for label in range(10)}
    examples = []
    for index, (label, image_index) in enumerate(round_robin(per_class, count)):
        buffer = io.BytesIO()
        Image.fromarray(images[image_index], mode="L").save(buffer, "PNG")
        examples.append(Example(example_name(index, ".png"), label, buffer.getvalue()))
    return examples


def test_split_indices(
    labels: Any, val_fraction: float, test_fraction: float, seed: int
) -> list[int]:
    """The test split as cxml.ml.data.stratified_split cuts it (digits, breast_cancer, one CSV
    file), in numpy alone (deploy never loads torch); tests/serve/test_ui.py checks they agree."""
    import numpy as np

    rng = np.random.default_rng(seed)
    test: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        n_test = max(1, round(len(members) * test_fraction)) if test_fraction > 0 else 0
        test.extend(int(i) for i in members[:n_test])
    return sorted(test)


# --- a tabular model's example rows ----------------------------------------------------------

BREAST_CANCER_CLASSES = ("malignant", "benign")
"""scikit-learn's class names for the table's 0 and 1, as cxml.ml.tabular names them."""
CSV_TEST_FILES = ("test.csv", "evaluation.csv", "eval.csv")
"""A CSV folder's test split, in the order cxml.ml.tabular looks for it."""


def pick_example_rows(data: DataConfig, count: int = EXAMPLES_PER_BUNDLE) -> list[ExampleRow]:
    """`count` test-split rows of a tabular source with their true labels, one class after
    another, their values in the model's feature order."""
    if data.source == "breast_cancer":
        features, labels, class_names = breast_cancer_table()
        test = test_split_indices(labels, data.val_fraction, data.test_fraction, data.split_seed)
    elif data.source == "csv":
        root = Path(data.path or "")
        test_file = next((root / n for n in CSV_TEST_FILES if (root / n).is_file()), None)
        features, labels, class_names = csv_table(
            test_file or root, data.label_column, data.feature_columns
        )
        test = list(range(len(labels)))
        if test_file is None:  # one CSV file, cut by the fractions like training cuts it
            test = test_split_indices(
                labels, data.val_fraction, data.test_fraction, data.split_seed
            )
    else:
        return []
    per_class = {
        name: [i for i in test if labels[i] == index] for index, name in enumerate(class_names)
    }
    return [
        ExampleRow(row_name(i), label, tuple(features[row]))
        for i, (label, row) in enumerate(round_robin(per_class, count))
    ]


def breast_cancer_table() -> tuple[list[list[float]], Any, tuple[str, ...]]:
    """scikit-learn's breast-cancer CSV, read the way cxml.ml.tabular reads it (sklearn itself
    is not imported: the file ships inside the package)."""
    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ValueError("scikit-learn is not installed")
    path = Path(spec.origin).parent / "datasets" / "data" / "breast_cancer.csv"
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, :-1].tolist(), table[:, -1].astype(np.int64), BREAST_CANCER_CLASSES


def csv_table(
    path: Path, label_column: str, feature_columns: Sequence[str]
) -> tuple[list[list[float]], Any, tuple[str, ...]]:
    """A CSV's feature rows, label indices and class names, as cxml.ml.tabular reads it (that
    module checks the file thoroughly when training; here a bad file only loses the examples)."""
    import numpy as np

    with path.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.reader(handle, strict=True) if any(c.strip() for c in row)]
    if not rows:
        raise ValueError(f"{path} is empty")
    header = [name.strip() for name in rows[0]]
    wanted = list(feature_columns) or [name for name in header if name != label_column]
    columns = [header.index(name) for name in wanted]  # ValueError when one is missing
    label_at = header.index(label_column)
    features = [[finite(row[column]) for column in columns] for row in rows[1:]]
    texts = [row[label_at].strip() for row in rows[1:]]
    class_names = class_order(texts)
    index = {name: i for i, name in enumerate(class_names)}
    return features, np.array([index[text] for text in texts], dtype=np.int64), class_names


def finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()!r} is not a finite number")
    return value


def class_order(labels: Sequence[str]) -> tuple[str, ...]:
    """The distinct labels, in numeric order when all are numbers, as cxml.ml.tabular orders
    the classes (`2` before `10`)."""
    distinct = set(labels)
    try:
        return tuple(sorted(distinct, key=float))
    except ValueError:
        return tuple(sorted(distinct))


def round_robin(per_class: Mapping[str, list[Any]], count: int) -> list[tuple[str, Any]]:
    """Up to `count` (class, item) pairs, the first of each class, then the second, ..."""
    chosen: list[tuple[str, Any]] = []
    depth = 0
    while len(chosen) < count and any(len(items) > depth for items in per_class.values()):
        for label, items in per_class.items():
            if len(items) > depth and len(chosen) < count:
                chosen.append((label, items[depth]))
        depth += 1
    return chosen
