"""Datasets: the digits example and image folders, with every bad input named by path."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cxml.core.config import DataConfig
from cxml.core.errors import DataError
from cxml.ml.data import load_dataset

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fish": (30, 30, 200)}


def make_image(path: Path, colour: tuple[int, int, int], size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def make_imagefolder(
    root: Path, splits: tuple[str, ...] = ("train", "val", "test"), per_class: int = 4
) -> Path:
    for split in splits:
        for name, colour in COLOURS.items():
            for i in range(per_class):
                make_image(root / split / name / f"{i}.png", colour)
    return root


def test_digits_split_is_deterministic_and_stratified() -> None:
    first = load_dataset(DataConfig())
    second = load_dataset(DataConfig())
    assert first.content_hash == second.content_hash
    assert (first.test.labels == second.test.labels).all()
    assert len(first.train) + len(first.val) + len(first.test) == 1797
    assert set(first.test.labels.tolist()) == set(range(10))
    assert first.train.images.dtype.is_floating_point is False
    assert first.input_size == (1, 8, 8)


def test_digits_resized() -> None:
    assert load_dataset(DataConfig(image_size=16)).input_size == (1, 16, 16)


@pytest.mark.parametrize(
    "names", [("train", "val", "test"), ("training", "validation", "evaluation")]
)
def test_imagefolder_split_names(tmp_path: Path, names: tuple[str, ...]) -> None:
    root = make_imagefolder(tmp_path / "data", names)
    data = load_dataset(DataConfig(source="imagefolder", path=str(root), image_size=8))
    assert data.class_names == ("cat", "dog", "fish")
    assert (len(data.train), len(data.val), len(data.test)) == (12, 12, 12)
    assert data.input_size == (3, 8, 8)
    # the pixels are the real decoded colours
    cat = data.train.images[data.train.labels == 0][0]
    assert cat[:, 0, 0].tolist() == [200, 30, 30]


def test_missing_val_split_is_carved_from_train(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data", ("train", "test"), per_class=10)
    data = load_dataset(
        DataConfig(source="imagefolder", path=str(root), image_size=8, val_fraction=0.2)
    )
    assert len(data.val) == 6 and len(data.train) == 24


def test_content_hash_follows_the_bytes(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data")
    cfg = DataConfig(source="imagefolder", path=str(root), image_size=8)
    before = load_dataset(cfg).content_hash
    make_image(root / "test" / "cat" / "0.png", (10, 10, 10))
    assert load_dataset(cfg).content_hash != before


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.path: .*nope is not a directory"):
        load_dataset(DataConfig(source="imagefolder", path=str(tmp_path / "nope")))


def test_missing_test_split(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data", ("train",))
    with pytest.raises(
        DataError, match="no test split folder; create test/ or evaluation/ or eval/"
    ):
        load_dataset(DataConfig(source="imagefolder", path=str(root)))


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data")
    (root / "train" / "zebra").mkdir()
    with pytest.raises(DataError, match=r"train/zebra: class folder has no images"):
        load_dataset(DataConfig(source="imagefolder", path=str(root)))


def test_class_missing_from_train(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data")
    make_image(root / "test" / "zebra" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"class 'zebra' is in the test split but not in train"):
        load_dataset(DataConfig(source="imagefolder", path=str(root)))


def test_corrupt_image_fails_by_path(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data")
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError) as caught:
        load_dataset(DataConfig(source="imagefolder", path=str(root)))
    message = str(caught.value)
    assert str(bad) in message and "data.on_bad_image: skip" in message


def test_corrupt_image_skipped_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_imagefolder(tmp_path / "data")
    (root / "train" / "dog" / "broken.png").write_bytes(b"garbage")
    truncated = root / "val" / "cat" / "cut.png"
    truncated.write_bytes((root / "val" / "cat" / "0.png").read_bytes()[:30])
    data = load_dataset(
        DataConfig(source="imagefolder", path=str(root), on_bad_image="skip", image_size=8)
    )
    assert len(data.train) == 12 and len(data.val) == 12
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image file(s)" in err and "broken.png" in err
    assert "cut.png" in err


def write_decompression_bomb(path: Path, side: int = 100_000) -> None:
    """A valid PNG header declaring side x side pixels (10 gigapixels) in under 100 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_skipped_like_any_bad_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_imagefolder(tmp_path / "data")
    write_decompression_bomb(root / "train" / "dog" / "bomb.png")
    data = load_dataset(
        DataConfig(source="imagefolder", path=str(root), on_bad_image="skip", image_size=8)
    )
    assert len(data.train) == 12
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image file(s)" in err and "bomb.png" in err


def test_a_decompression_bomb_fails_by_path_with_on_bad_image_fail(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data")
    bomb = root / "train" / "dog" / "bomb.png"
    write_decompression_bomb(bomb)
    with pytest.raises(DataError) as caught:
        load_dataset(DataConfig(source="imagefolder", path=str(root), image_size=8))
    assert str(bomb) in str(caught.value) and "over 50 megapixels" in str(caught.value)


@pytest.mark.parametrize("splits", [("train", "val", "test"), ("train", "test")])
def test_decoding_only_the_test_split_keeps_the_content_hash(
    tmp_path: Path, splits: tuple[str, ...]
) -> None:
    """Evaluate decodes only test; the hash (the model's data check) is the same as training's,
    unreadable files included."""
    root = make_imagefolder(tmp_path / "data", splits, per_class=5)
    (root / "train" / "dog" / "broken.png").write_bytes(b"garbage")
    cfg = DataConfig(source="imagefolder", path=str(root), image_size=8, on_bad_image="skip")
    full = load_dataset(cfg)
    test_only = load_dataset(cfg, decode=("test",))
    assert test_only.content_hash == full.content_hash
    assert (test_only.test.images == full.test.images).all()
    assert (test_only.test.labels == full.test.labels).all()
    assert len(test_only.train) == 0 and len(test_only.val) == 0
    assert test_only.class_names == full.class_names


def test_digits_match_scikit_learn_and_load_without_sklearn_datasets() -> None:
    import hashlib
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load_dataset(DataConfig(test_fraction=0.2))
    expected = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == len(bunch.target) and data.class_names == tuple(str(i) for i in range(10))
    test_rows = {row.tobytes() for row in data.test.images.reshape(len(data.test), -1).numpy()}
    assert test_rows <= {row.tobytes() for row in expected.reshape(len(expected), -1)}
    labels = bunch.target.astype(np.int64)
    digest = hashlib.sha256(expected.tobytes() + labels.tobytes()).hexdigest()[:16]
    assert data.content_hash == digest  # models trained before still match their data
    code = (
        "import sys; from cxml.core.config import DataConfig; from cxml.ml.data import load_dataset;"
        "load_dataset(DataConfig()); print('sklearn' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"
