"""Datasets: the built-in digits example and image folders, decoded once into uint8 tensors."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cxml.core import console
from cxml.core.config import DIGITS_SIZE, IMAGEFOLDER_DEFAULT_SIZE, TABULAR_SOURCES, DataConfig
from cxml.core.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import torch

IMAGE_EXTENSIONS = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
}
SPLIT_NAMES = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid"),
    "test": ("test", "evaluation", "eval"),
}
BAD_IMAGES_LISTED = 5


@dataclass(frozen=True)
class Split:
    images: torch.Tensor
    """uint8, N x C x H x W."""
    labels: torch.Tensor
    """int64, N."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    content_hash: str
    description: str
    feature_names: tuple[str, ...] = ()
    """A tabular dataset's columns (its splits hold float N,F,1,1 features, ml/tabular.py)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int, int]:
        _, c, h, w = self.train.images.shape
        return (int(c), int(h), int(w))

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training pixels scaled to 0..1 (for normalisation)."""
        if self.feature_names:
            from cxml.ml.tabular import feature_stats

            return feature_stats(self.train.images)
        pixels = self.train.images.float().div_(255.0)
        mean = pixels.mean(dim=(0, 2, 3))
        std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


ALL_SPLITS = ("train", "val", "test")


def load_dataset(cfg: DataConfig, decode: Sequence[str] = ALL_SPLITS) -> Dataset:
    """The dataset; only the splits in `decode` are decoded (evaluate needs only `test`), the
    others are empty but still count in `content_hash`, which is the same either way."""
    if cfg.source == "digits":
        return load_digits(cfg)
    if cfg.source in TABULAR_SOURCES:
        from cxml.ml.tabular import load_tabular

        return load_tabular(cfg)
    return load_imagefolder(cfg, decode)


# --- the built-in example -------------------------------------------------------------------


def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (they ship inside scikit-learn: nothing is downloaded)."""
    import numpy as np
    import torch

    table = np.loadtxt(digits_file(), delimiter=",")
    images = np.clip(np.rint(table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)), 0, 255)
    images = images.astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    tensor = torch.from_numpy(images).unsqueeze(1)
    size = cfg.image_size or DIGITS_SIZE
    if size != DIGITS_SIZE:
        tensor = resize_uint8(tensor, size)
    train_idx, val_idx, test_idx = stratified_split(
        labels, cfg.val_fraction, cfg.test_fraction, cfg.split_seed
    )
    label_tensor = torch.from_numpy(labels)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return Dataset(
        train=Split(tensor[train_idx], label_tensor[train_idx]),
        val=Split(tensor[val_idx], label_tensor[val_idx]),
        test=Split(tensor[test_idx], label_tensor[test_idx]),
        class_names=tuple(str(name) for name in range(10)),
        content_hash=digest,
        description=f"scikit-learn digits ({len(labels)} images, 10 classes, {size}x{size} grey)",
    )


def digits_file() -> Path:
    """scikit-learn's `datasets/data/digits.csv.gz` (64 pixels 0..16 and the label per row),
    found without importing scikit-learn: `sklearn.datasets` alone takes about a second."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = (
        Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if spec and spec.origin
        else None
    )
    if path is None or not path.is_file():
        raise DataError(
            "data.source digits: scikit-learn's digits file is missing; "
            "install scikit-learn (pip install 'cxml[train]') or use data.source: imagefolder"
        )
    return path


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic per-class shuffle and cut, so every split sees every class."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        n_test = max(1, round(len(members) * test_fraction)) if test_fraction > 0 else 0
        n_val = max(1, round(len(members) * val_fraction)) if val_fraction > 0 else 0
        test.append(members[:n_test])
        val.append(members[n_test : n_test + n_val])
        train.append(members[n_test + n_val :])
    return tuple(torch.from_numpy(np.sort(np.concatenate(part))) for part in (train, val, test))  # type: ignore[return-value]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    import torch.nn.functional as F

    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.round().clamp(0, 255).to(images.dtype)


# --- image folders --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFile:
    path: Path
    label: int


def find_split_dirs(root: Path) -> dict[str, Path | None]:
    """`train/val/test` or food-11's `training/validation/evaluation`; val may be absent."""
    found: dict[str, Path | None] = {}
    for split, names in SPLIT_NAMES.items():
        found[split] = next((root / n for n in names if (root / n).is_dir()), None)
    return found


def class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(class_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def list_split(split_dir: Path, class_names: Sequence[str], split: str) -> list[ImageFile]:
    index = {name: i for i, name in enumerate(class_names)}
    files: list[ImageFile] = []
    for class_dir in class_dirs(split_dir):
        if class_dir.name not in index:
            raise DataError(
                f"{class_dir}: class {class_dir.name!r} is in the {split} split but not in train; "
                "add training images for it or remove the folder"
            )
        files += [ImageFile(p, index[class_dir.name]) for p in image_files(class_dir)]
    if not files:
        raise DataError(
            f"{split_dir}: the {split} split has no images; add images in one folder per class"
        )
    return files


def load_imagefolder(cfg: DataConfig, decode: Sequence[str] = ALL_SPLITS) -> Dataset:
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise DataError(
            f"data.path: {root} is not a directory; point it at a folder with train/ and test/ split folders"
        )
    splits = find_split_dirs(root)
    for required in ("train", "test"):
        if splits[required] is None:
            names = " or ".join(f"{n}/" for n in SPLIT_NAMES[required])
            raise DataError(
                f"{root}: no {required} split folder; create {names} with one sub-folder per class"
            )
    train_dir = splits["train"]
    assert train_dir is not None
    class_names = tuple(d.name for d in class_dirs(train_dir))
    if not class_names:
        raise DataError(
            f"{train_dir}: no class folders; put the images of each class in train/<class>/"
        )
    for class_dir in class_dirs(train_dir):
        if not image_files(class_dir):
            raise DataError(
                f"{class_dir}: class folder has no images; add images or remove the folder"
            )

    listed = {
        split: list_split(d, class_names, split) for split, d in splits.items() if d is not None
    }
    size = cfg.image_size or IMAGEFOLDER_DEFAULT_SIZE
    decoded = {
        split: decode_files(files, size, cfg.on_bad_image)
        if split in decode
        else hash_files(files, size)
        for split, files in listed.items()
    }

    if "val" not in decoded and "train" not in decode:
        decoded["val"] = decoded["train"]  # the part of train that is val: not decoded either
    elif "val" not in decoded:
        images, labels, hashes = decoded["train"]
        train_idx, val_idx, _ = stratified_split(
            labels.numpy(), cfg.val_fraction, 0.0, cfg.split_seed
        )
        decoded["val"] = (images[val_idx], labels[val_idx], hashes)
        decoded["train"] = (images[train_idx], labels[train_idx], hashes)

    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for line in sorted(decoded[split][2]):
            digest.update(line.encode())
    n_images = sum(len(decoded[s][1]) for s in ("train", "val", "test"))
    return Dataset(
        train=Split(decoded["train"][0], decoded["train"][1]),
        val=Split(decoded["val"][0], decoded["val"][1]),
        test=Split(decoded["test"][0], decoded["test"][1]),
        class_names=class_names,
        content_hash=digest.hexdigest()[:16],
        description=f"image folder {root} ({n_images} images, {len(class_names)} classes, {size}x{size} RGB)",
    )


def decode_files(
    files: Sequence[ImageFile], size: int, on_bad_image: str
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every file once (threads), checking each; bad files fail or are skipped by path."""
    import torch

    with ThreadPoolExecutor() as pool:
        results = list(pool.map(lambda f: decode_one(f.path, size), files))
    bad = [str(f.path) for f, (array, _) in zip(files, results, strict=True) if array is None]
    if bad:
        listed = ", ".join(bad[:BAD_IMAGES_LISTED]) + (
            f" and {len(bad) - BAD_IMAGES_LISTED} more" if len(bad) > BAD_IMAGES_LISTED else ""
        )
        if on_bad_image == "fail":
            raise DataError(
                f"{len(bad)} unreadable image file(s): {listed} ({WHY_UNREADABLE}); "
                "remove or replace them, or set data.on_bad_image: skip"
            )
        console.warn(f"skipped {len(bad)} unreadable image file(s): {listed} ({WHY_UNREADABLE})")
    kept = [(f, r) for f, r in zip(files, results, strict=True) if r[0] is not None]
    if not kept:
        raise DataError("no readable images left after skipping bad files; check the dataset")
    images = torch.stack([torch.from_numpy(r[0]) for _, r in kept]).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([f.label for f, _ in kept], dtype=torch.int64)
    # Every listed file counts in the hash, readable or not, as in a split that is only hashed.
    hashes = [
        hash_line(f, r[1] or file_digest(f.path)) for f, r in zip(files, results, strict=True)
    ]
    return images, labels, hashes


def hash_files(
    files: Sequence[ImageFile], size: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A split that is not decoded: no images, its files' hashes (read, not decoded)."""
    import torch

    with ThreadPoolExecutor() as pool:
        digests = list(pool.map(lambda f: file_digest(f.path), files))
    hashes = [hash_line(f, digest) for f, digest in zip(files, digests, strict=True)]
    empty = torch.empty((0, 3, size, size), dtype=torch.uint8)
    return empty, torch.empty((0,), dtype=torch.int64), hashes


def hash_line(file: ImageFile, digest: str) -> str:
    return f"{file.path.parent.name}/{file.path.name}:{digest}"


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


MAX_IMAGE_PIXELS = 50_000_000
"""Larger images are refused before decoding: one would take ~150 MB per decoding thread, and a
decompression bomb declares billions of pixels in a few bytes."""
WHY_UNREADABLE = f"damaged, not images, or over {MAX_IMAGE_PIXELS // 1_000_000} megapixels"


def decode_one(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    """(H x W x 3 uint8 array, sha256 of the file) or (None, "") when the file is not an image."""
    from io import BytesIO

    import numpy as np
    from PIL import Image

    try:
        data = path.read_bytes()
        with Image.open(BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return None, ""
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            array = np.array(rgb, dtype=np.uint8)
    except Exception:
        # Crafted files make Pillow raise almost anything (DecompressionBombError, struct.error,
        # IndexError, ...): all mean "not a usable image", which data.on_bad_image decides about.
        return None, ""
    return array, hashlib.sha256(data).hexdigest()
