"""Tabular data: CSV files and scikit-learn's breast-cancer example, read into float features.

A tabular split keeps its features as a float32 N,F,1,1 tensor, so it flows through the same
batches, checkpoints, latency timing and serving batcher as an image split (N,C,H,W). Its
standardisation statistics are stored in the model file's `mean` and `std` in the features' own
units, with `input_scale: 1.0`: the one normaliser of ml/pixels.py,
`(x / input_scale - mean) / std`, then computes `(x - feature_mean) / feature_std`, in
training, evaluation, the MLflow model and `cxml serve` alike.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxml.core.config import DataConfig, ModelConfig
from cxml.core.errors import DataError
from cxml.core.metrics import TABULAR_MARKER
from cxml.ml.pixels import FEATURE_INPUT_SCALE

if TYPE_CHECKING:
    import numpy as np
    import torch

    from cxml.ml.data import Dataset, Split
    from cxml.ml.models import ModelMetadata

MAX_CSV_BYTES = 512 * 1024 * 1024
"""A CSV is read whole into memory: refuse one larger than any table a CI runner trains on."""
MAX_CSV_FIELD = 1024 * 1024
"""A numeric cell is a few characters; a megabyte is already damage."""
MAX_FEATURES = 10_000
DEFAULT_HIDDEN_SIZES = (64, 32)
SPLIT_FILES = {
    "train": ("train.csv", "training.csv"),
    "val": ("val.csv", "validation.csv", "valid.csv"),
    "test": ("test.csv", "evaluation.csv", "eval.csv"),
}
BREAST_CANCER_FEATURES = tuple(
    f"mean {name}" if kind == "mean" else f"{name} error" if kind == "error" else f"worst {name}"
    for kind in ("mean", "error", "worst")
    for name in (
        "radius",
        "texture",
        "perimeter",
        "area",
        "smoothness",
        "compactness",
        "concavity",
        "concave points",
        "symmetry",
        "fractal dimension",
    )
)
"""scikit-learn's names: `mean radius`, ..., `radius error`, ..., `worst radius`, ..."""


@dataclass(frozen=True)
class Table:
    """One CSV's features (rows x columns) and label texts, with the file's digest."""

    features: np.ndarray
    labels: list[str]
    feature_names: tuple[str, ...]
    digest: str


# --- reading CSV files ---------------------------------------------------------------------------


def read_table(path: Path, label_column: str, feature_columns: Sequence[str]) -> Table:
    """A CSV with a header row -> float features and labels; every bad cell names file/row/column."""
    import numpy as np

    rows = csv_rows(path)
    if not rows:
        raise DataError(f"{path}: the file is empty; give a CSV with a header row and data rows")
    header = [name.strip() for name in rows[0][1]]
    if label_column not in header:
        raise DataError(
            f"{path}: no label column {label_column!r} in the header ({shorten(header)}); "
            "set data.label_column to the column that holds the classes"
        )
    if len(set(header)) != len(header):
        twice = next(name for name in header if header.count(name) > 1)
        raise DataError(f"{path}: column {twice!r} appears twice in the header; rename one")
    wanted = list(feature_columns) or [name for name in header if name != label_column]
    missing = [name for name in wanted if name not in header]
    if missing:
        raise DataError(
            f"{path}: feature column {missing[0]!r} (data.feature_columns) is not in the header "
            f"({shorten(header)}); fix data.feature_columns"
        )
    if label_column in wanted:
        raise DataError(
            f"{path}: the label column {label_column!r} is also in data.feature_columns; remove it"
        )
    if not wanted:
        raise DataError(f"{path}: no feature columns besides {label_column!r}; add features")
    if len(wanted) > MAX_FEATURES:
        raise DataError(f"{path}: {len(wanted)} feature columns, over {MAX_FEATURES}")
    data_rows = rows[1:]
    if not data_rows:
        raise DataError(f"{path}: only a header, no data rows; add rows")
    columns = [header.index(name) for name in wanted]
    label_at = header.index(label_column)
    features = np.empty((len(data_rows), len(wanted)), dtype=np.float32)
    labels: list[str] = []
    for position_in_table, (number, row) in enumerate(data_rows):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {number} has {len(row)} cells, the header {len(header)}; fix the row"
            )
        label = row[label_at].strip()
        if not label:
            raise DataError(f"{path}: row {number}, column {label_column!r}: empty label; fill it")
        labels.append(label)
        for position, (column, name) in enumerate(zip(columns, wanted, strict=True)):
            features[position_in_table, position] = parse_cell(row[column], path, number, name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Table(features, labels, tuple(wanted), digest)


def csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The rows of a bounded, UTF-8 CSV file; a malformed one is a DataError naming the line."""
    from cxml.core import files

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check data.path") from None
    if size > MAX_CSV_BYTES:
        raise DataError(f"{path}: {size} bytes, over the limit of {MAX_CSV_BYTES}; sample it")
    text = files.read_utf8(path, fix="fix the file", error=DataError)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(len(cell) > MAX_CSV_FIELD for cell in row):
                raise DataError(
                    f"{path}: line {reader.line_num}: a cell over {MAX_CSV_FIELD} bytes"
                )
            if row and any(cell.strip() for cell in row):  # blank lines are skipped
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(
            f"{path}: line {reader.line_num}: not valid CSV ({exc}); fix the file"
        ) from None
    return rows


def parse_cell(text: str, path: Path, row: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(
            f"{path}: row {row}, column {column!r}: {text.strip()[:40]!r} is not a finite number; "
            "fix the cell or leave the column out of data.feature_columns"
        )
    return value


def shorten(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} columns)" if len(names) > limit else "")


# --- the datasets --------------------------------------------------------------------------------


def load_tabular(cfg: DataConfig) -> Dataset:
    """`data.source: csv` (one CSV split by params, or a folder of train/val/test CSVs) or the
    built-in `breast_cancer` example."""
    if cfg.source == "breast_cancer":
        return load_breast_cancer(cfg)
    return load_csv(cfg)


def load_breast_cancer(cfg: DataConfig) -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table (569 rows, 30 features, shipped inside
    scikit-learn: nothing is downloaded, and `sklearn.datasets` is not imported)."""
    import numpy as np

    path = sklearn_data_file("breast_cancer.csv")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    features = table[:, :-1].astype(np.float32)
    labels = table[:, -1].astype(np.int64)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return split_dataset(
        features,
        labels,
        ("malignant", "benign"),
        BREAST_CANCER_FEATURES,
        cfg,
        digest,
        f"scikit-learn breast cancer ({len(labels)} rows, 30 features, 2 classes)",
    )


def sklearn_data_file(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / name if spec and spec.origin else None
    if path is None or not path.is_file():
        raise DataError(
            f"scikit-learn's {name} is missing; install scikit-learn "
            "(pip install 'cxml[train]') or use data.source: csv"
        )
    return path


def load_csv(cfg: DataConfig) -> Dataset:

    root = Path(cfg.path or "")
    if root.is_file():
        table = read_table(root, cfg.label_column, cfg.feature_columns)
        class_names = class_names_of(table.labels)
        labels = label_indices(table.labels, class_names, root)
        return split_dataset(
            table.features,
            labels,
            class_names,
            table.feature_names,
            cfg,
            table.digest[:16],
            f"CSV {root} ({len(labels)} rows, {len(table.feature_names)} features, "
            f"{len(class_names)} classes)",
        )
    if not root.is_dir():
        raise DataError(
            f"data.path: {root} is neither a CSV file nor a folder; give a CSV file or a folder "
            "with train.csv and test.csv (and optionally val.csv)"
        )
    found = {split: find_split_file(root, split) for split in SPLIT_FILES}
    for required in ("train", "test"):
        if found[required] is None:
            raise DataError(
                f"{root}: no {' or '.join(SPLIT_FILES[required])}; add it (data.path is a folder "
                "of split CSVs) or point data.path at one CSV file"
            )
    tables = {
        split: read_table(path, cfg.label_column, cfg.feature_columns)
        for split, path in found.items()
        if path is not None
    }
    names = tables["train"].feature_names
    for split, table in tables.items():
        if table.feature_names != names:
            raise DataError(
                f"{found[split]}: its feature columns differ from {found['train']}'s; "
                "give every split the same columns (or name them in data.feature_columns)"
            )
    class_names = class_names_of(tables["train"].labels)
    indexed = {
        split: label_indices(table.labels, class_names, found[split] or root)
        for split, table in tables.items()
    }
    digest = hashlib.sha256("".join(t.digest for t in tables.values()).encode()).hexdigest()
    if "val" not in tables:
        train_idx, val_idx, _ = stratified_indices(indexed["train"], cfg.val_fraction, 0.0, cfg)
        tables["val"] = subset(tables["train"], val_idx)
        indexed["val"] = indexed["train"][val_idx]
        tables["train"] = subset(tables["train"], train_idx)
        indexed["train"] = indexed["train"][train_idx]
    n_rows = sum(len(indexed[s]) for s in indexed)
    return tabular_dataset(
        {split: (tables[split].features, indexed[split]) for split in ("train", "val", "test")},
        class_names,
        names,
        digest[:16],
        f"CSV folder {root} ({n_rows} rows, {len(names)} features, {len(class_names)} classes)",
    )


def find_split_file(root: Path, split: str) -> Path | None:
    return next((root / n for n in SPLIT_FILES[split] if (root / n).is_file()), None)


def class_names_of(labels: Sequence[str]) -> tuple[str, ...]:
    """The distinct labels, in numeric order when all are numbers (`2` before `10`)."""
    distinct = set(labels)
    try:
        return tuple(sorted(distinct, key=float))
    except ValueError:
        return tuple(sorted(distinct))


def label_indices(labels: Sequence[str], class_names: Sequence[str], path: Path) -> np.ndarray:
    import numpy as np

    index = {name: i for i, name in enumerate(class_names)}
    unknown = next((label for label in labels if label not in index), None)
    if unknown is not None:
        raise DataError(
            f"{path}: class {unknown!r} is not in the training data; "
            "add training rows for it or remove its rows"
        )
    return np.array([index[label] for label in labels], dtype=np.int64)


def subset(table: Table, index: np.ndarray) -> Table:
    return Table(table.features[index], [], table.feature_names, table.digest)


def stratified_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from cxml.ml.data import stratified_split

    parts = stratified_split(labels, val_fraction, test_fraction, cfg.split_seed)
    return parts[0].numpy(), parts[1].numpy(), parts[2].numpy()


def split_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    feature_names: tuple[str, ...],
    cfg: DataConfig,
    digest: str,
    description: str,
) -> Dataset:
    """One table cut into train/val/test by data.val_fraction and data.test_fraction."""
    if len(class_names) < 2:
        raise DataError(f"{description}: only one class; a classifier needs at least two")
    train, val, test = stratified_indices(labels, cfg.val_fraction, cfg.test_fraction, cfg)
    return tabular_dataset(
        {
            "train": (features[train], labels[train]),
            "val": (features[val], labels[val]),
            "test": (features[test], labels[test]),
        },
        class_names,
        feature_names,
        digest[:16],
        description,
    )


def tabular_dataset(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: tuple[str, ...],
    feature_names: tuple[str, ...],
    digest: str,
    description: str,
) -> Dataset:
    from cxml.ml.data import Dataset

    built = {name: to_split(*arrays) for name, arrays in splits.items()}
    if len(built["train"]) == 0:
        raise DataError(f"{description}: no training rows left after the split; add rows")
    return Dataset(
        train=built["train"],
        val=built["val"],
        test=built["test"],
        class_names=class_names,
        content_hash=digest,
        description=description,
        feature_names=feature_names,
    )


def to_split(features: np.ndarray, labels: np.ndarray) -> Split:
    """Rows x features -> the N,F,1,1 float32 features and int64 labels of a split."""
    import numpy as np
    import torch

    from cxml.ml.data import Split

    tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    return Split(tensor.view(-1, tensor.shape[1], 1, 1), torch.from_numpy(labels.astype(np.int64)))


# --- standardisation and the model file ----------------------------------------------------------


def feature_stats(features: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std of the training rows, in the features' own units (the model
    file's `input_scale` is 1); a constant feature gets std 1 (it is only centred)."""
    import torch

    values = features.double().flatten(1)
    mean = values.mean(dim=0)
    std = values.std(dim=0) if values.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def metadata_fields(model: ModelConfig, data: Dataset) -> dict[str, Any]:
    """The model file's tabular metadata (feature names, training min/max, MLP widths, and
    `input_scale` 1: features are standardised as they are); {} for image models."""
    if not data.feature_names:
        return {}
    rows = data.train.images.double().flatten(1)
    return {
        "feature_names": tuple(data.feature_names),
        "feature_min": tuple(round(float(v), 6) for v in rows.min(dim=0).values),
        "feature_max": tuple(round(float(v), 6) for v in rows.max(dim=0).values),
        "hidden_sizes": tuple(model.hidden_sizes),
        "input_scale": FEATURE_INPUT_SCALE,
    }


def check_features_match(metadata: ModelMetadata, feature_names: Sequence[str]) -> None:
    """The data's columns must be the model's inputs, in order (evaluating other columns would
    fail in the model, or worse, answer about the wrong features)."""
    if tuple(feature_names) == tuple(metadata.feature_names):
        return
    if not metadata.feature_names or not feature_names:
        kind = "a tabular" if metadata.feature_names else "an image"
        raise DataError(
            f"the model is {kind} model and the data is not; evaluate with the params the "
            "model was trained with"
        )
    raise DataError(
        f"the data's feature columns ({shorten(list(feature_names))}) are not the model's "
        f"({shorten(list(metadata.feature_names))}); evaluate with the data.feature_columns "
        "the model was trained with"
    )


def feature_means(mean: Sequence[float], input_scale: float) -> list[float]:
    """The model file's means in the features' own units (a model file written before
    `input_scale` existed stored them divided by 255, and reads as `input_scale` 255)."""
    return [round(v * input_scale, 6) for v in mean]


# --- metrics beyond accuracy ---------------------------------------------------------------------


def input_metrics(metadata: ModelMetadata) -> dict[str, int]:
    """`num_features` for a tabular model ({} for an image model): the report and the gate then
    count its test examples as rows, not images (core/metrics.py)."""
    return {TABULAR_MARKER: len(metadata.feature_names)} if metadata.feature_names else {}


def binary_metrics(
    model: torch.nn.Module,
    split: Split,
    metadata: ModelMetadata,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, float]:
    """`roc_auc` of a two-class model on `split` (class 1 as positive); {} otherwise."""
    import torch

    from cxml.ml.models import preprocess

    labels = split.labels.tolist()
    if metadata.num_classes != 2 or len(set(labels)) != 2:
        return {}
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            inputs = split.images[start : start + batch_size].to(device)
            logits = model(preprocess(inputs, metadata)).float()
            scores += torch.softmax(logits, dim=1)[:, 1].cpu().tolist()
    return {"roc_auc": round(roc_auc(labels, scores), 6)}


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative
    (ties count half), the Mann-Whitney statistic scikit-learn's `roc_auc_score` computes."""
    ranked = sorted(zip(scores, labels, strict=True))
    positives = sum(1 for label in labels if label == 1)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = 0.0
    position = 0
    while position < len(ranked):
        end = position
        while end < len(ranked) and ranked[end][0] == ranked[position][0]:
            end += 1
        average_rank = (position + 1 + end) / 2  # ranks are 1-based; ties share the average
        rank_sum += average_rank * sum(1 for _, label in ranked[position:end] if label == 1)
        position = end
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
